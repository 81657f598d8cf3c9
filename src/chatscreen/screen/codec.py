"""Picture encoding and decoding, and the canvas a viewer draws received rectangles on.

JPEG goes through simplejpeg (libjpeg-turbo), which encodes straight from mss's BGRA buffer
with no colour conversion: see docs/benchmarks.md for the comparison with OpenCV.

Lossless encodings (docs/protocol.md has their exact format): ``palette`` (up to 256 colours,
zlib-compressed indices: text and UI), ``packed`` (the same for small rects: indices packed
at 1, 2, 4 or 8 bits, stored or zlib-compressed, a solid fill in 4 bytes), ``zlib``
(zlib-compressed RGB), ``png`` and ``webp`` (lossless WebP for many-colour regions that
must end pixel-exact), and ``raw``. ``copy`` carries no picture: it copies pixels the canvas
already has (a scroll), see :class:`Canvas`.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image as PILImage

from chatscreen.screen.pictures import BGRA as BGRA
from chatscreen.screen.pictures import RGB as RGB
from chatscreen.screen.pictures import DecodeError as DecodeError
from chatscreen.screen.scroll import copy_rows

DEFAULT_QUALITY = 80
DEFAULT_SUBSAMPLING = "444"  # keeps coloured text legible; 420 costs less bandwidth


def encode_jpeg(img: BGRA, quality: int = DEFAULT_QUALITY,
                subsampling: str = DEFAULT_SUBSAMPLING) -> bytes:
    arr = np.ascontiguousarray(img)
    data: bytes = simplejpeg.encode_jpeg(arr, quality=quality, colorspace="BGRA",
                                         colorsubsampling=subsampling)
    return data


def decode_jpeg(data: bytes) -> RGB:
    try:
        img: RGB = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError as exc:
        raise DecodeError(f"bad JPEG data: {exc}") from None
    return img


def encode_png(img: BGRA) -> bytes:
    out = io.BytesIO()
    to_pil(img).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def decode_png(data: bytes, size: tuple[int, int] | None = None) -> RGB:
    return _decode_pil(data, "PNG", size)


def _decode_pil(data: bytes, fmt: str, size: tuple[int, int] | None) -> RGB:
    """Decode a PNG or WebP; with ``size``, refuse another size before decoding pixels."""
    try:
        with PILImage.open(io.BytesIO(data), formats=[fmt]) as im:
            if im.format != fmt:
                raise DecodeError(f"not a {fmt}")
            if size is not None and im.size != size:
                raise DecodeError(f"rect says {size[0]}x{size[1]} but its picture is "
                                  f"{im.size[0]}x{im.size[1]}")
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"bad {fmt} data: {exc}") from None


PALETTE_MAX = 256
PALETTE_SAMPLE = 8  # encode_palette first counts the colours of every 8th pixel


def rgb_of(img: BGRA) -> RGB:
    """BGRA (or BGRX) to a contiguous RGB array."""
    return np.ascontiguousarray(img[..., 2::-1])


def encode_zlib(img: BGRA, level: int = 1) -> bytes:
    return zlib.compress(rgb_of(img).tobytes(), level)


def _inflate(data: bytes, size: int, what: str) -> bytes:
    """Decompress a zlib stream that must hold exactly ``size`` bytes (bounded: a small
    stream cannot expand into more than ``size`` bytes of memory)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, size)
    except zlib.error as exc:
        raise DecodeError(f"bad {what} data: {exc}") from None
    if len(out) != size or not d.eof or d.unconsumed_tail or d.unused_data:
        raise DecodeError(f"{what} data does not hold exactly {size} bytes")
    return out


def decode_zlib(data: bytes, w: int, h: int) -> RGB:
    return np.frombuffer(_inflate(data, w * h * 3, "zlib"), np.uint8).reshape(h, w, 3)


def distinct(px: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """The distinct values of ``px``, sorted: ``np.unique`` by a sort. numpy 2.3+'s
    ``np.unique`` hashes integers instead, here 8x slower for a tile of text (34 against
    4 us for 64x64 pixels of 4 colours) and 25x for a photographic one."""
    s = np.sort(px)
    if s.size < 2:
        return s
    keep = np.empty(s.size, np.bool_)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    out: npt.NDArray[np.uint32] = s[keep]
    return out


def encode_palette(img: BGRA, level: int = 6) -> bytes | None:
    """``u8 n-1``, ``n`` RGB triplets, zlib(one index byte per pixel); None if the picture
    has more than 256 colours."""
    px = np.ascontiguousarray(img).view(np.uint32).reshape(-1) | np.uint32(0xFF000000)
    # a region of too many colours usually shows it in a sample (a line of anti-aliased
    # text across the screen: ~0.1 ms instead of ~0.7 ms to find out)
    if len(px) >= PALETTE_SAMPLE * 4 and len(distinct(px[::PALETTE_SAMPLE])) > PALETTE_MAX:
        return None
    colours = distinct(px)  # a sort, then a binary search per pixel: 2.5x faster than
    if len(colours) > PALETTE_MAX:  # unique(return_inverse=True), which argsorts
        return None
    index = np.searchsorted(colours, px)
    pal = colours.view(np.uint8).reshape(-1, 4)[:, 2::-1]  # BGRA words -> RGB
    head = struct.pack("B", len(colours) - 1) + np.ascontiguousarray(pal).tobytes()
    return head + zlib.compress(index.astype(np.uint8).tobytes(), level)


def decode_palette(data: bytes, w: int, h: int) -> RGB:
    if not data:
        raise DecodeError("empty palette data")
    n = data[0] + 1
    if len(data) < 1 + 3 * n:
        raise DecodeError("palette data shorter than its palette")
    pal = np.frombuffer(data, np.uint8, 3 * n, 1).reshape(n, 3)
    index = np.frombuffer(_inflate(data[1 + 3 * n :], w * h, "palette"), np.uint8)
    if int(index.max(initial=0)) >= n:
        raise DecodeError("palette index out of range")
    return pal[index].reshape(h, w, 3)


PACKED_STORED, PACKED_ZLIB = 0, 1  # a ``packed`` rect's index bytes: as they are, or zlib


def packed_bits(n: int) -> int:
    """Bits per pixel of a ``packed`` rect of ``n`` colours: 1, 2, 4 or 8."""
    return 1 if n <= 2 else 2 if n <= 4 else 4 if n <= 16 else 8


@functools.cache
def _shifts(bits: int) -> npt.NDArray[np.uint8]:
    """Per pixel of a byte, MSB first, how far its index is shifted (read only: shared)."""
    k = 8 // bits
    out = (8 - bits * (np.arange(k) + 1)).astype(np.uint8)
    out.setflags(write=False)
    return out


def encode_packed(img: BGRA, level: int = 6) -> bytes | None:
    """``u8 n-1``, ``n`` RGB triplets, then (``n`` > 1) ``u8`` 0 and the index bytes or
    ``u8`` 1 and a zlib stream of them, whichever is shorter: indices at
    :func:`packed_bits` bits, MSB first, each row starting on a byte boundary (zero bits
    after its last pixel). None if the picture has more than 256 colours."""
    h, w = img.shape[:2]
    px = np.ascontiguousarray(img).view(np.uint32).reshape(-1) | np.uint32(0xFF000000)
    colours = distinct(px)
    n = len(colours)
    if n > PALETTE_MAX:
        return None
    pal = colours.view(np.uint8).reshape(-1, 4)[:, 2::-1]  # BGRA words -> RGB
    head = struct.pack("B", n - 1) + np.ascontiguousarray(pal).tobytes()
    if n == 1:
        return head  # a solid fill
    index = np.searchsorted(colours, px).astype(np.uint8).reshape(h, w)
    bits = packed_bits(n)
    if bits < 8:
        k = 8 // bits
        if w % k:  # (np.pad: ~10 times the time of these two calls)
            wide = np.zeros((h, w + k - w % k), np.uint8)
            wide[:, :w] = index
            index = wide
        groups = index.reshape(h, -1, k) << _shifts(bits)
        index = np.bitwise_or.reduce(groups, axis=2).astype(np.uint8)
    raw = index.tobytes()
    packed = zlib.compress(raw, level)
    if len(packed) < len(raw):
        return head + bytes((PACKED_ZLIB,)) + packed
    return head + bytes((PACKED_STORED,)) + raw


def decode_packed(data: bytes, w: int, h: int) -> RGB:
    """Strict: exact sizes, indices below ``n``, zero padding bits, no trailing bytes."""
    if not data:
        raise DecodeError("empty packed data")
    n = data[0] + 1
    head = 1 + 3 * n
    if len(data) < head:
        raise DecodeError("packed data shorter than its palette")
    pal = np.frombuffer(data, np.uint8, 3 * n, 1).reshape(n, 3)
    if n == 1:
        if len(data) != head:
            raise DecodeError("a solid packed rect has bytes after its colour")
        out: RGB = np.empty((h, w, 3), np.uint8)
        out[:] = pal[0]
        return out
    if len(data) == head:
        raise DecodeError("packed data has no index bytes")
    bits = packed_bits(n)
    row = -(-w * bits // 8)
    mode, body = data[head], data[head + 1 :]
    if mode == PACKED_STORED:
        if len(body) != row * h:
            raise DecodeError(f"packed data holds {len(body)} index bytes, not {row * h}")
        raw = body
    elif mode == PACKED_ZLIB:
        raw = _inflate(body, row * h, "packed")
    else:
        raise DecodeError(f"packed data of unknown kind {mode}")
    index = np.frombuffer(raw, np.uint8).reshape(h, row)
    if bits < 8:
        index = ((index[:, :, None] >> _shifts(bits)) & np.uint8((1 << bits) - 1)).reshape(h, -1)
        if index[:, w:].any():
            raise DecodeError("packed rows have non-zero bits after their last pixel")
        index = index[:, :w]
    if int(index.max(initial=0)) >= n:
        raise DecodeError("packed index out of range")
    return pal[index]


def encode_webp(img: BGRA, lossless: bool = True, quality: int = DEFAULT_QUALITY) -> bytes:
    out = io.BytesIO()
    if lossless:  # method 0 with quality 0: the fastest lossless effort, still compact
        to_pil(img).save(out, format="WEBP", lossless=True, method=0, quality=0, exact=True)
    else:
        to_pil(img).save(out, format="WEBP", quality=quality, method=0)
    return out.getvalue()


def decode_webp(data: bytes, size: tuple[int, int] | None = None) -> RGB:
    return _decode_pil(data, "WEBP", size)


def to_pil(img: BGRA) -> PILImage.Image:
    h, w = img.shape[:2]
    return PILImage.frombuffer("RGB", (w, h), np.ascontiguousarray(img).tobytes(), "raw",
                               "BGRX", 0, 1)


def fit_within(img: BGRA, max_w: int | None, max_h: int | None) -> BGRA:
    """Scale down, keeping the aspect ratio, so that the picture fits max_w x max_h."""
    h, w = img.shape[:2]
    scale = min((max_w or w) / w, (max_h or h) / h, 1.0)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = to_pil(img).resize(size, PILImage.Resampling.BILINEAR)
    out = np.empty((size[1], size[0], 4), np.uint8)
    out[..., :3] = np.asarray(small)[..., ::-1]
    out[..., 3] = 255
    return out


def decode_rect(enc: str, data: bytes, w: int, h: int) -> RGB:
    if enc == "jpeg":
        img = decode_jpeg(data)
    elif enc == "png":
        img = decode_png(data, (w, h))
    elif enc == "palette":
        img = decode_palette(data, w, h)
    elif enc == "packed":
        img = decode_packed(data, w, h)
    elif enc == "zlib":
        img = decode_zlib(data, w, h)
    elif enc == "webp":
        img = decode_webp(data, (w, h))
    elif enc == "raw":
        if len(data) != w * h * 3:
            raise DecodeError(f"raw rect of {w}x{h} needs {w * h * 3} bytes, got {len(data)}")
        img = np.frombuffer(data, np.uint8).reshape(h, w, 3)
    elif enc == "h264":
        raise DecodeError("h264 rects need their stream's decoder: use a Canvas")
    elif enc == "copy":
        raise DecodeError("a copy rect has no picture of its own: apply it on a canvas")
    else:
        raise DecodeError(f"unknown encoding {enc!r}")
    if img.shape[:2] != (h, w):
        raise DecodeError(f"rect says {w}x{h} but its picture is {img.shape[1]}x{img.shape[0]}")
    return img


COPY = struct.Struct(">II")  # a copy rect's data: the source's x, y


def copy_source(data: bytes, w: int, h: int, size: tuple[int, int]) -> tuple[int, int]:
    """The top left of a ``copy`` rect's source, checked to lie inside a ``size`` screen."""
    if len(data) != COPY.size:
        raise DecodeError(f"copy data is {COPY.size} bytes, got {len(data)}")
    sx, sy = COPY.unpack(data)
    if sx + w > size[0] or sy + h > size[1]:
        raise DecodeError(f"copy source {sx},{sy} {w}x{h} lies outside {size[0]}x{size[1]}")
    return sx, sy


class Canvas:
    """A viewer's copy of a shared screen, updated rectangle by rectangle."""

    def __init__(self, w: int, h: int) -> None:
        self.pixels: RGB = np.zeros((h, w, 3), np.uint8)
        self.complete = False  # True once a key frame has been applied
        self.video: Any = None  # chatscreen.screen.video.VideoStreams, made at the first h264 rect

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]

    def apply(self, w: int, h: int, key: bool,
              rects: list[tuple[int, int, int, int, str, bytes]]) -> None:
        if (w, h) != self.size:
            self.pixels = np.zeros((h, w, 3), np.uint8)
            self.complete = False
            self.video = None
        for x, y, rw, rh, enc, data in rects:
            if enc == "h264":
                self._apply_h264(x, y, rw, rh, bytes(data))
                continue
            if enc == "copy":  # pixels the canvas already has: read before writing
                sx, sy = copy_source(data, rw, rh, self.size)
                copy_rows(self.pixels, x, y, rw, rh, sx, sy)
                continue
            self.pixels[y : y + rh, x : x + rw] = decode_rect(enc, data, rw, rh)
        if key:
            self.complete = True

    def _apply_h264(self, x: int, y: int, w: int, h: int, data: bytes) -> None:
        """Decode an h264 rect with its stream's decoder (one per rectangle); a P-frame of a
        stream whose IDR this canvas never had is skipped (the region waits for the next
        IDR). Bad data raises DecodeError, as for every encoding."""
        if self.video is None:
            from chatscreen.screen.video import VideoStreams  # PyAV loads only when needed

            self.video = VideoStreams()
        pic = self.video.decode(x, y, w, h, data)
        if pic is not None:
            self.pixels[y : y + h, x : x + w] = pic

    def save_png(self, path: Path) -> None:
        PILImage.fromarray(self.pixels, "RGB").save(path, format="PNG")


def psnr(a: RGB, b: RGB) -> float:
    """Peak signal-to-noise ratio of two same-sized 8-bit pictures, in dB (inf if equal)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
