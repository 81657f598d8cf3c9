"""The global budget for chat send buffers, on the real server: a reader that stops is cut off
as too slow once the total passes the budget, and the others carry on with nothing lost."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import ssl
import statistics
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatscreen.client import Client
from chatscreen.protocol import Message
from tests.helpers.server import (
    NO_RATE_LIMITS,
    TIMEOUT,
    ServerProcess,
    frame,
    metrics,
    metrics_port,
    raw_socket,
    read_headers_until,
    running_server,
)


def connect(srv: ServerProcess, user: str) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, timeout=TIMEOUT, reconnect=False)


def stalled_reader(srv: ServerProcess, name: str) -> socket.socket:
    """Logs in, joins general, then never reads again (with a tiny receive buffer)."""
    sock = raw_socket(srv, srv.chat_port, rcvbuf=4096)
    sock.sendall(frame({"type": "hello", "v": 1, "user": name}))
    sock.sendall(frame({"type": "join", "room": "general"}))
    return sock


def test_reader_past_the_send_budget_is_cut_and_others_carry_on(tmp_path: Path) -> None:
    # The budget is the only limit that can act here: no flood limits, no limit on how far
    # one client may be behind, and a slow_timeout far longer than the test.
    env = {"CHATSCREEN_SEND_BUDGET": str(512 << 10), "CHATSCREEN_SLOW_TIMEOUT": "3600",
           "CHATSCREEN_SLOW_LIMIT": "0", **NO_RATE_LIMITS}
    with running_server(tmp_path / "d", "--metrics-port", "0", env=env) as srv:
        port = metrics_port(srv)
        assert metrics(port)["chatscreen_send_budget_bytes"] == 512 << 10

        async def scenario() -> None:
            stalled = stalled_reader(srv, "stalled")
            async with connect(srv, "sender") as sender, connect(srv, "reader") as reader:
                await sender.join("general")
                await reader.join("general")
                text = "x" * 3000
                loop = asyncio.get_running_loop()
                got = expected = 0
                sent: list[int] = []
                deadline = loop.time() + 6 * TIMEOUT
                cut = False
                bursts_after_cut = 0
                while bursts_after_cut < 2:  # two more bursts once it is gone
                    assert loop.time() < deadline, "the stalled reader was never cut off"
                    acks = await asyncio.gather(*(sender.say_nowait("general", text)
                                                  for _ in range(50)))
                    sent += [a["id"] for a in acks]
                    expected += 50
                    async with asyncio.timeout(TIMEOUT):  # the reader is never held up
                        while got < expected:
                            ev = await reader.next_event()
                            got += ev.type == "message"
                    m = await asyncio.to_thread(metrics, port)
                    if not cut and m["chatscreen_send_budget_cuts_total"] == 1:
                        cut = True
                        assert m['chatscreen_disconnects_total{reason="too_slow"}'] == 1
                    bursts_after_cut += cut
                stalled.close()
                # nothing lost for those who read: the reader's history has every message
                stored: list[int] = []
                while True:
                    page = await reader.history(room="general", after=stored[-1] if stored
                                                else sent[0] - 1, limit=1000)
                    stored += [x["id"] for x in page["messages"]]
                    if not page["messages"]:
                        break
                assert stored == sent
                assert (await asyncio.to_thread(metrics, port))[
                    "chatscreen_send_budget_cuts_total"] == 1

        asyncio.run(scenario())


def test_a_reader_given_a_reply_larger_than_the_budget_is_not_cut(tmp_path: Path) -> None:
    # A reply can be larger than the whole budget: here a history frame holds one message
    # of 900 kB (a server that allows texts that long), and the budget is 64 KiB. The reader
    # who asked for it is reading it, only not yet: being behind for a moment is not being
    # stalled. (Nor is the sender, handed its own 900 kB echo.)
    env = {"CHATSCREEN_SEND_BUDGET": str(64 << 10), "CHATSCREEN_MAX_TEXT": "900000",
           **NO_RATE_LIMITS}
    with running_server(tmp_path / "d", "--metrics-port", "0", env=env) as srv:
        port = metrics_port(srv)

        async def post() -> list[int]:
            async with connect(srv, "sender") as sender:
                await sender.join("general")
                return [(await sender.say("general", c * 900_000))["id"] for c in "ab"]

        sent = asyncio.run(post())
        # a small receive buffer: what the kernel does not take waits in the server's buffers
        with raw_socket(srv, srv.chat_port, rcvbuf=4096) as sock:
            sock.sendall(frame({"type": "hello", "v": 1, "user": "reader"}))
            got: list[int] = []
            before: dict[str, int] = {}
            while len(got) < len(sent):
                sock.sendall(frame({"type": "history", "room": "general", "rid": "1",
                                    **before}))
                reply = read_headers_until(sock, lambda h: h.get("rid") == "1")[-1]
                got = [m["id"] for m in reply["messages"]] + got
                before = {"before": got[0]}
        assert got == sent
        m = metrics(port)
        assert m["chatscreen_send_budget_cuts_total"] == 0
        assert m.get('chatscreen_disconnects_total{reason="too_slow"}', 0) == 0


class SlowReaders:
    """Readers that keep reading, slowly (a small receive buffer, 4 KiB every 10 ms): never
    stalled, always behind while the room goes faster than they read."""

    def __init__(self, srv: ServerProcess, n: int) -> None:
        self.ended: list[socket.socket] = []  # those whose connection the server closed
        self.socks = [raw_socket(srv, srv.chat_port, rcvbuf=4096) for _ in range(n)]
        for i, sock in enumerate(self.socks):
            sock.sendall(frame({"type": "hello", "v": 1, "user": f"slow{i}"}))
            sock.sendall(frame({"type": "join", "room": "general"}))
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._read, args=(s,), daemon=True)
                        for s in self.socks]
        for t in self.threads:
            t.start()

    def _read(self, sock: socket.socket) -> None:
        try:
            while not self.stop.wait(0.01):  # the reader's pace
                if not sock.recv(4096):
                    break
        except (OSError, ssl.SSLError):
            pass
        if not self.stop.is_set():
            self.ended.append(sock)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(TIMEOUT)
        for sock in self.socks:
            sock.close()


def test_the_budget_bounds_the_send_buffers_under_overload(tmp_path: Path) -> None:
    """A room that goes faster than some of its readers can read (a fan-out past what they
    take): the send buffers' total stays near the budget, however long it goes on, and a
    normal reader gets every message. (The sender is held back for a moment; the slow readers
    that stay behind are cut.)"""
    budget = 1 << 20
    env = {"CHATSCREEN_SEND_BUDGET": str(budget), "CHATSCREEN_SLOW_TIMEOUT": "3600",
           "CHATSCREEN_SLOW_LIMIT": "0", **NO_RATE_LIMITS}
    with running_server(tmp_path / "d", "--metrics-port", "0", env=env) as srv:
        port = metrics_port(srv)

        async def scenario() -> None:
            slow = await asyncio.to_thread(SlowReaders, srv, 8)
            try:
                async with connect(srv, "sender") as sender, connect(srv, "reader") as reader:
                    await sender.join("general")
                    await reader.join("general")
                    got = 0
                    for burst in range(8):
                        await asyncio.gather(*(sender.say_nowait("general", "x" * 3000)
                                               for _ in range(50)))
                        async with asyncio.timeout(TIMEOUT):  # the reader is never held up
                            while got < 50 * (burst + 1):
                                ev = await reader.next_event()
                                got += ev.type == "message"
            finally:
                await asyncio.to_thread(slow.close)
            m = await asyncio.to_thread(metrics, port)
            peak = m["chatscreen_send_buffered_peak_bytes"]
            assert peak <= 2 * budget, f"send buffers reached {peak:.0f} bytes"

        asyncio.run(scenario())


def test_slow_readers_that_read_a_little_do_not_slow_the_room(tmp_path: Path) -> None:
    """Readers that always take a little, never enough (an attacker's few connections), in a
    room that goes faster than they read: the budget's holds must not pace the room to them.
    Those that stay behind are cut as too slow; the members who read (one posting steadily,
    one saying something now and then) keep a quick say -> echo round trip, and the send
    buffers stay bounded. (Before, nobody was cut and the sender's echoes came later and
    later: the room went at the slow readers' pace.)"""
    budget = 1 << 20
    env = {"CHATSCREEN_SEND_BUDGET": str(budget), "CHATSCREEN_SLOW_TIMEOUT": "3600",
           "CHATSCREEN_SLOW_LIMIT": "0", **NO_RATE_LIMITS}
    n_slow = 4
    with running_server(tmp_path / "d", "--metrics-port", "0", env=env) as srv:
        port = metrics_port(srv)

        async def scenario() -> None:
            # 4 KiB every 10 ms each (at most 400 KB/s): they take something all the time
            slow = await asyncio.to_thread(SlowReaders, srv, n_slow)
            try:
                async with connect(srv, "sender") as sender, connect(srv, "fast") as fast:
                    await sender.join("general")
                    await fast.join("general")
                    loop = asyncio.get_running_loop()
                    posted: list[tuple[float, asyncio.Future[Message]]] = []
                    acked: dict[asyncio.Future[Message], float] = {}

                    async def post() -> None:  # 3 kB every 4 ms: 750 KB/s to each member
                        tick = loop.time()
                        while True:
                            fut = sender.say_nowait("general", "x" * 3000)
                            fut.add_done_callback(lambda f: acked.setdefault(f, loop.time()))
                            posted.append((loop.time(), fut))
                            tick += 0.004
                            await asyncio.sleep(max(0.0, tick - loop.time()))  # the pace

                    poster = asyncio.create_task(post())
                    try:
                        deadline = loop.time() + 3 * TIMEOUT  # until they fall behind
                        while (await asyncio.to_thread(metrics, port))[
                                "chatscreen_send_buffered_peak_bytes"] < budget:
                            assert loop.time() < deadline, "the slow readers never fell behind"
                        start = len(posted)
                        rtts: list[float] = []
                        end = loop.time() + 4.0
                        while loop.time() < end:  # what the fast member sees, for 4 s
                            t0 = loop.time()
                            await asyncio.wait_for(fast.say("general", "hi"), 3 * TIMEOUT)
                            rtts.append(loop.time() - t0)
                            await asyncio.sleep(0.02)  # its pace
                        # the sender's messages of the window but its last second: when
                        # each was echoed (not yet: never)
                        window = [(t0, f) for t0, f in posted[start:] if t0 < end - 1.0]
                        lat = [acked.get(f, math.inf) - t0 for t0, f in window]
                        medians = statistics.median(rtts), statistics.median(lat)
                        assert max(medians) < 0.3, f"the room crawled: round trips {medians} s"
                        deadline = loop.time() + TIMEOUT
                        while len(slow.ended) < n_slow:  # the server closed them all
                            assert loop.time() < deadline, f"{len(slow.ended)} slow ones cut"
                            await asyncio.sleep(0.05)  # (polling)
                    finally:
                        poster.cancel()
                    async with asyncio.timeout(TIMEOUT):  # nothing lost
                        await asyncio.gather(*(fut for _, fut in window))
                    for _, fut in posted:
                        fut.cancel()
            finally:
                await asyncio.to_thread(slow.close)

        asyncio.run(scenario())
        m = metrics(port)
        assert m['chatscreen_disconnects_total{reason="too_slow"}'] == n_slow
        assert m["chatscreen_send_budget_cuts_total"] == n_slow
        peak = m["chatscreen_send_buffered_peak_bytes"]
        assert peak <= 2 * budget, f"send buffers reached {peak:.0f} bytes"


def read_paced(sock: socket.socket, until: Callable[[dict[str, Any]], bool]
               ) -> list[dict[str, Any]]:
    """Read frames at about 2 MB/s (16 KiB, a TLS record, every 8 ms: a frame of 256 KiB in
    0.13 s) until one whose header satisfies ``until``; return the headers so far."""
    buf, out = bytearray(), list[dict[str, Any]]()
    stop = threading.Event()
    while not stop.wait(0.008):  # the reader's pace
        chunk = sock.recv(16 << 10)
        assert chunk, f"closed after {[h.get('type') for h in out[-3:]]}"
        buf += chunk
        while len(buf) >= 8:
            body, hlen = struct.unpack(">II", buf[:8])
            if len(buf) < 4 + body:
                break
            out.append(json.loads(buf[8 : 8 + hlen]))
            del buf[: 4 + body]
            if until(out[-1]):
                return out
    return out


def test_a_reader_catching_up_while_senders_wait_is_not_cut(tmp_path: Path) -> None:
    """A long catch-up (history frames of 256 KiB, each larger than the budget of 64 KiB)
    keeps the send buffers over the budget, so that the room's senders wait, for as long as
    it lasts: the reader is behind all that time, and the largest, but it catches up at every
    frame (each goes out once it took the one before), so it is not cut; nor is anyone."""
    count, text = 100, "é" * 4000  # 24 kB each on the wire: 2.4 MB, 10 frames
    with running_server(tmp_path / "d", env=NO_RATE_LIMITS) as srv:

        async def post() -> list[int]:
            async with connect(srv, "sender") as sender:
                await sender.join("general")
                acks = await asyncio.gather(*(sender.say_nowait("general", text)
                                              for _ in range(count)))
                return [a["id"] for a in acks]

        sent = asyncio.run(post())
    env = {"CHATSCREEN_SEND_BUDGET": str(64 << 10), "CHATSCREEN_SLOW_TIMEOUT": "3600",
           "CHATSCREEN_SLOW_LIMIT": "0", **NO_RATE_LIMITS}
    with running_server(tmp_path / "d", "--metrics-port", "0", env=env) as srv:
        port = metrics_port(srv)

        async def scenario() -> None:
            async with connect(srv, "chatter") as chatter:
                await chatter.join("general")
                said = [chatter.say_nowait("general", "hi")]  # asked for before ...

                def catch_up() -> list[dict[str, Any]]:
                    # a small receive buffer: the history waits in the server's buffers
                    with raw_socket(srv, srv.chat_port, rcvbuf=4096) as sock:
                        sock.sendall(frame({"type": "hello", "v": 1, "user": "back"}) + frame(
                            {"type": "join", "room": "general", "after": 0, "rid": "j"})
                            + frame({"type": "say", "room": "general", "text": "back",
                                     "cid": "c1"}))
                        return read_paced(sock, lambda h: h.get("cid") == "c1")

                reading = asyncio.create_task(asyncio.to_thread(catch_up))
                while not reading.done():  # ... and while the reader catches up
                    said.append(chatter.say_nowait("general", "hi"))
                    await asyncio.wait([reading], timeout=0.02)  # the chatter's pace
                got = await reading
                caught_up = [m["id"] for h in got if h["type"] == "history"
                             for m in h["messages"]]
                assert caught_up[:count] == sent
                async with asyncio.timeout(TIMEOUT):
                    await asyncio.gather(*said)  # the chatter waited, and was not cut

        asyncio.run(scenario())
        m = metrics(port)
        assert m["chatscreen_send_budget_cuts_total"] == 0
        assert m.get('chatscreen_disconnects_total{reason="too_slow"}', 0) == 0
