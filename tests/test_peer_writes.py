"""How a chat peer hands frames to its transport, on a real loopback connection: the first
frame due in a turn of the event loop is written at once, any more due in the same turn go
out together in one write at the end of the turn, a long batch goes out in pieces, and the
stream arrives whole and in order."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from chatscreen.protocol import Limits, Message
from chatscreen.server.peer import WRITE_CHUNK, Peer, SendBuffers

TIMEOUT = 10.0


class Nobody:
    """Service and registry for a peer that only sends."""

    def handle(self, peer: Peer, msg: Message) -> None: ...

    def on_writable(self, peer: Peer) -> None: ...

    def on_lost(self, peer: Peer) -> None: ...

    def peer_opened(self, peer: Peer) -> None: ...

    def peer_ready(self, peer: Peer) -> None: ...

    def peer_closed(self, peer: Peer) -> None: ...


class CountingTransport:
    """The real transport, with a record of the bytes of every ``write``."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, n - len(got)), TIMEOUT)
        assert chunk, "connection closed early"
        got += chunk
    return got


def loops() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    """The server's event loops: uvloop where it is installed, and asyncio's own."""
    out: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency on Linux
        return out
    return [*out, uvloop.new_event_loop]


@pytest.mark.parametrize("new_loop", loops(), ids=lambda f: f.__module__.split(".")[0])
def test_first_frame_of_a_turn_goes_at_once_and_the_rest_in_one_write(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        buffers = SendBuffers(budget=None, min_cut=16 << 10)
        opened: asyncio.Future[Peer] = loop.create_future()
        nobody = Nobody()

        def factory() -> Peer:
            peer = Peer("chat", nobody, nobody, Limits(max_frame=1 << 16, max_header=1 << 16),
                        write_limits=(16 << 10, 4 << 10), slow_limit=None, buffers=buffers)
            if not opened.done():
                loop.call_soon(opened.set_result, peer)
            return peer

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        client.setblocking(False)
        try:
            peer = await asyncio.wait_for(opened, TIMEOUT)
            spy = CountingTransport(peer._transport)
            peer._transport = spy  # type: ignore[assignment]

            async def one_turn(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
                """Send the frames in one callback; the writes made by its end, and by the
                end of the turn."""
                during: list[bytes] = []
                turn_ended = asyncio.Event()

                def send() -> None:
                    spy.writes.clear()
                    for data in frames:
                        peer.send_bytes(data)
                    during.extend(spy.writes)
                    loop.call_soon(turn_ended.set)  # runs after the end-of-turn flush

                loop.call_soon(send)
                await asyncio.wait_for(turn_ended.wait(), TIMEOUT)
                return during, list(spy.writes)

            # the first goes straight to the transport, the rest wait for the turn's end
            assert await one_turn([b"first.", b"second.", b"third."]) == (
                [b"first."], [b"first.", b"second.third."])
            assert await read_exactly(loop, client, 19) == b"first.second.third."
            # the next turn starts afresh: its first frame goes at once again
            assert await one_turn([b"fourth.", b"fifth."]) == (
                [b"fourth."], [b"fourth.", b"fifth."])
            assert await read_exactly(loop, client, 13) == b"fourth.fifth."
            # a long batch is never written whole: the queue hands it on in pieces
            batch = bytes(range(256)) * (WRITE_CHUNK * 3 // 256)
            during, writes = await one_turn([batch])
            assert during == [] and b"".join(writes) == batch
            assert all(len(w) <= WRITE_CHUNK for w in writes)
            assert await read_exactly(loop, client, len(batch)) == batch
            assert buffers.total == 0  # nothing left queued or buffered
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    loop = new_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), TIMEOUT * 3))
    finally:
        loop.close()
