"""One client connection (chat or screen port): the asyncio adapter around the protocol core."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable
from typing import Any

from chatscreen.errors import ConnectError, ErrorCode, RemoteProtocolError, ServerError
from chatscreen.protocol import PROTOCOL_VERSION, Connection, Limits, Message, Role

CLIENT_LIMITS = Limits(max_frame=256 << 20, max_header=16 << 20, max_text=1 << 20)
READ_CHUNK = 1 << 18

#: Errors after which reconnecting cannot help.
FINAL_CODES = frozenset({
    ErrorCode.NAME_TAKEN, ErrorCode.INVALID_NAME, ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.REPLACED, ErrorCode.BAD_TOKEN,
})


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

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = 10.0, **hello: Any) -> Link:
        where = f"{host}:{port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=READ_CHUNK), timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"Failed to connect to {where}: {describe_os_error(exc)}") from None
        conn = Connection(Role.CLIENT, CLIENT_LIMITS)
        fields = {k: v for k, v in hello.items() if v is not None}
        writer.write(conn.send("hello", v=PROTOCOL_VERSION, client="chatscreen", **fields))
        try:
            welcome, early = await asyncio.wait_for(cls._await_welcome(reader, conn), timeout)
        except ServerError as exc:
            writer.close()
            raise ConnectError(exc.message) from exc
        except (OSError, TimeoutError, RemoteProtocolError) as exc:
            writer.close()
            raise ConnectError(f"Failed to connect to {where}: {describe_os_error(exc)}") from None
        return cls(reader, writer, conn, welcome, early)

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

    def start(self, on_message: Callable[[Message], None],
              on_close: Callable[[BaseException | None], None]) -> None:
        self._task = asyncio.create_task(self._read_loop(on_message, on_close))

    async def _read_loop(self, on_message: Callable[[Message], None],
                         on_close: Callable[[BaseException | None], None]) -> None:
        reason: BaseException | None = None
        loop = asyncio.get_running_loop()
        early, self._early = self._early, []
        for msg in early:
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
