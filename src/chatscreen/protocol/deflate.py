"""Deflated binary frames: one persistent raw-deflate stream per connection and direction.
Pure, no I/O.

On a screen connection that agreed on it (``"deflate": 1`` in ``hello`` and ``welcome``, with
``"bin": 1``), either end may send a binary body (``protocol.binform``: kind byte onward) as::

    u32 body_length | u32 0 | u8 0x80 | chunk

``chunk`` is what the sender's one raw-deflate compressor for the connection (no zlib
header; each direction has its own) gave for the body, ended with a sync flush whose last 4
bytes, always ``00 00 ff ff``, are left out (as in WebSocket's permessage-deflate, RFC 7692
7.2.1). The receiver keeps one raw inflater (a 32 KiB window) for the connection, feeds it
``chunk + 00 00 ff ff``, and decodes what comes out as the binary body it is. The context
persists from one deflated frame to the next (a glyph sent before costs a back-reference);
frames sent otherwise do not touch it. The server inflates a client's body to at most
MAX_CLIENT_BODY bytes. See docs/protocol.md, "Deflated frames".
"""

from __future__ import annotations

import zlib

from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol.framing import KIND_DEFLATED

__all__ = ["DEFLATE_VERSION", "KIND_DEFLATED", "LOSSLESS", "MAX_CLIENT_BODY", "Deflater",
           "Inflater"]

DEFLATE_VERSION = 1  # what "deflate" says in hello and welcome
# what is worth deflating: lossless encodings not compressed already (jpeg, png, webp, h264,
# zlib are); the reference server and client deflate frames of these alone
LOSSLESS = frozenset({"raw", "palette", "packed", "copy"})
# A client's deflated body inflates to at most this (more: a fatal bad_frame), so that the
# server inflates no more than 8 KiB per frame it is sent (frames are rate limited); the
# reference client deflates only binary frames of LOSSLESS rects this small.
MAX_CLIENT_BODY = 8 << 10
TAIL = b"\x00\x00\xff\xff"  # what a sync flush ends with, left out on the wire
# The server's compressor (bench/bench_deflate.py, typed text, rects cut to the change): a
# 32 KiB window holds the glyphs seen before (51 B an update on the wire against 63 B with 16 KiB
# and 70 B with 8 KiB); memLevel 6 loses nothing on frames this small against 8, and takes 32
# KiB instead of 128; level 6 as well as 9, 1 is 16 % bigger, all ~3 us a frame.
WBITS = 15
MEM_LEVEL = 6
LEVEL = 6
# zlib's own figure for a compressor: 2^(wbits+2) + 2^(memLevel+9) bytes (and ~6 KiB of state)
COMPRESSOR_BYTES = (1 << (WBITS + 2)) + (1 << (MEM_LEVEL + 9)) + (6 << 10)
INFLATER_BYTES = (1 << 15) + (7 << 10)  # a 32 KiB window and its state


class Deflater:
    """The sending end's persistent context: bodies in, wire frames out."""

    __slots__ = ("_z",)

    def __init__(self) -> None:
        self._z = zlib.compressobj(LEVEL, zlib.DEFLATED, -WBITS, MEM_LEVEL)

    def frame(self, body: bytes | memoryview) -> bytes:
        """The deflated frame (prefix included) standing for the binary ``body``."""
        z = self._z
        chunk = z.compress(body) + z.flush(zlib.Z_SYNC_FLUSH)
        n = len(chunk) - 4  # the sync flush's tail, 00 00 ff ff, is left out
        return b"".join(((n + 5).to_bytes(4, "big"), b"\x00\x00\x00\x00\x80",
                         memoryview(chunk)[:n]))

    def wire(self, data: bytes) -> bytes:
        """A whole binary frame on the wire (``binform``'s bytes) as a deflated frame."""
        return self.frame(memoryview(data)[8:])


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_FRAME, f"deflated frame: {message}")


class Inflater:
    """The receiving end's persistent context: at most ``max_body`` bytes out of a chunk."""

    __slots__ = ("_z", "max_body")

    def __init__(self, max_body: int) -> None:
        self._z: zlib._Decompress | None = None  # made at the first chunk (INFLATER_BYTES)
        self.max_body = max_body

    def body(self, chunk: bytes) -> bytes:
        """The binary body that ``chunk`` (without its tail) stands for. Raises
        RemoteProtocolError(bad_frame) for a corrupt chunk, one that inflates to more than
        ``max_body`` bytes or to nothing, or one that ends the deflate stream: the stream is
        then broken and the connection must close."""
        z = self._z
        if z is None:
            z = self._z = zlib.decompressobj(-15)
        try:
            out = z.decompress(chunk + TAIL, self.max_body + 1)
        except zlib.error as exc:
            raise _bad(f"corrupt: {exc}") from None
        if len(out) > self.max_body or z.unconsumed_tail:
            raise _bad(f"inflates to more than {self.max_body} bytes")
        if z.eof:
            raise _bad("ends the deflate stream")
        if not out:
            raise _bad("empty")
        return out
