"""The thin asyncio adapter between a TCP connection and the protocol core.

A :class:`Peer` feeds received bytes to a :class:`~chatscreen.protocol.Connection`, hands the
validated messages to its service (chat or screen) and writes what the service sends. Writes
never block: they go to the transport's buffer. What happens when that buffer grows is the
service's choice: chat peers are disconnected as too slow past ``slow_limit``; screen viewers
get paused (``writable`` goes false) and the relay keeps only the newest picture for them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol import Connection, Limits, Message, Role, State

if TYPE_CHECKING:
    from chatscreen.server.session import Session

log = logging.getLogger("chatscreen.server")

CLOSE_GRACE = 2.0  # seconds a closing transport may take to flush before it is aborted


class Service(Protocol):
    def handle(self, peer: Peer, msg: Message) -> None:
        """Handle one validated message; may raise RemoteProtocolError."""

    def on_writable(self, peer: Peer) -> None: ...

    def on_lost(self, peer: Peer) -> None: ...


class PeerRegistry(Protocol):
    def peer_opened(self, peer: Peer) -> None: ...

    def peer_closed(self, peer: Peer) -> None: ...


class Peer(asyncio.Protocol):
    def __init__(
        self,
        kind: str,
        service: Service,
        registry: PeerRegistry,
        limits: Limits,
        *,
        write_limits: tuple[int, int],
        slow_limit: int | None,
    ) -> None:
        self.kind = kind
        self.service = service
        self.registry = registry
        self.conn = Connection(Role.SERVER, limits)
        self.session: Session | None = None
        self.addr = "?"
        self.writable = True
        self.closing = False
        self._write_limits = write_limits
        self._slow_limit = slow_limit
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.opened_at = self.last_rx = self._loop.time()
        self.ping_sent = False

    def __repr__(self) -> str:
        who = self.session.name if self.session else "-"
        return f"<{self.kind} peer {who}@{self.addr}>"

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.addr = f"{peer[0]}:{peer[1]}"
        high, low = self._write_limits
        transport.set_write_buffer_limits(high=high, low=low)
        self.registry.peer_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_rx = self._loop.time()
        self.ping_sent = False
        try:
            for msg in self.conn.receive_data(data):
                if self.closing:
                    return
                if msg.type == "ping":
                    self.send("pong", **msg.fields)
                elif msg.type != "pong":
                    self.service.handle(self, msg)
        except RemoteProtocolError as exc:
            log.info("%r: protocol error %s: %s", self, exc.code, exc.message)
            self.fail(exc.code, exc.message)
        except Exception:
            log.exception("%r: internal error", self)
            self.fail(ErrorCode.INTERNAL, "internal server error")

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if not self.closing:
            self.service.on_writable(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.conn.close()
        self.registry.peer_closed(self)
        self.service.on_lost(self)

    # -- sending -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.conn.state is State.OPEN and not self.closing

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0

    def send_bytes(self, data: bytes) -> None:
        if self.closing or self._transport is None:
            return
        self._transport.write(data)
        limit = self._slow_limit
        if limit is not None and self._transport.get_write_buffer_size() > limit:
            self.fail(ErrorCode.TOO_SLOW, "too slow: you are not reading what the server sends")

    def send(self, type_: str, **fields: Any) -> None:
        if not self.closing:
            self.send_bytes(self.conn.send(type_, **fields))

    def accept(self, **fields: Any) -> None:
        self.send_bytes(self.conn.accept(**fields))

    def error(self, code: ErrorCode | str, message: str, **extra: Any) -> None:
        """A non-fatal error: the request failed (``re``: which, ``cid``: its client id)."""
        if not self.closing and self._transport is not None:
            self._transport.write(self.conn.error(code, message, **extra))

    def fail(self, code: ErrorCode | str, message: str) -> None:
        """Tell the peer why, then close. Idempotent."""
        if self.closing or self._transport is None:
            return
        self.closing = True
        transport = self._transport
        if not transport.is_closing():
            transport.write(self.conn.error(code, message, fatal=True))
            transport.close()  # flushes what is buffered, then closes
            self._loop.call_later(CLOSE_GRACE, transport.abort)
        self.conn.close()

    def abort(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.abort()

    def is_closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()
