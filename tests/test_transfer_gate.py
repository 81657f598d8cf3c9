"""The transfer gate (server/transfergate.py): uploads' links are not read, and downloads
wait, while the event loop is busy with other work; they go on once it is idle again."""

from __future__ import annotations

import asyncio
import time

from chatscreen.server.transfergate import TransferGate


class Link:
    def __init__(self) -> None:
        self.held = False
        self.changes: list[bool] = []
        self.changed = asyncio.Event()

    def hold_transfer(self) -> None:
        assert not self.held
        self.held = True
        self.changes.append(True)
        self.changed.set()

    def release_transfer(self) -> None:
        assert self.held
        self.held = False
        self.changes.append(False)
        self.changed.set()

    async def becomes(self, held: bool) -> None:
        async with asyncio.timeout(10):
            while self.held != held:
                self.changed.clear()
                await self.changed.wait()


def busy(seconds: float) -> None:
    """Other work on the loop (chat fan-out, screen frames): it holds the loop this long."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_busy_loop_closes_the_gate_and_an_idle_one_opens_it() -> None:
    async def scenario() -> None:
        gate = TransferGate(probe=0.005, lag_max=0.002, pause=0.01)
        link = Link()
        gate.add(link)
        assert gate.is_open and not link.held
        loop = asyncio.get_running_loop()
        loop.call_soon(busy, 0.05)  # the loop is busy past the gate's next look
        await link.becomes(held=True)
        assert not gate.is_open and gate.closes >= 1
        await link.becomes(held=False)  # idle again: the link is read again
        assert gate.is_open and link.changes[:2] == [True, False]
        # a link added while the gate is closed is held at once, released with the others
        loop.call_soon(busy, 0.05)
        await link.becomes(held=True)
        late = Link()
        gate.add(late)
        assert late.held
        await link.becomes(held=False)
        assert not late.held and gate.is_open
        gate.discard(link)
        gate.discard(late)
        gate.stop()

    asyncio.run(scenario())


def test_a_download_waits_while_the_gate_is_closed_and_the_gate_stops_looking_when_idle(
) -> None:
    async def scenario() -> None:
        gate = TransferGate(probe=0.005, lag_max=0.002, pause=0.01)
        gate.download_started()
        link = Link()  # an upload's link too: it shows when the gate closes
        gate.add(link)
        stopped = asyncio.Event()
        original = gate._tick

        def tick() -> None:
            original()
            if gate._timer is None:
                stopped.set()

        gate._tick = tick  # type: ignore[method-assign]
        asyncio.get_running_loop().call_soon(busy, 0.05)
        await link.becomes(held=True)
        waiter = asyncio.create_task(gate.opened.wait())
        await asyncio.sleep(0)
        assert not waiter.done()  # the download is held back while the loop is busy
        async with asyncio.timeout(10):
            await waiter
        gate.discard(link)
        gate.download_ended()
        # nothing to gate: the timer stops (no periodic work while no transfer runs)
        async with asyncio.timeout(10):
            await stopped.wait()
        assert gate.is_open and gate._timer is None

    asyncio.run(scenario())


def test_a_discarded_link_is_released_and_no_longer_held() -> None:
    async def scenario() -> None:
        gate = TransferGate(probe=0.005, lag_max=0.002, pause=0.5)
        link = Link()
        gate.add(link)
        asyncio.get_running_loop().call_soon(busy, 0.05)
        await link.becomes(held=True)
        gate.discard(link)  # its upload ended while the gate was closed
        assert not link.held
        gate.stop()
        assert gate.is_open and link.changes == [True, False]

    asyncio.run(scenario())
