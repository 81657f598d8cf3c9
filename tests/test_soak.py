"""A soak: clients keep joining, chatting and leaving; the server must not grow.

`make test` runs it for 60 s; `make soak` for 10 minutes (CHATSCREEN_SOAK_SECONDS=600).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from pathlib import Path

from chatscreen.client import Client
from tests.helpers.server import TIMEOUT, running_server

SOAK_SECONDS = float(os.environ.get("CHATSCREEN_SOAK_SECONDS", "60"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_soak_clients_come_and_go_without_growth(tmp_path: Path) -> None:
    rng = random.Random(1)
    names = (f"u{i}" for i in itertools.count())

    async def session(port: int, stay: float) -> int:
        """One short-lived client: join a room, talk, leave. Returns messages confirmed."""
        async with Client("127.0.0.1", next(names), chat_port=port, timeout=TIMEOUT,
                          reconnect=False) as c:
            room = rng.choice(["general", "dev", "random"])
            await c.join(room)
            loop = asyncio.get_running_loop()
            end = loop.time() + stay
            sent = 0
            while loop.time() < end:
                await c.say(room, "soak " * rng.randint(1, 40))
                sent += 1
                await asyncio.sleep(rng.uniform(0.01, 0.05))  # the workload's pace
            return sent

    async def wave(port: int, until: float) -> int:
        total = 0
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            results = await asyncio.gather(*(session(port, rng.uniform(0.2, 1.0))
                                              for _ in range(20)))
            total += sum(results)
        return total

    with running_server(tmp_path / "d") as srv:
        assert srv.proc is not None
        pid = srv.proc.pid

        async def run() -> tuple[int, int, int, int, int]:
            loop = asyncio.get_running_loop()
            warm = SOAK_SECONDS * 0.5  # TLS state settles over the first ~1000 sessions
            await wave(srv.chat_port, loop.time() + warm)  # caches, SQLite pages, allocator
            rss0, fds0 = rss_kb(pid), open_fds(pid)
            sent = await wave(srv.chat_port, loop.time() + SOAK_SECONDS - warm)
            # every session has ended: wait (bounded) for the server to see them all go
            deadline = loop.time() + TIMEOUT
            while open_fds(pid) > fds0 and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling /proc with a deadline: nothing to await
            return rss0, rss_kb(pid), fds0, open_fds(pid), sent

        rss0, rss1, fds0, fds1, sent = asyncio.run(run())
    assert sent > 100 * SOAK_SECONDS / 60
    assert fds1 <= fds0, (fds0, fds1)
    # a bounded server: a few MB of noise, not growth with the number of sessions/messages
    assert rss1 - rss0 < 16 * 1024, (rss0, rss1, sent)
