"""Histories larger than a frame, and catch-ups larger than what a client may be behind, on
the real server: paged into frames within max_frame, paced by the reader, nothing lost and
nobody cut off for asking."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chatscreen.client import Client
from tests.helpers.proxy import CuttableProxy
from tests.helpers.server import (
    NO_RATE_LIMITS,
    TIMEOUT,
    ServerProcess,
    frame,
    raw_socket,
    read_frames_until,
    run,
    running_server,
    wait_for,
)

MAX_FRAME = 1 << 20  # what the server's welcome announces, and holds its history frames to
# 400 messages of 4000 non-ASCII characters: 6 bytes each on the wire (ASCII JSON), 9.6 MB in
# all, past the 8 MiB a chat client may be behind before it is cut off as too slow
COUNT, TEXT = 400, "é" * 4000


def test_long_histories_come_in_frames_within_max_frame_and_nobody_is_cut(
        tmp_path: Path) -> None:
    with running_server(tmp_path / "d", env=NO_RATE_LIMITS) as srv:

        async def post() -> list[int]:
            async with Client("127.0.0.1", "sender", chat_port=srv.chat_port, timeout=TIMEOUT,
                              reconnect=False) as sender:
                await sender.join("general")
                ids: list[int] = []
                for _ in range(0, COUNT, 50):  # within what the sender may be behind
                    acks = await asyncio.gather(*(sender.say_nowait("general", TEXT)
                                                  for _ in range(50)))
                    ids += [a["id"] for a in acks]
                return ids

        sent = asyncio.run(post())
        # Small receive buffers: what the server sends waits in its own buffers, not the
        # kernel's, until these readers read it.
        with (raw_socket(srv, srv.chat_port, rcvbuf=4096) as catching_up,
              raw_socket(srv, srv.chat_port, rcvbuf=4096) as asking):
            # back from a long absence: everything after the first message
            catching_up.sendall(frame({"type": "hello", "v": 1, "user": "back"}) + frame(
                {"type": "join", "room": "general", "after": sent[0], "rid": "j"}) + frame(
                {"type": "say", "room": "general", "text": "I am back", "cid": "c1"}))
            got = read_frames_until(catching_up, lambda h: h.get("cid") == "c1")
            assert max(size for size, _ in got) <= MAX_FRAME
            types = [h["type"] for _, h in got]
            first = types.index("joined")
            assert set(types[first + 1 : -1]) == {"history"}, types
            caught_up = [m["id"] for _, h in got if h["type"] == "history"
                         for m in h["messages"]]
            assert caught_up == sent[1:]  # every one, once, in order, then the live one
            room = [*sent, got[-1][1]["id"]]

            # scrolling back over the whole room in one request
            asking.sendall(frame({"type": "hello", "v": 1, "user": "asks"}) + frame(
                {"type": "history", "room": "general", "limit": len(room), "rid": "h"}))

            page = read_frames_until(asking, lambda h: h.get("rid") == "h")
            size, reply = page[-1]
            assert size <= MAX_FRAME
            ids = [m["id"] for m in reply["messages"]]
            assert reply["more"] and ids == room[-len(ids):]  # the newest that fit
            while reply["more"]:  # scroll back for the rest
                asking.sendall(frame({"type": "history", "room": "general", "before": ids[0],
                                      "limit": COUNT, "rid": "h"}))
                size, reply = read_frames_until(asking, lambda h: h.get("rid") == "h")[-1]
                assert size <= MAX_FRAME
                ids = [m["id"] for m in reply["messages"]] + ids
            assert ids == room


def test_private_messages_lost_in_flight_come_back_whole_after_a_reconnect(
        tmp_path: Path) -> None:
    """More private messages than one history frame holds are lost with a connection: the
    client asks again while the server says there are more, and gets every one once."""
    n = 40  # 40 x 24 kB: four history frames

    async def scenario(srv: ServerProcess) -> None:
        proxy = await CuttableProxy(srv.chat_port).start()
        bob = Client("127.0.0.1", "bob", chat_port=proxy.port, timeout=TIMEOUT)
        async with Client("127.0.0.1", "alice", chat_port=srv.chat_port, timeout=TIMEOUT,
                          reconnect=False) as alice:
            await bob.connect()
            await alice.pm("bob", "first")
            await wait_for(bob, lambda e: e.type == "message" and e["text"] == "first")
            proxy.lose_downstream = True  # from here on, bob's connection loses all
            for i in range(n):
                await alice.pm("bob", f"{i} {TEXT[:3990]}")
            proxy.cut()
            proxy.lose_downstream = False  # the next connection works
            got: list[str] = []
            async with asyncio.timeout(6 * TIMEOUT):
                while len(got) < n:
                    ev = await bob.next_event()
                    if ev.type == "history" and ev.get("peer"):
                        got += [m["text"] for m in ev["messages"]]
                    elif ev.type == "message" and ev.get("to"):
                        got.append(ev["text"])
            assert [t.split()[0] for t in got] == [str(i) for i in range(n)]
            assert proxy.connections >= 2
        await bob.close()
        await proxy.close()

    with running_server(tmp_path / "d", env=NO_RATE_LIMITS) as srv:
        run(scenario(srv))


def test_a_client_that_stops_reading_while_catching_up_is_cut_at_its_slow_limit(
        tmp_path: Path) -> None:
    """What the room publishes while a client catches up is kept for it, and counts against
    how far it may be behind: one that stops reading mid-catch-up is cut off once that passes
    slow_limit, not left to hold the room's messages until slow_timeout."""
    env = {"CHATSCREEN_SLOW_LIMIT": str(512 << 10), "CHATSCREEN_SLOW_TIMEOUT": "3600",
           **NO_RATE_LIMITS}
    with running_server(tmp_path / "d", env=env) as srv:

        async def post(sender: Client, count: int) -> None:
            for _ in range(0, count, 50):
                await asyncio.gather(*(sender.say_nowait("general", "x" * 3000)
                                       for _ in range(50)))

        async def scenario() -> None:
            async with Client("127.0.0.1", "sender", chat_port=srv.chat_port, timeout=TIMEOUT,
                              reconnect=False) as sender:
                await sender.join("general")
                await post(sender, 1000)  # 3 MB: more than one query of 500, many frames
                # a catch-up that stops: it reads nothing after its first frames
                stalled = await asyncio.to_thread(raw_socket, srv, srv.chat_port, rcvbuf=4096)
                stalled.sendall(frame({"type": "hello", "v": 1, "user": "stalled"}) + frame(
                    {"type": "join", "room": "general", "after": 0}))
                await wait_for(sender, lambda e: e.type == "presence"
                               and e["user"] == "stalled")
                # the room goes on: 600 kB more, past its 512 KiB
                async with asyncio.timeout(TIMEOUT):
                    await post(sender, 200)
                    while "stalled" in await sender.who("general"):
                        await post(sender, 50)
                stalled.close()

        run(scenario())
