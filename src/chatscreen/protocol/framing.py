"""Length-prefixed frames: bytes in, frames out.

A frame on the wire::

    u32 body_length | u32 header_length | header (JSON object, UTF-8) | payload (binary)

Both lengths are big-endian. ``body_length`` counts everything after itself, so
``body_length = 4 + header_length + len(payload)``. Limits are checked against the length
fields before the body is buffered, so a peer cannot make us allocate more than the limit.
A ``header_length`` of 0 (a JSON header is never empty) marks the binary form of a screen
message, on connections that agreed on it (see ``protocol.binform``).
Over WebSocket the same body (without the first u32) is one binary message.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatscreen.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

_U32 = struct.Struct(">I")
_PREFIX = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one peer may send to the other."""

    max_frame: int = 1 << 20  # whole body, bytes
    max_header: int = 256 << 10  # JSON header, bytes
    max_text: int = 4000  # characters in one chat message


@dataclass(frozen=True, slots=True)
class Frame:
    header: dict[str, Any]
    payload: bytes = b""
    binary: bool = False  # came in the binary form (header_length 0): see protocol.binform
    deflated: bool = False  # ... deflated (protocol.deflate)


#: Parses a binary body (``buf[start:end]``): the header it stands for, where its payload starts.
BinaryDecoder = Callable[[bytes | bytearray, int, int], tuple[dict[str, Any], int]]
#: Inflates a deflated binary body's chunk (protocol.deflate) into the binary body it stands for.
Inflate = Callable[[bytes], bytes]
KIND_DEFLATED = 0x80  # a binary body's first byte when it is deflated (protocol.deflate)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
# One encoder object: json.dumps() with non-default arguments builds a new one on every call,
# which doubles the cost of encoding a chat message (see docs/benchmarks.md).
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def decode_header(raw: bytes) -> dict[str, Any]:
    """Parse a JSON header; anything but a JSON object is a protocol error."""
    try:
        text = raw.decode("utf-8")
        obj = _decoder.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RemoteProtocolError(ErrorCode.BAD_FRAME, f"header is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(ErrorCode.BAD_FRAME, "header is not a JSON object")
    return obj


def encode_header(header: dict[str, Any]) -> bytes:
    try:
        return _encoder.encode(header).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(ErrorCode.INTERNAL, f"cannot encode header: {exc}") from None


def encode_frame(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    """Encode one frame. The result can be written to any number of peers."""
    raw = encode_header(header)
    return b"".join((_PREFIX.pack(4 + len(raw) + len(payload), len(raw)), raw, payload))


class FrameDecoder:
    """Incremental frame parser. ``feed`` bytes, get whole frames back.

    After a violation it raises the same error on every later call: a broken stream cannot be
    resynchronised, the connection must be closed.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._need: int | None = None  # body length of the frame being read
        self._error: RemoteProtocolError | None = None
        # set once the binary form may come (protocol.binform); until then an empty header
        # is the bad JSON it looks like
        self.binary: BinaryDecoder | None = None
        # set once deflated binary bodies may come (protocol.deflate); until then their kind
        # byte is an unknown kind
        self.inflate: Inflate | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def error(self) -> RemoteProtocolError | None:
        """The violation that broke the stream, once there was one."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._error is not None:
            raise self._error
        self._buf += data
        frames: list[Frame] = []
        try:
            while True:
                frame = self._next()
                if frame is None:
                    return frames
                frames.append(frame)
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf.clear()
            if frames:
                # Hand out what was valid; the error is raised on the next call.
                return frames
            raise

    def _next(self) -> Frame | None:
        buf = self._buf
        if self._need is None:
            if len(buf) < 4:
                return None
            (need,) = _U32.unpack_from(buf)
            if need > self._limits.max_frame:
                raise RemoteProtocolError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {need} bytes exceeds the limit of {self._limits.max_frame}",
                )
            if need < 4:
                raise RemoteProtocolError(ErrorCode.BAD_FRAME, f"frame body of {need} bytes")
            self._need = need
        need = self._need
        if len(buf) < 4 + need:
            return None
        (hlen,) = _U32.unpack_from(buf, 4)
        if hlen > need - 4:
            raise RemoteProtocolError(ErrorCode.BAD_FRAME, "header length exceeds frame length")
        if hlen > self._limits.max_header:
            raise RemoteProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"header of {hlen} bytes exceeds the limit of {self._limits.max_header}",
            )
        binary = hlen == 0 and self.binary is not None
        deflated = False
        if binary and self.inflate is not None and need > 4 and buf[8] == KIND_DEFLATED:
            assert self.binary is not None
            body = self.inflate(bytes(buf[9 : 4 + need]))
            header, start = self.binary(body, 0, len(body))
            payload, deflated = body[start:], True
        elif binary:
            assert self.binary is not None
            header, start = self.binary(buf, 8, 4 + need)
            payload = _copy(buf, start, 4 + need)
        else:
            header, start = decode_header(bytes(buf[8 : 8 + hlen])), 8 + hlen
            payload = _copy(buf, start, 4 + need)
        del buf[: 4 + need]
        self._need = None
        return Frame(header, payload, binary, deflated)


def _copy(buf: bytearray, start: int, end: int) -> bytes:
    """``bytes(buf[start:end])`` in one copy, not two (a slice of a bytearray is a copy):
    a 1 MiB file chunk is copied once here, not twice."""
    with memoryview(buf) as view:
        return bytes(view[start:end])
