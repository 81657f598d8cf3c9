"""H.264 for regions that move: a stream encoder for the sharer, a decoder for the viewer.

Pure: pictures in, bytes out and back (PyAV's libx264 and FFmpeg's H.264 decoder, in
process; no file, no socket). One :class:`H264Encoder` encodes one screen rectangle (a
"stream", identified on the wire by its rectangle: docs/protocol.md, ``h264``); each call to
:meth:`H264Encoder.encode` gives **one access unit** (one picture) as an Annex B byte stream:
NAL units each behind a ``00 00 00 01`` / ``00 00 01`` start code. The encoder is set for
latency, not for compression: preset ultrafast (4x4 transforms, diamond motion search, CAVLC)
with the deblocking filter back on and more bits for chroma, tune zerolatency (no lookahead,
no frame delay: a picture in gives its access unit out at once) and psnr, no B-frames, one
reference picture (P-frames refer only to the previous picture), 4:2:0, constant quality
(CRF) with a VBV cap.
A keyframe is an IDR access unit with the sequence and picture parameter sets (SPS, PPS) in
front of it: it decodes on its own, and every P-frame after it decodes once the IDR and the
P-frames between have been decoded. The encoder emits an IDR first, when asked (``idr=True``),
and on its own every ``KEYINT`` pictures.

:class:`H264Decoder` decodes one stream's access units in order; anything wrong (garbage, a
picture of another size, a P-frame before any IDR) raises
:class:`~chatscreen.screen.pictures.DecodeError`, never more. The H.264 decoder is told the
largest picture it may allocate, so a forged SPS cannot make it allocate a huge one.
:func:`is_idr` (from :mod:`chatscreen.protocol.annexb`) reads the NAL unit types without
decoding anything (the relay uses it).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.codec.context import CodecContext
from av.video.reformatter import VideoReformatter

from chatscreen.protocol.annexb import is_idr, nal_types
from chatscreen.screen.pictures import BGRA, RGB, DecodeError

__all__ = ["H264Decoder", "H264Encoder", "VideoStreams", "coded_size", "is_idr", "nal_types"]

log = logging.getLogger(__name__)

#: Constant rate factor and chroma QP offset, chosen on bench/screen_workloads.py's video
#: (1040x600, 30 new grainy photographic pictures/s), where 4:2:0 alone caps PSNR at 34.4 dB
#: and the grain is lost at any usable quantiser: PSNR (of RGB) hardly moves with CRF, bytes
#: do. In process, every picture, encoding + decoding a picture (medians, this 2-core VM):
#: CABAC + deblocking, CRF 22: 32.15 dB, 850 kB/s, 7.9 + 4.4 ms; CAVLC + deblocking, CRF 22:
#: 32.15 dB, 1.10 MB/s, 6.9 + 3.3 ms; the same at CRF 23: 32.06 dB, 757 kB/s; with chroma QP
#: offset -3 (chroma is half of RGB's error here): **32.17 dB, 846 kB/s, 6.6 + 3.0 ms** (the
#: default: the same quality and bytes as CABAC, 3 ms sooner on screen); CAVLC without
#: deblocking: 32.08 dB and 2.3 ms to decode (docs/benchmarks.md).
DEFAULT_CRF = 23
CHROMA_QP_OFFSET = -3
#: VBV: at most this many bits per second on average, over a buffer of one second (the
#: issue's 1.2 MB/s), so that a picture harder than the tuning set lowers quality, not the
#: frame rate.
DEFAULT_MAXRATE = 9_600_000
#: An IDR every this many pictures even when nobody asks (the relay asks sooner).
KEYINT = 600

PIX_FMT = "yuv420p"
#: swscale's filter for BGRA -> 4:2:0: "AREA" averages each 2x2 block's chroma, and its
#: unscaled path is the fastest (1040x600: 0.95 ms against 1.6 ms for the default bilinear,
#: and 34.4 against 34.3 dB for the conversion alone).
CHROMA_FILTER = "AREA"


def coded_size(w: int, h: int) -> tuple[int, int]:
    """The picture size a ``w`` x ``h`` rectangle is coded at: 4:2:0 needs even sizes (the
    extra column or row repeats the last one and is dropped by the viewer)."""
    return w + (w & 1), h + (h & 1)


class H264Encoder:
    """One rectangle's H.264 stream. Not thread-safe: one capture thread uses it."""

    def __init__(self, w: int, h: int, *, crf: int = DEFAULT_CRF, fps: float = 30.0,
                 maxrate: int = DEFAULT_MAXRATE, threads: int = 0,
                 cabac: bool = False) -> None:
        """``cabac``: arithmetic coding (~25 % fewer bytes at the same quality, ~1 ms more
        to encode and ~1.5 ms more to decode a 1040x600 picture): for a layer whose rate
        matters more than its latency."""
        if w < 1 or h < 1:
            raise ValueError(f"bad size {w}x{h}")
        self.w, self.h, self.fps = w, h, fps
        cw, ch = coded_size(w, h)
        ctx: Any = CodecContext.create("libx264", "w")
        ctx.width, ctx.height = cw, ch
        ctx.pix_fmt = PIX_FMT
        ctx.time_base = Fraction(1, 1000)
        ctx.framerate = Fraction(round(fps * 1000), 1000)
        ctx.max_b_frames = 0
        ctx.gop_size = KEYINT
        ctx.thread_count = threads
        ctx.options = {
            "preset": "ultrafast",
            "tune": "psnr,zerolatency",  # no psycho-visual tricks: the target is PSNR
            "crf": str(crf),
            "forced-idr": "1",  # a requested keyframe is an IDR, not just an I picture
            "x264-params": (f"bframes=0:ref=1:keyint={KEYINT}:min-keyint={KEYINT}:"
                            f"scenecut=0:repeat-headers=1:annexb=1:"
                            f"cabac={int(cabac)}:no-deblock=0:"
                            f"chroma-qp-offset={CHROMA_QP_OFFSET}:"
                            f"vbv-maxrate={maxrate // 1000}:vbv-bufsize={maxrate // 1000}"),
        }
        ctx.open()
        self._ctx = ctx
        # one BGRA picture, reused: each capture is copied into it once (with the extra
        # column or row of an odd size), then converted by one reused swscale context
        self._bgra = av.VideoFrame(cw, ch, "bgra")
        plane = self._bgra.planes[0]
        self._pixels: BGRA = np.frombuffer(memoryview(plane), np.uint8).reshape(
            ch, plane.line_size)[:, : cw * 4].reshape(ch, cw, 4)
        self._reformatter = VideoReformatter()
        self._n = 0
        self.idr_next = True  # the first picture is an IDR

    def encode(self, img: BGRA, *, idr: bool = False) -> bytes:
        """One access unit for ``img`` (``h`` x ``w`` x 4, BGRA/BGRX). ``idr``: make it a
        keyframe."""
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"picture is {img.shape[1]}x{img.shape[0]}, "
                             f"the stream {self.w}x{self.h}")
        w, h = self.w, self.h
        pix = self._pixels
        pix[:h, :w] = img
        if pix.shape[1] != w:  # odd sizes: repeat the last column, the last row
            pix[:h, w:] = img[:, w - 1 :]
        if pix.shape[0] != h:
            pix[h:] = pix[h - 1 : h]
        frame = self._reformatter.reformat(self._bgra, format=PIX_FMT,
                                           interpolation=CHROMA_FILTER)
        frame.pts = round(self._n * 1000 / self.fps)
        self._n += 1
        if idr or self.idr_next:
            frame.pict_type = av.video.frame.PictureType.I
            self.idr_next = False
        packets = self._ctx.encode(frame)
        data = b"".join(bytes(p) for p in packets)
        if not data:  # zerolatency never holds a picture back; be sure anyway
            data = b"".join(bytes(p) for p in self._ctx.encode(None))
        return data

    def close(self) -> None:
        self._ctx = None


class H264Decoder:
    """Decodes one stream's access units, in order, to RGB pictures of ``w`` x ``h``."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        cw, ch = coded_size(w, h)
        ctx: Any = CodecContext.create("h264", "r")
        ctx.thread_type = "SLICE"  # frame threads would hold pictures back; the sharer's
        ctx.thread_count = 2  # x264 (sliced threads) cuts each picture into slices
        # the picture plus macroblock alignment: a forged SPS cannot ask for more
        ctx.options = {"max_pixels": str((cw + 64) * (ch + 64)), "flags": "low_delay"}
        self._ctx = ctx
        self.started = False  # an IDR has been decoded

    def decode(self, data: bytes) -> RGB:
        """The picture of one access unit; DecodeError if there is none or it is wrong."""
        if not self.started:
            if not is_idr(data):
                raise DecodeError("an h264 stream must start with an IDR access unit")
            self.started = True
        try:
            frames = self._ctx.decode(av.Packet(data))
        except (av.FFmpegError, ValueError, MemoryError) as exc:
            raise DecodeError(f"bad h264 data: {exc}") from None
        if not frames:
            raise DecodeError("h264 data held no picture")
        frame = frames[-1]
        cw, ch = coded_size(self.w, self.h)
        if (frame.width, frame.height) != (cw, ch):
            raise DecodeError(f"h264 picture is {frame.width}x{frame.height}, "
                              f"the rect {self.w}x{self.h} (coded {cw}x{ch})")
        rgb: RGB = frame.to_ndarray(format="rgb24")
        if (cw, ch) != (self.w, self.h):
            rgb = np.ascontiguousarray(rgb[: self.h, : self.w])
        return rgb


#: Streams a viewer keeps decoders for; the least recently used is dropped beyond this.
MAX_STREAMS = 8


class VideoStreams:
    """A viewer's H.264 decoders, one per stream (a stream is its rectangle)."""

    def __init__(self) -> None:
        self._decoders: dict[tuple[int, int, int, int], H264Decoder] = {}

    def decode(self, x: int, y: int, w: int, h: int, data: bytes) -> RGB | None:
        """The picture of an ``h264`` rect, or None when its stream cannot be decoded yet (a
        P-frame of a stream whose IDR this viewer never had: it waits for the next IDR).
        DecodeError for bad data; that stream then waits for its next IDR."""
        key = (x, y, w, h)
        idr = is_idr(data)
        dec = self._decoders.pop(key, None)
        if idr:
            dec = H264Decoder(w, h)
        elif dec is None:
            return None
        if len(self._decoders) >= MAX_STREAMS:
            del self._decoders[next(iter(self._decoders))]
        rgb = dec.decode(data)  # on DecodeError the decoder is gone: wait for the next IDR
        self._decoders[key] = dec  # most recently used last
        return rgb

    def __len__(self) -> int:
        return len(self._decoders)
