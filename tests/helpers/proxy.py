"""A TCP proxy on loopback, run on the test's event loop, that can cut its connections."""

from __future__ import annotations

import asyncio
import contextlib
import random


class CuttableProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.lose_downstream = False  # drop what the server sends: lost in flight

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))
        a = asyncio.create_task(self._pipe(reader, up_writer))
        b = asyncio.create_task(self._pipe(up_reader, writer, downstream=True))
        self._tasks.update((a, b))
        await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    downstream: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if downstream and self.lose_downstream:
                    continue
                writer.write(data)
                await writer.drain()

    def cut(self) -> None:
        """Drop every connection at once (both directions), as a network failure would."""
        for w in list(self._writers):
            transport = w.transport
            transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in self._tasks:
            t.cancel()



class FlakyProxy(CuttableProxy):
    """Forwards in random small pieces, with random small delays, and cuts every connection
    after a random number of bytes (so mostly in the middle of a frame). Seeded: the same
    seed gives the same faults."""

    def __init__(self, target_port: int, *, seed: int, cut_after: tuple[int, int],
                 max_delay: float = 0.002) -> None:
        super().__init__(target_port)
        self._rng = random.Random(seed)
        self._cut_after = cut_after
        self._max_delay = max_delay
        self.cuts = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))
        budget = [self._rng.randint(*self._cut_after)]  # bytes left before the cut, both ways
        a = asyncio.create_task(self._flaky_pipe(reader, up_writer, budget))
        b = asyncio.create_task(self._flaky_pipe(up_reader, writer, budget))
        self._tasks.update((a, b))
        await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            w.transport.abort()

    async def _flaky_pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          budget: list[int]) -> None:
        rng = self._rng
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                while data:
                    size = min(rng.randint(1, 4096), len(data))
                    if size >= budget[0]:
                        writer.write(data[: budget[0]])  # the cut lands mid-frame
                        self.cuts += 1
                        return
                    budget[0] -= size
                    writer.write(data[:size])
                    data = data[size:]
                    if rng.random() < 0.1:
                        await asyncio.sleep(rng.uniform(0, self._max_delay))  # a late packet
                await writer.drain()
