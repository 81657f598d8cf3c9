"""The per-connection protocol state machine, for either end. No I/O.

Feed it the bytes that arrived (:meth:`Connection.receive_data`) and get validated messages
back; ask it to encode what you want to send (:meth:`Connection.send`). It enforces the
handshake: a client's first message is ``hello``; a server's first message is ``welcome`` or a
fatal ``error``. Nothing else may cross before the handshake completes::

    server side:  AWAIT_HELLO --hello--> HELLO_RECEIVED --accept()--> OPEN --close()--> CLOSED
    client side:  AWAIT_WELCOME --welcome--> OPEN --close()--> CLOSED
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from enum import Enum, auto
from typing import Any

from chatscreen.errors import ErrorCode, LocalProtocolError, RemoteProtocolError, RequestError
from chatscreen.protocol import binform
from chatscreen.protocol.deflate import (
    DEFLATE_VERSION,
    LOSSLESS,
    MAX_CLIENT_BODY,
    Deflater,
    Inflater,
)
from chatscreen.protocol.framing import Frame, FrameDecoder, Limits, encode_frame
from chatscreen.protocol.schema import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Message,
    Spec,
    parse_message,
)

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})


class Role(Enum):
    CLIENT = auto()
    SERVER = auto()


class State(Enum):
    AWAIT_HELLO = auto()
    HELLO_RECEIVED = auto()
    AWAIT_WELCOME = auto()
    OPEN = auto()
    CLOSED = auto()


class Connection:
    def __init__(self, role: Role, limits: Limits) -> None:
        self.role = role
        self.limits = limits
        self._decoder = FrameDecoder(limits)
        self._inbound: Mapping[str, Spec] = (
            CLIENT_MESSAGES if role is Role.SERVER else SERVER_MESSAGES
        )
        self.state = State.AWAIT_HELLO if role is Role.SERVER else State.AWAIT_WELCOME
        # The binary form of frame/cursor (protocol.binform): asked for in hello, granted in
        # welcome; then both ends may use it. ``sizes``: each share's size as the last binary
        # frame received with a size said (a binary frame may leave it out); the sharer's
        # under None. ``sent_size``: the same for the binary frames we sent.
        self.binary = False
        self._bin_asked = False
        self._sizes: dict[int | None, tuple[int, int]] = {}
        self._sent_size: tuple[int, int] | None = None  # the size our last frame said
        # Deflated binary frames (protocol.deflate): asked for in hello ("deflate": 1, with
        # "bin": 1), granted in welcome; then both ends may send them. Our compressor is made
        # at our first deflated frame (COMPRESSOR_BYTES): on the server, for viewers only.
        self.deflate = False
        self._deflate_asked = False
        self._deflater: Deflater | None = None
        self.inflated = 0  # deflated frames received

    # -- receiving ---------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> Iterator[Message]:
        """Parse what arrived and yield its messages one at a time. Raises
        RemoteProtocolError when the peer broke the protocol; the caller then sends
        :meth:`error` with ``fatal=True`` and closes.

        Each message is checked against the state when it is taken, not when it arrived, so
        a client may send requests right behind its hello: by the time they are taken the
        server has accepted the hello (or refused it, and closed).

        Server side, once open: a request of a known type whose fields are wrong is yielded
        as a Message with ``refused`` set (and only its rid/cid as fields): the caller
        answers it with a non-fatal error and the connection goes on. Only a broken stream
        (framing, JSON, no or an unknown type, a bad request id, the handshake) raises.
        """
        frames = self._decoder.feed(data)
        for frame in frames:
            if self.state is State.CLOSED:
                return
            if frame.binary:
                self._complete(frame)
                if frame.deflated:
                    if not self.deflate:
                        raise RemoteProtocolError(
                            ErrorCode.BAD_FRAME,
                            "a deflated frame, but the handshake did not agree on it")
                    self.inflated += 1
            try:
                msg = parse_message(frame, self._inbound, self.limits)
            except RequestError as exc:
                if not self._refusable(exc):
                    raise
                yield Message(exc.request, exc.ids, refused=exc)
                continue
            self._on_receive(msg)
            yield msg
        if self._decoder.error is not None and self.state is not State.CLOSED:
            # valid frames came first, then a broken one: report it now, not on the next read
            raise self._decoder.error

    def _complete(self, frame: Frame) -> None:
        """A binary frame: allowed only once agreed. Without its size, it has the size of
        the last binary frame of its share that had one, refused or not (none: it lacks w
        and h, as a JSON frame would)."""
        if not self.binary:
            raise RemoteProtocolError(ErrorCode.BAD_FRAME,
                                      "a binary frame, but the handshake did not agree on it")
        header = frame.header
        if header["type"] == "frame":
            share = header.get("share")
            if "w" in header:
                self._sizes[share] = (header["w"], header["h"])
            elif (size := self._sizes.get(share)) is not None:
                header["w"], header["h"] = size

    def _refusable(self, exc: RequestError) -> bool:
        """May this bad request be refused alone? Not in the handshake, where nothing was
        agreed yet, nor on the client side: a server that sends nonsense is not trusted."""
        return (self.role is Role.SERVER and self.state is State.OPEN
                and exc.request != "hello")

    def _on_receive(self, msg: Message) -> None:
        state = self.state
        if state is State.AWAIT_HELLO:
            if msg.type != "hello":
                raise RemoteProtocolError(ErrorCode.UNEXPECTED, "the first message must be hello")
            if msg["v"] not in SUPPORTED_VERSIONS:
                raise RemoteProtocolError(
                    ErrorCode.UNSUPPORTED_VERSION,
                    f"protocol version {msg['v']} is not supported; this server speaks "
                    f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}",
                )
            self._bin_asked = msg.get("bin") == binform.BIN_VERSION
            self._deflate_asked = self._bin_asked and msg.get("deflate") == DEFLATE_VERSION
            self.state = State.HELLO_RECEIVED
        elif state is State.HELLO_RECEIVED:
            raise RemoteProtocolError(ErrorCode.UNEXPECTED, "wait for welcome before sending")
        elif state is State.AWAIT_WELCOME:
            if msg.type == "welcome":
                self.state = State.OPEN
                self.binary = self._bin_asked and msg.get("bin") == binform.BIN_VERSION
                self.deflate = (self.binary and self._deflate_asked
                                and msg.get("deflate") == DEFLATE_VERSION)
            elif msg.type != "error":
                raise RemoteProtocolError(ErrorCode.UNEXPECTED, "expected welcome")
        elif msg.type == "hello":
            raise RemoteProtocolError(ErrorCode.UNEXPECTED, "hello was already received")

    # -- sending -----------------------------------------------------------------------

    def send(self, type_: str, payload: bytes | memoryview = b"", **fields: Any) -> bytes:
        """Encode a message. Raises LocalProtocolError if our state does not allow it."""
        if self.state is State.CLOSED:
            raise LocalProtocolError(ErrorCode.UNEXPECTED, "connection is closed")
        if self.role is Role.CLIENT:
            if self.state is State.AWAIT_WELCOME and type_ != "hello":
                raise LocalProtocolError(ErrorCode.UNEXPECTED, "send hello first")
        elif self.state is not State.OPEN and type_ not in ("welcome", "error"):
            raise LocalProtocolError(ErrorCode.UNEXPECTED, f"cannot send {type_} before welcome")
        if type_ == "welcome":
            if self.state is not State.HELLO_RECEIVED:
                raise LocalProtocolError(ErrorCode.UNEXPECTED, "welcome only answers a hello")
            self._grant_binary(fields)
            self.state = State.OPEN
        elif type_ == "hello" and fields.get("bin") == binform.BIN_VERSION:
            self._bin_asked = True  # the server's frames may come in it right behind welcome
            self._decoder.binary = functools.partial(binform.decode_body, share=True)
            if fields.get("deflate") == DEFLATE_VERSION:
                self._deflate_asked = True  # (deflated frames too, right behind welcome)
                self._decoder.inflate = Inflater(self.limits.max_frame - 4).body
        elif self.binary and type_ in ("frame", "cursor"):
            return self._send_binary(type_, payload, fields)
        return encode_frame({"type": type_, **fields}, payload)

    def _grant_binary(self, welcome: dict[str, Any]) -> None:
        if "bin" not in welcome:
            return
        if not self._bin_asked or welcome["bin"] != binform.BIN_VERSION:
            raise LocalProtocolError(ErrorCode.INTERNAL, "bin in welcome, not asked for")
        self.binary = True
        self._decoder.binary = functools.partial(binform.decode_body, share=False)
        if "deflate" in welcome:
            if not self._deflate_asked or welcome["deflate"] != DEFLATE_VERSION:
                raise LocalProtocolError(ErrorCode.INTERNAL, "deflate in welcome, not asked for")
            self.deflate = True
            self._decoder.inflate = Inflater(MAX_CLIENT_BODY).body

    def deflated(self, data: bytes) -> bytes:
        """Once ``deflate`` is agreed: a binary frame on the wire (as :meth:`send` or
        ``binform`` made it) as a deflated frame, through this connection's one compressor.
        Frames must then be sent in the order they were deflated."""
        if not self.deflate:
            raise LocalProtocolError(ErrorCode.INTERNAL, "deflate was not agreed")
        if self._deflater is None:
            self._deflater = Deflater()
        return self._deflater.wire(data)

    def _send_binary(self, type_: str, payload: bytes | memoryview,
                     fields: dict[str, Any]) -> bytes:
        """A client's frame or cursor in the binary form (a cursor with a picture stays
        JSON). A frame says its size when it is a key frame or another than the last binary
        frame said."""
        share = fields.get("share") if self.role is Role.SERVER else None
        if type_ == "cursor":
            if payload or "w" in fields:
                return encode_frame({"type": type_, **fields}, payload)
            try:
                return binform.cursor_bytes(fields["x"], fields["y"], share)
            except (KeyError, ValueError, TypeError) as exc:
                raise LocalProtocolError(ErrorCode.INTERNAL,
                                         f"cannot encode a binary cursor: {exc!r}") from None
        size = (fields["w"], fields["h"])
        try:
            data = binform.frame_from_fields({"share": share, **fields}, payload,
                                             size=fields["key"] or size != self._sent_size,
                                             share=share is not None)
        except (KeyError, ValueError, TypeError) as exc:
            raise LocalProtocolError(ErrorCode.INTERNAL,
                                     f"cannot encode a binary frame: {exc!r}") from None
        self._sent_size = size
        if (self.deflate and self.role is Role.CLIENT and len(data) - 8 <= MAX_CLIENT_BODY
                and all((r["enc"] if isinstance(r, dict) else r.enc) in LOSSLESS
                        for r in fields["rects"])):
            return self.deflated(data)  # (a sharer's small lossless frame)
        return data

    def accept(self, **fields: Any) -> bytes:
        """Server side: complete the handshake."""
        if self.state is not State.HELLO_RECEIVED:
            raise LocalProtocolError(ErrorCode.UNEXPECTED, "accept() needs a received hello")
        return self.send("welcome", v=PROTOCOL_VERSION, **fields)

    def error(
        self, code: ErrorCode | str, message: str, *, fatal: bool = False, **extra: Any
    ) -> bytes:
        """An error frame; ``extra`` may say which request failed (``re``, ``cid``)."""
        header = {"type": "error", "code": str(code), "message": message, "fatal": fatal}
        data = encode_frame({**header, **extra})
        if fatal:
            self.state = State.CLOSED
        return data

    def close(self) -> None:
        self.state = State.CLOSED
