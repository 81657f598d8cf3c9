"""The binary form of screen ``frame`` and ``cursor`` messages: pure code, no I/O.

On a screen connection whose handshake agreed on it (``"bin": 1`` in ``hello`` and in
``welcome``), a ``frame`` (and a ``cursor`` move without a picture) may travel as a frame
whose header length is 0 (a JSON header is never empty) and whose body is::

    u8 kind (1 frame, 2 cursor) | varints and bytes as below | payload

``frame``:  [share] seq flags [w h] count, then per rect: x y w h code len; then the rects'
data. ``flags``: bit 0 key, bit 1 the size (w h) follows; ``code``: the encoding in the low 6
bits (:data:`ENC_CODES`), the quality layer in the top 2 (0 none, 1 full, 2 low).
``cursor``: [share] x y (zigzag: signed). ``share`` is there only from the server.

A varint is LEB128, unsigned, least significant group first, at most :data:`MAX_VARINT`
bytes, with no needless trailing zero group. A frame without the size bit has the size of
the last binary frame of the same share received with one on the connection, refused or not
(the connection supplies it, see :class:`~chatscreen.protocol.connection.Connection`).

Decoding gives the JSON header the binary form stands for, which is then validated by the
schema like any other: a field out of range is the error the JSON form gets for it. Only what
the JSON form cannot express (a truncated or over-long varint, an unknown kind, unknown flag
bits) is a ``bad_frame``. See docs/protocol.md, "The binary form".
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol.schema import LAYERS, MAX_DIM, MAX_RECTS

BIN_VERSION = 1  # what "bin" says in hello and welcome
KIND_FRAME = 1
KIND_CURSOR = 2
FLAG_KEY = 1
FLAG_SIZE = 2
MAX_VARINT = 8  # bytes: 56 bits, enough for every integer the protocol has (2**53 - 1)
ENC_CODES: dict[str, int] = {"raw": 0, "jpeg": 1, "png": 2, "webp": 3, "palette": 4,
                             "zlib": 5, "h264": 6, "copy": 7, "packed": 8}
_CODE_ENC: dict[int, str] = {v: k for k, v in ENC_CODES.items()}
_LAYER_BITS: dict[str | None, int] = {None: 0, LAYERS[0]: 0x40, LAYERS[1]: 0x80}
_LAYER_OF: tuple[str | None, ...] = (None, LAYERS[0], LAYERS[1])
_PREFIX = struct.Struct(">II")


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_FRAME, f"binary frame: {message}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(n) for n in range(MAX_DIM + 1)]  # every coordinate, no loop


def uvarint(n: int) -> bytes:
    """``n`` (0 <= n < 2**56) as a varint."""
    if 0 <= n <= MAX_DIM:
        return _SMALL[n]
    if not 0 <= n < 1 << (7 * MAX_VARINT):
        raise ValueError(f"{n} does not fit a varint")
    return _varint(n)


def zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def unzigzag(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


def rect_head(x: int, y: int, w: int, h: int, enc: str, length: int,
              layer: str | None = None) -> bytes:
    """One rect's part of the binary form (what comes before the data). Raises KeyError
    for an encoding or layer without a code, ValueError for a value no varint holds."""
    return b"".join((uvarint(x), uvarint(y), uvarint(w), uvarint(h),
                     bytes((ENC_CODES[enc] | _LAYER_BITS[layer],)), uvarint(length)))


def frame_bytes(seq: int, key: bool, size: tuple[int, int] | None, heads: Sequence[bytes],
                data: Iterable[bytes | memoryview], share: int | None = None) -> bytes:
    """A whole binary ``frame`` on the wire (prefix included): ``heads`` from
    :func:`rect_head`, then the rects' ``data``; ``size`` is (w, h) to send, or None to
    leave it out (the receiver keeps the last one); ``share`` only from the server."""
    parts: list[bytes | memoryview] = [bytes((KIND_FRAME,))]
    if share is not None:
        parts.append(uvarint(share))
    parts.append(uvarint(seq))
    if size is None:
        parts.append(bytes((FLAG_KEY if key else 0,)))
    else:
        parts += (bytes(((FLAG_KEY if key else 0) | FLAG_SIZE,)), uvarint(size[0]),
                  uvarint(size[1]))
    parts.append(uvarint(len(heads)))
    parts += heads
    parts += data
    return _framed(parts)


def cursor_bytes(x: int, y: int, share: int | None = None) -> bytes:
    """A binary ``cursor`` move (no picture) on the wire."""
    parts = [bytes((KIND_CURSOR,))]
    if share is not None:
        parts.append(uvarint(share))
    parts += (uvarint(zigzag(x)), uvarint(zigzag(y)))
    return _framed(parts)


def _framed(parts: Sequence[bytes | memoryview]) -> bytes:
    body = b"".join(parts)
    return _PREFIX.pack(4 + len(body), 0) + body


def frame_from_fields(fields: dict[str, Any], payload: bytes | memoryview, *, size: bool,
                      share: bool = False) -> bytes:
    """The binary form of a frame message given as its JSON fields (``rects`` as dicts or
    :class:`~chatscreen.protocol.schema.Rect`)."""
    heads = [rect_head(r["x"], r["y"], r["w"], r["h"], r["enc"], r["len"], r.get("layer"))
             if isinstance(r, dict) else rect_head(r.x, r.y, r.w, r.h, r.enc, r.len, r.layer)
             for r in fields["rects"]]
    return frame_bytes(fields["seq"], fields["key"],
                       (fields["w"], fields["h"]) if size else None, heads, (payload,),
                       fields["share"] if share else None)


# -- decoding ---------------------------------------------------------------------------


def _read(buf: bytes | bytearray, i: int, end: int) -> tuple[int, int]:
    """The varint at ``buf[i:]`` (not past ``end``) and the index after it."""
    if i >= end:
        raise _bad("truncated")
    b = buf[i]
    if b < 0x80:
        return b, i + 1
    value, shift, last = b & 0x7F, 7, i + MAX_VARINT
    i += 1
    while True:
        if i >= end:
            raise _bad("truncated varint")
        if i >= last:
            raise _bad(f"varint longer than {MAX_VARINT} bytes")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0:
                raise _bad("varint with a needless zero group")
            return value, i
        shift += 7


def decode_body(buf: bytes | bytearray, start: int, end: int,
                share: bool) -> tuple[dict[str, Any], int]:
    """The JSON header that the binary body ``buf[start:end]`` stands for, and where its
    payload starts. ``share``: the body comes from the server (it carries a share id). A
    frame without its size has no ``w``/``h`` here (the connection adds them). Raises
    RemoteProtocolError(bad_frame) for what the JSON form cannot say."""
    if start >= end:
        raise _bad("empty")
    kind, i = buf[start], start + 1
    header: dict[str, Any]
    if kind == KIND_CURSOR:
        header = {"type": "cursor"}
        if share:
            header["share"], i = _read(buf, i, end)
        x, i = _read(buf, i, end)
        y, i = _read(buf, i, end)
        header["x"], header["y"] = unzigzag(x), unzigzag(y)
        return header, i
    if kind != KIND_FRAME:
        raise _bad(f"unknown kind {kind}")
    header = {"type": "frame"}
    if share:
        header["share"], i = _read(buf, i, end)
    header["seq"], i = _read(buf, i, end)
    if i >= end:
        raise _bad("truncated")
    flags = buf[i]
    i += 1
    if flags & ~(FLAG_KEY | FLAG_SIZE):
        raise _bad(f"unknown flags {flags:#04x}")
    header["key"] = bool(flags & FLAG_KEY)
    if flags & FLAG_SIZE:
        header["w"], i = _read(buf, i, end)
        header["h"], i = _read(buf, i, end)
    count, i = _read(buf, i, end)
    if not 1 <= count <= MAX_RECTS:
        header["rects"] = None  # the schema's error for a list of that length
        return header, end
    rects: list[dict[str, Any]] = []
    for _ in range(count):
        x, i = _read(buf, i, end)
        y, i = _read(buf, i, end)
        w, i = _read(buf, i, end)
        h, i = _read(buf, i, end)
        if i >= end:
            raise _bad("truncated")
        code = buf[i]
        n, i = _read(buf, i + 1, end)
        rect: dict[str, Any] = {"x": x, "y": y, "w": w, "h": h,
                                "enc": _CODE_ENC.get(code & 0x3F, code & 0x3F), "len": n}
        if code & 0xC0:
            rect["layer"] = _LAYER_OF[code >> 6] if code < 0xC0 else 3  # 3: refused
        rects.append(rect)
    header["rects"] = rects
    return header, i
