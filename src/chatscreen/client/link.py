"""One client connection (chat or screen port): the asyncio adapter around the protocol core."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatscreen.errors import ConnectError, ErrorCode, RemoteProtocolError, ServerError
from chatscreen.protocol import PROTOCOL_VERSION, Connection, Limits, Message, Role
from chatscreen.tls import (
    KnownHosts,
    changed_certificate_message,
    fingerprint,
    pinning_context,
    verifying_context,
    wrong_fingerprint_message,
)

CLIENT_LIMITS = Limits(max_frame=256 << 20, max_header=16 << 20, max_text=1 << 20)
READ_CHUNK = 1 << 18

#: Errors after which reconnecting cannot help.
FINAL_CODES = frozenset({
    ErrorCode.NAME_TAKEN, ErrorCode.INVALID_NAME, ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.REPLACED, ErrorCode.BAD_TOKEN, ErrorCode.BAD_PASSWORD, ErrorCode.BANNED,
    ErrorCode.KICKED, ErrorCode.ACCOUNT_REQUIRED,
})


@dataclass(frozen=True)
class TLSOptions:
    """How a client checks the server: by ``fingerprint`` if given (then pinned, first
    contact included), else by ``ca`` (and the host name), else by the system's trust store
    or, failing that, by the fingerprint pinned in ``known_hosts`` (trust on first use)."""

    ca: Path | None = None
    known_hosts: KnownHosts = field(default_factory=KnownHosts)
    fingerprint: str | None = None  # SHA256:AB:..., as tls.fingerprint() gives it


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(host: str, port: int, ctx: ssl.SSLContext | None) -> Stream:
    return await asyncio.open_connection(host, port, limit=READ_CHUNK, ssl=ctx,
                                         server_hostname=host if ctx else None)


async def _open_stream(host: str, port: int,
                       tls: TLSOptions | None) -> tuple[asyncio.StreamReader,
                                                        asyncio.StreamWriter, str | None, bool]:
    """Connect, and with TLS authenticate the server. Returns the stream, the certificate's
    fingerprint and whether it was pinned just now."""
    if tls is None:
        return (*await _connect(host, port, None), None, False)
    where = f"{host}:{port}"
    if tls.fingerprint is not None:
        return await _open_expected(host, port, tls, tls.fingerprint)
    if tls.ca is not None:
        try:
            reader, writer = await _connect(host, port, verifying_context(tls.ca))
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(f"Failed to connect to {where}: its certificate is not trusted "
                               f"by {tls.ca}: {exc.verify_message}") from None
        return reader, writer, _peer_fingerprint(writer), False
    pinned = tls.known_hosts.get(where)
    if pinned is None:
        with contextlib.suppress(ssl.SSLCertVerificationError):
            reader, writer = await _connect(host, port, verifying_context(None))
            return reader, writer, _peer_fingerprint(writer), False  # a CA-signed certificate
    reader, writer = await _connect(host, port, pinning_context())
    fp = _peer_fingerprint(writer)
    if pinned is None:
        tls.known_hosts.pin(where, fp)
        return reader, writer, fp, True
    if fp != pinned:
        writer.close()
        try:  # a replaced certificate that a CA vouches for is fine
            reader, writer = await _connect(host, port, verifying_context(None))
        except ssl.SSLCertVerificationError:
            raise ConnectError(changed_certificate_message(
                where, pinned, fp, tls.known_hosts.path)) from None
        tls.known_hosts.pin(where, fp)
    return reader, writer, fp, False


async def _open_expected(host: str, port: int, tls: TLSOptions,
                         expected: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                 str, bool]:
    """The certificate must be the one given (the admin's invite, the banner): no trust on
    first use. It is then pinned, replacing any older pin."""
    where = f"{host}:{port}"
    reader, writer = await _connect(host, port, pinning_context())
    fp = _peer_fingerprint(writer)
    if fp != expected:
        writer.close()
        raise ConnectError(wrong_fingerprint_message(where, expected, fp))
    new = tls.known_hosts.get(where) != fp
    if new:
        tls.known_hosts.pin(where, fp)
    return reader, writer, fp, new


def _peer_fingerprint(writer: asyncio.StreamWriter) -> str:
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return fingerprint(der)


def describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class Link:
    """A logged-in connection. ``on_message`` gets every validated message after the welcome;
    ``on_close`` gets the reason (a ServerError for a fatal error frame, else an OSError/None)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: Connection, welcome: Message, early: list[Message]) -> None:
        self.reader = reader
        self._early = early  # messages that arrived in the same read as the welcome
        self.writer = writer
        self.conn = conn
        self.welcome = welcome
        self.closed = asyncio.Event()
        self.close_reason: BaseException | None = None
        self.last_rx = asyncio.get_running_loop().time()
        self._task: asyncio.Task[None] | None = None
        self.fingerprint: str | None = None  # the server certificate's, with TLS
        self.pinned_now = False  # True when this connection pinned it (first contact)

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = 10.0,
                   tls: TLSOptions | None = None, *, limits: Limits = CLIENT_LIMITS,
                   **hello: Any) -> Link:
        """Connect and log in (``hello`` fields); ``limits``: what the server may send."""
        where = f"{host}:{port}"
        try:
            reader, writer, fp, pinned = await asyncio.wait_for(
                _open_stream(host, port, tls), timeout)
        except ssl.SSLError as exc:
            raise ConnectError(f"Failed to connect to {where}: TLS failed ({exc.reason}); "
                               "is it a chatscreen server with TLS? (--no-tls if it has "
                               "none)") from None
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"Failed to connect to {where}: {describe_os_error(exc)}") from None
        conn = Connection(Role.CLIENT, limits)
        fields = {k: v for k, v in hello.items() if v is not None}
        writer.write(conn.send("hello", v=PROTOCOL_VERSION, client="chatscreen", **fields))
        try:
            welcome, early = await asyncio.wait_for(cls._await_welcome(reader, conn), timeout)
        except ServerError as exc:
            writer.close()
            raise ConnectError(exc.message) from exc
        except (OSError, TimeoutError, RemoteProtocolError) as exc:
            writer.close()
            hint = " (does the server use TLS? then leave out --no-tls)" if (
                tls is None and isinstance(exc, ConnectionResetError)) else ""
            raise ConnectError(f"Failed to connect to {where}: {describe_os_error(exc)}"
                               f"{hint}") from None
        link = cls(reader, writer, conn, welcome, early)
        link.fingerprint, link.pinned_now = fp, pinned
        return link

    @staticmethod
    async def _await_welcome(reader: asyncio.StreamReader,
                             conn: Connection) -> tuple[Message, list[Message]]:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            msgs = list(conn.receive_data(data))
            for i, msg in enumerate(msgs):
                if msg.type == "welcome":
                    return msg, msgs[i + 1 :]
                if msg.type == "error":
                    raise ServerError(msg["code"], msg["message"])

    def take_early(self) -> list[Message]:
        """The messages that came in the same read as the welcome, once: for whoever reads
        this link (``start``, or a reader of its own such as client.files')."""
        early, self._early = self._early, []
        return early

    def start(self, on_message: Callable[[Message], None],
              on_close: Callable[[BaseException | None], None]) -> None:
        self._task = asyncio.create_task(self._read_loop(on_message, on_close))

    async def _read_loop(self, on_message: Callable[[Message], None],
                         on_close: Callable[[BaseException | None], None]) -> None:
        reason: BaseException | None = None
        loop = asyncio.get_running_loop()
        for msg in self.take_early():
            on_message(msg)
        try:
            while True:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    reason = ConnectionResetError("the server closed the connection")
                    break
                self.last_rx = loop.time()
                for msg in self.conn.receive_data(data):
                    if msg.type == "ping":
                        self.send("pong", **msg.fields)
                    elif msg.type == "error" and msg.get("fatal"):
                        reason = ServerError(msg["code"], msg["message"])
                    else:
                        on_message(msg)
                if reason is not None:
                    break
        except (OSError, RemoteProtocolError) as exc:
            reason = exc
        except asyncio.CancelledError:
            reason = None
        finally:
            self.close_reason = reason
            self.writer.close()
            self.closed.set()
            on_close(reason)

    def send(self, type_: str, **fields: Any) -> None:
        self.send_with_payload(type_, b"", **fields)

    def send_with_payload(self, type_: str, payload: bytes | memoryview, **fields: Any) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("not connected")
        self.writer.write(self.conn.send(type_, payload, **fields))

    async def drain(self) -> None:
        await self.writer.drain()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        else:
            self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
