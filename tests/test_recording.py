"""Recording a share (issue 18): who may record, what the sharer is told, and the MP4.

The protocol part with library clients against the real server; the recordings with real
CLI processes (``chatscreen view --record``, ``chatscreen share --record``) on Xvfb, the
typing workload of bench/screen_workloads.py on the screen, decoded back with PyAV.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from chatscreen.client import Client, ScreenChannel
from chatscreen.errors import ServerError
from tests.helpers.server import TIMEOUT, ServerProcess, run, wait_for


def connect(srv: ServerProcess, user: str) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT)


async def listed(c: Client, check: Callable[[], bool]) -> None:
    """Until ``check`` holds of the client's state (e.g. its share list), event by event."""
    if not check():
        await wait_for(c, lambda _m: check())


class Told:
    """What a sharer's channel was told of who records, each change waking the test."""

    def __init__(self, screen: ScreenChannel) -> None:
        self.lists: list[list[str]] = []
        self.changed = asyncio.Event()
        self.screen = screen
        screen.on_recording = self._on

    def _on(self, users: list[str]) -> None:
        self.lists.append(list(users))
        self.changed.set()

    async def until(self, users: list[str]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.screen.recorders != users:
                self.changed.clear()
                await self.changed.wait()


async def watching(c: Client, sharer: str) -> tuple[ScreenChannel, int]:
    await listed(c, lambda: c.share_of(sharer) is not None)
    share = c.share_of(sharer)
    assert share is not None
    screen = await c.open_screen()
    await screen.watch(share["id"])
    return screen, share["id"]


def test_only_viewers_the_sharer_allows_may_record_and_the_sharer_is_told(
        server: ServerProcess) -> None:
    """A viewer the sharer did not name gets a non-fatal ``forbidden`` (and can still
    watch); a named one records, the sharer gets ``recording`` with its name, every client
    sees ``recording: true`` in the share list; when the recorder stops, disconnects or
    unwatches, the sharer is told (an empty list) and the mark goes."""
    async def scenario() -> None:
        alice, bob, carol = [await connect(server, n).connect()
                             for n in ("alice", "bob", "carol")]
        a_screen = await alice.open_screen()
        told = Told(a_screen)
        try:
            share_id = await a_screen.share(64, 64, may_record=["bob"])
            c_screen, _ = await watching(carol, "alice")
            with pytest.raises(ServerError) as refused:
                await c_screen.record(share_id)
            assert refused.value.code == "forbidden"
            assert refused.value.message == "alice does not allow carol to record this share"
            b_screen, _ = await watching(bob, "alice")
            assert await b_screen.record(share_id) == ["bob"]
            await told.until(["bob"])
            await listed(carol, lambda: (carol.share_of("alice") or {}).get("recording") is True)
            assert await b_screen.record(share_id, active=False) == []
            await told.until([])  # the sharer is told it stopped
            await listed(carol, lambda: "recording" not in (carol.share_of("alice") or {}))
            assert await b_screen.record(share_id) == ["bob"]
            await told.until(["bob"])
            await b_screen.close()  # the recorder's connection goes: the recording ends
            await told.until([])
            assert told.lists == [["bob"], [], ["bob"], []]
            await c_screen.close()
        finally:
            await a_screen.close()
            for c in (alice, bob, carol):
                await c.close()

    run(scenario())


def test_recording_needs_watching_and_everyone_may_when_the_sharer_says_all(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        alice, bob = [await connect(server, n).connect() for n in ("alice", "bob")]
        a_screen = await alice.open_screen()
        told = Told(a_screen)
        try:
            share_id = await a_screen.share(64, 64, may_record="all")
            await listed(bob, lambda: bob.share_of("alice") is not None)
            b_screen = await bob.open_screen()
            with pytest.raises(ServerError) as not_watching:
                await b_screen.record(share_id)
            assert not_watching.value.code == "not_watching"
            with pytest.raises(ServerError) as no_share:
                await b_screen.record(share_id + 100)
            assert no_share.value.code == "no_such_share"
            await b_screen.watch(share_id)
            assert await b_screen.record(share_id) == ["bob"]
            await told.until(["bob"])
            await b_screen.unwatch(share_id)
            await told.until([])  # unwatching ends the recording
            await b_screen.close()
        finally:
            await a_screen.close()
            for c in (alice, bob):
                await c.close()

    run(scenario())
