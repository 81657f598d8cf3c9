"""A small RFB 3.8 (VNC) client for the benchmarks: the viewer side of the x0vncserver baseline.

It speaks what TigerVNC's ``vncviewer`` speaks at its default settings, as far as the bytes on
the wire are concerned: security type None, ClientInit shared, a 32 bpp true-colour pixel
format, SetEncodings with the preferred encoding first (ZRLE or Tight) then the others it
decodes, CopyRect, the Tight compress level 2 and JPEG quality 8 pseudo-encodings, LastRect,
the rich cursor (so that the server does not draw the pointer into the picture), DesktopSize,
Fence and ContinuousUpdates. Like vncviewer, it switches to continuous updates when the server
offers them (``continuous=True``); otherwise it sends an incremental FramebufferUpdateRequest
after each update.

Decoders: Raw, CopyRect, ZRLE (one zlib stream for the connection; 64x64 tiles: raw, solid,
packed palette, plain RLE, palette RLE) and Tight (four zlib streams with reset bits; fill,
JPEG, basic with the copy, palette and gradient filters). The framebuffer is an RGB
``numpy`` array, ``H x W x 3``. Nothing from the network is trusted: a malformed message
raises :class:`RFBError`.

The pixel format puts red in the low byte (shifts 0, 8, 16, little-endian), so a raw pixel is
``R G B x`` and ZRLE's 3-byte CPIXEL is ``R G B``; Tight's TPIXEL is ``R G B`` anyway.
"""

from __future__ import annotations

import select
import socket
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import simplejpeg

RGB = npt.NDArray[np.uint8]

RAW, COPYRECT, TIGHT, ZRLE = 0, 1, 7, 16
DESKTOP_SIZE, LAST_RECT, RICH_CURSOR = -223, -224, -239
FENCE, CONTINUOUS_UPDATES = -312, -313
QUALITY_0, COMPRESS_0 = -32, -256  # Tight JPEG quality / zlib level pseudo-encodings
COMPRESS_LEVEL, JPEG_QUALITY = 2, 8  # vncviewer's defaults
FENCE_BLOCK_BEFORE, FENCE_BLOCK_AFTER, FENCE_REQUEST = 1, 2, 1 << 31
TILE = 64  # ZRLE tile size
TIGHT_MIN_TO_COMPRESS = 12
MAX_RECT_PIXELS = 1 << 26
PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)


class RFBError(Exception):
    """The server sent something this client cannot take (or refused us)."""


def encodings(preferred: int) -> list[int]:
    """What vncviewer asks for with ``preferred`` (ZRLE or TIGHT) and default settings."""
    others = [e for e in (TIGHT, ZRLE) if e != preferred]
    return [preferred, *others, COPYRECT, RAW, RICH_CURSOR, DESKTOP_SIZE, LAST_RECT, FENCE,
            CONTINUOUS_UPDATES, COMPRESS_0 + COMPRESS_LEVEL, QUALITY_0 + JPEG_QUALITY]


# -- reading ---------------------------------------------------------------------------------


class Reader:
    """Exact reads from a byte source (a socket's recv, or bytes in the tests)."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._buf = bytearray()
        self.count = 0  # bytes taken from the source

    def buffered(self) -> int:
        return len(self._buf)

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise RFBError("connection closed")
            self.count += len(chunk)
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def u8(self) -> int:
        return self.read(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.read(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.read(4))[0])

    def compact_length(self) -> int:
        """Tight's 1-3 byte length: 7 bits, 7 bits, then 8 bits, low bits first."""
        b = self.u8()
        n = b & 0x7F
        if b & 0x80:
            b = self.u8()
            n |= (b & 0x7F) << 7
            if b & 0x80:
                n |= self.u8() << 14
        return n


def bytes_reader(data: bytes) -> Reader:
    """A Reader over ``data`` (for the tests)."""
    view = memoryview(data)
    pos = 0

    def recv(n: int) -> bytes:
        nonlocal pos
        chunk = bytes(view[pos:pos + n])
        pos += len(chunk)
        return chunk

    return Reader(recv)


class Cursor:
    """A bounded reader over a decompressed buffer."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RFBError("compressed data ends early")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]


# -- pixels ----------------------------------------------------------------------------------


def rgb_pixels(data: bytes, n: int, size: int) -> RGB:
    """``n`` pixels of ``size`` bytes (3: R G B, 4: R G B x) as an ``n x 3`` array."""
    arr = np.frombuffer(data, np.uint8, n * size).reshape(n, size)
    return arr[:, :3]


def unpack_indices(data: bytes, w: int, h: int, bits: int) -> npt.NDArray[np.intp]:
    """Palette indices packed ``bits`` to a pixel, MSB first, rows padded to a byte."""
    stride = (w * bits + 7) // 8
    raw = np.frombuffer(data, np.uint8, stride * h).reshape(h, stride)
    allbits = np.unpackbits(raw, axis=1)[:, : w * bits].reshape(h, w, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.intp)
    out: npt.NDArray[np.intp] = allbits.astype(np.intp) @ weights
    return out


def check_rect(fb: RGB, x: int, y: int, w: int, h: int) -> None:
    if x + w > fb.shape[1] or y + h > fb.shape[0]:
        raise RFBError(f"rect {w}x{h}+{x}+{y} outside the {fb.shape[1]}x{fb.shape[0]} screen")


# -- ZRLE ------------------------------------------------------------------------------------


def zrle_tile(cur: Cursor, tw: int, th: int) -> RGB:
    """One ZRLE tile (CPIXEL = 3 bytes) as a ``th x tw x 3`` array."""
    sub = cur.u8()
    n = tw * th
    if sub == 0:
        return rgb_pixels(cur.take(3 * n), n, 3).reshape(th, tw, 3)
    if sub == 1:
        return np.broadcast_to(rgb_pixels(cur.take(3), 1, 3), (th, tw, 3))
    if 2 <= sub <= 16:
        palette = rgb_pixels(cur.take(3 * sub), sub, 3)
        bits = 1 if sub == 2 else 2 if sub <= 4 else 4
        data = cur.take((tw * bits + 7) // 8 * th)
        idx = unpack_indices(data, tw, th, bits)
        if idx.max() >= sub:
            raise RFBError("ZRLE palette index out of range")
        return palette[idx]
    if sub == 128:
        return _rle(cur, n, None).reshape(th, tw, 3)
    if sub >= 130:
        palette = rgb_pixels(cur.take(3 * (sub - 128)), sub - 128, 3)
        return _rle(cur, n, palette).reshape(th, tw, 3)
    raise RFBError(f"ZRLE subencoding {sub}")


def _run_length(cur: Cursor) -> int:
    n = 1
    while (b := cur.u8()) == 255:
        n += 255
    return n + b


def _rle(cur: Cursor, n: int, palette: RGB | None) -> RGB:
    """Plain RLE (``palette`` None: each run is a CPIXEL and a length) or palette RLE (each
    run a byte: an index, with the top bit set followed by a length) covering ``n`` pixels."""
    colours = bytearray()  # CPIXELs (plain) or indices (palette)
    lengths: list[int] = []
    total = 0
    while total < n:
        if palette is None:
            colours += cur.take(3)
            run = _run_length(cur)
        else:
            b = cur.u8()
            colours.append(b & 0x7F)
            run = _run_length(cur) if b & 0x80 else 1
        lengths.append(run)
        total += run
    if total != n:
        raise RFBError("ZRLE run past the end of its tile")
    if palette is None:
        pix = rgb_pixels(bytes(colours), len(lengths), 3)
    else:
        idx = np.frombuffer(bytes(colours), np.uint8).astype(np.intp)
        if idx.max() >= len(palette):
            raise RFBError("ZRLE palette index out of range")
        pix = palette[idx]
    return np.repeat(pix, lengths, axis=0)


def zrle_rect(fb: RGB, data: bytes, x: int, y: int, w: int, h: int) -> None:
    """Decode a ZRLE rectangle's decompressed ``data`` onto ``fb``."""
    cur = Cursor(data)
    for ty in range(y, y + h, TILE):
        th = min(TILE, y + h - ty)
        for tx in range(x, x + w, TILE):
            tw = min(TILE, x + w - tx)
            fb[ty:ty + th, tx:tx + tw] = zrle_tile(cur, tw, th)


# -- Tight -----------------------------------------------------------------------------------


@dataclass
class TightState:
    streams: list[zlib._Decompress] = field(
        default_factory=lambda: [zlib.decompressobj() for _ in range(4)])


def tight_rect(fb: RGB, rd: Reader, st: TightState, x: int, y: int, w: int, h: int) -> None:
    """Read and decode one Tight rectangle onto ``fb``."""
    ctl = rd.u8()
    for i in range(4):
        if ctl & (1 << i):
            st.streams[i] = zlib.decompressobj()
    kind = ctl >> 4
    if kind == 8:  # fill
        fb[y:y + h, x:x + w] = rgb_pixels(rd.read(3), 1, 3)
        return
    if kind == 9:  # JPEG
        jpeg = rd.read(rd.compact_length())
        pic = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        if pic.shape[:2] != (h, w):
            raise RFBError(f"Tight JPEG of {pic.shape[1]}x{pic.shape[0]} for a {w}x{h} rect")
        fb[y:y + h, x:x + w] = pic
        return
    if kind > 9:
        raise RFBError(f"Tight compression type {kind}")
    filt = rd.u8() if kind & 4 else 0
    stream = st.streams[kind & 3]
    if filt == 1:  # palette
        n = rd.u8() + 1
        palette = rgb_pixels(rd.read(3 * n), n, 3)
        size = (w + 7) // 8 * h if n == 2 else w * h
        data = _tight_data(rd, stream, size)
        if n == 2:
            idx = unpack_indices(data, w, h, 1)
        else:
            idx = np.frombuffer(data, np.uint8, w * h).reshape(h, w).astype(np.intp)
            if idx.max() >= n:
                raise RFBError("Tight palette index out of range")
        fb[y:y + h, x:x + w] = palette[idx]
    elif filt in (0, 2):  # copy, gradient
        data = _tight_data(rd, stream, w * h * 3)
        pix = rgb_pixels(data, w * h, 3).reshape(h, w, 3)
        fb[y:y + h, x:x + w] = pix if filt == 0 else ungradient(pix)
    else:
        raise RFBError(f"Tight filter {filt}")


def _tight_data(rd: Reader, stream: zlib._Decompress, size: int) -> bytes:
    if size < TIGHT_MIN_TO_COMPRESS:
        return rd.read(size)
    data = stream.decompress(rd.read(rd.compact_length()))
    if len(data) != size:
        raise RFBError(f"Tight data of {len(data)} bytes, expected {size}")
    return data


def ungradient(diff: RGB) -> RGB:
    """Undo Tight's gradient filter: each value is added (mod 256) to the prediction
    clamp(left + up - upleft), with zeros outside the rectangle. (TigerVNC's encoder does not
    use this filter; a plain loop is fast enough for the rare rect that has it.)"""
    h, w, _ = diff.shape
    d = diff.reshape(h, w * 3).tolist()
    prev = [0] * (w * 3 + 3)
    out = []
    for row in d:
        cur = [0] * (w * 3 + 3)
        for i in range(w * 3):
            pred = min(255, max(0, cur[i] + prev[i + 3] - prev[i]))
            cur[i + 3] = (pred + row[i]) & 0xFF
        out.append(cur[3:])
        prev = cur
    return np.array(out, np.uint8).reshape(h, w, 3)


# -- the client ------------------------------------------------------------------------------


@dataclass
class Update:
    """One FramebufferUpdate: when it was decoded, its rectangles by encoding."""

    at: float
    rects: dict[int, int] = field(default_factory=dict)  # encoding -> count


class RFBClient:
    """A connected viewer. ``next_update`` returns after each decoded FramebufferUpdate."""

    def __init__(self, sock: socket.socket, preferred: int, continuous: bool = True) -> None:
        self.sock = sock
        self.rd = Reader(sock.recv)
        self.tight = TightState()
        self.zrle = zlib.decompressobj()
        self.continuous_offered = False
        self.continuous = False
        self.want_continuous = continuous
        self.name = ""
        self._handshake(preferred)
        self.fb: RGB = np.zeros((self.height, self.width, 3), np.uint8)
        self._request(incremental=False)

    @classmethod
    def connect(cls, host: str, port: int, preferred: int, continuous: bool = True,
                timeout: float = 10.0) -> RFBClient:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            return cls(sock, preferred, continuous)
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    def _handshake(self, preferred: int) -> None:
        version = self.rd.read(12)
        if not version.startswith(b"RFB 003."):
            raise RFBError(f"not an RFB server: {version!r}")
        self.sock.sendall(b"RFB 003.008\n")
        types = self.rd.read(self.rd.u8())
        if not types:
            raise RFBError(f"refused: {self.rd.read(self.rd.u32()).decode(errors='replace')}")
        if 1 not in types:
            raise RFBError(f"security type None not offered ({list(types)})")
        self.sock.sendall(b"\x01")
        if self.rd.u32() != 0:
            raise RFBError(f"security failed: {self.rd.read(self.rd.u32())!r}")
        self.sock.sendall(b"\x01")  # ClientInit: shared
        self._w, self._h = self.rd.u16(), self.rd.u16()
        self.rd.read(16)  # the server's pixel format
        self.name = self.rd.read(self.rd.u32()).decode(errors="replace")
        encs = encodings(preferred)
        self.sock.sendall(b"\x00\x00\x00\x00" + PIXEL_FORMAT
                          + struct.pack(f">BxH{len(encs)}i", 2, len(encs), *encs))

    def _request(self, incremental: bool) -> None:
        self.sock.sendall(struct.pack(">BBHHHH", 3, incremental, 0, 0, self._w, self._h))

    def next_update(self, timeout: float) -> Update | None:
        """Handle server messages until a FramebufferUpdate is decoded (returned) or
        ``timeout`` seconds pass with nothing to read (None)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.rd.buffered():
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    return None
            kind = self.rd.u8()
            if kind == 0:
                update = self._update()
                self._after_update()
                return update
            self._other(kind)

    def _after_update(self) -> None:
        if self.want_continuous and self.continuous_offered and not self.continuous:
            self.continuous = True
            self.sock.sendall(struct.pack(">BBHHHH", 150, 1, 0, 0, self._w, self._h))
        if not self.continuous:
            self._request(incremental=True)

    def _other(self, kind: int) -> None:
        rd = self.rd
        if kind == 1:  # SetColourMapEntries: not for true colour; skip
            rd.read(3)
            rd.read(6 * rd.u16())
        elif kind == 2:  # Bell
            pass
        elif kind == 3:  # ServerCutText
            rd.read(3)
            rd.read(rd.u32())
        elif kind == 150:  # EndOfContinuousUpdates: the server offers them
            self.continuous_offered = True
        elif kind == 248:
            self._fence()
        else:
            raise RFBError(f"unknown server message {kind}")

    def _fence(self) -> None:
        self.rd.read(3)
        flags = self.rd.u32()
        data = self.rd.read(self.rd.u8())
        if flags & FENCE_REQUEST:  # answer at once, as vncviewer does
            reply = flags & (FENCE_BLOCK_BEFORE | FENCE_BLOCK_AFTER)
            self.sock.sendall(struct.pack(">B3xIB", 248, reply, len(data)) + data)

    def _update(self) -> Update:
        rd = self.rd
        rd.read(1)
        count = rd.u16()
        update = Update(0.0)
        for _ in range(count):
            x, y, w, h = rd.u16(), rd.u16(), rd.u16(), rd.u16()
            enc = struct.unpack(">i", rd.read(4))[0]
            update.rects[enc] = update.rects.get(enc, 0) + 1
            if enc == LAST_RECT:
                break
            self._rect(enc, x, y, w, h)
        update.at = time.monotonic()
        return update

    def _rect(self, enc: int, x: int, y: int, w: int, h: int) -> None:
        rd = self.rd
        if enc == DESKTOP_SIZE:
            self._w, self._h = w, h
            self.fb = np.zeros((h, w, 3), np.uint8)
            return
        if enc == RICH_CURSOR:
            rd.read(w * h * 4 + (w + 7) // 8 * h)
            return
        check_rect(self.fb, x, y, w, h)
        if w * h > MAX_RECT_PIXELS:
            raise RFBError(f"rect of {w}x{h}")
        if enc == RAW:
            self.fb[y:y + h, x:x + w] = rgb_pixels(rd.read(w * h * 4), w * h, 4).reshape(h, w, 3)
        elif enc == COPYRECT:
            sx, sy = rd.u16(), rd.u16()
            check_rect(self.fb, sx, sy, w, h)
            self.fb[y:y + h, x:x + w] = self.fb[sy:sy + h, sx:sx + w].copy()
        elif enc == ZRLE:
            data = self.zrle.decompress(rd.read(rd.u32()))
            zrle_rect(self.fb, data, x, y, w, h)
        elif enc == TIGHT:
            tight_rect(self.fb, rd, self.tight, x, y, w, h)
        else:
            raise RFBError(f"encoding {enc} not asked for")
