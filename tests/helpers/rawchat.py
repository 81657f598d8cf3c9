"""A chat connection spoken by hand from a chosen loopback address (127.0.0.2 ...: another
machine, as far as the server can tell), for tests of what the server does per address."""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
from collections.abc import Callable
from typing import Any

from tests.helpers.server import TIMEOUT, ServerProcess, frame


class RawChat:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.answer: dict[str, Any] = {}  # the answer to the hello: welcome or an error

    @classmethod
    async def login(cls, srv: ServerProcess, user: str, password: str | None = None, *,
                    source: str = "127.0.0.2", **hello: Any) -> RawChat:
        """Connect from ``source``, send a hello and read its answer (``answer``)."""
        ctx: ssl.SSLContext | None = None
        if srv.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", srv.chat_port, ssl=ctx, local_addr=(source, 0))
        conn = cls(reader, writer)
        fields = {"type": "hello", "v": 1, "user": user, **hello}
        if password is not None:
            fields["password"] = password
        conn.send(fields)
        try:
            conn.answer = await conn.read()
        except BaseException:  # cancelled: do not leave the connection behind
            writer.close()
            raise
        return conn

    @property
    def welcomed(self) -> bool:
        return self.answer.get("type") == "welcome"

    def send(self, header: dict[str, Any]) -> None:
        self.writer.write(frame(header))

    async def read(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame's header; {"type": "closed"} when the server closed."""
        async with asyncio.timeout(timeout):
            try:
                body, hlen = struct.unpack(">II", await self.reader.readexactly(8))
                rest = await self.reader.readexactly(body - 4)
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                return {"type": "closed"}
        header: dict[str, Any] = json.loads(rest[:hlen])
        return header

    async def until(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first header that satisfies ``pred`` (or the connection's end)."""
        while True:
            header = await self.read()
            if pred(header) or header["type"] == "closed":
                return header

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(TIMEOUT):
                await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass


async def login_answer(srv: ServerProcess, user: str, password: str | None = None, *,
                       source: str = "127.0.0.2", **hello: Any) -> dict[str, Any]:
    """Log in from ``source`` and log out again; the server's answer to the hello."""
    conn = await RawChat.login(srv, user, password, source=source, **hello)
    await conn.close()
    return conn.answer
