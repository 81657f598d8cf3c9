"""Chat on the real server process over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from chatscreen.client import Client
from chatscreen.errors import ConnectError, ServerError
from tests.helpers.proxy import CuttableProxy
from tests.helpers.server import (
    NO_RATE_LIMITS,
    TIMEOUT,
    ServerProcess,
    frame,
    raw_exchange,
    raw_socket,
    read_headers_until,
    run,
    running_server,
    wait_for,
)


def client(srv: ServerProcess, user: str, port: int | None = None) -> Client:
    return Client("127.0.0.1", user, chat_port=port or srv.chat_port,
                  screen_port=srv.screen_port, timeout=TIMEOUT)


async def collect_messages(c: Client, count: int, room: str = "general") -> list[dict[str, Any]]:
    """Room messages from live and history events until ``count`` have arrived."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while len(got) < count:
            ev = await c.next_event()
            if ev.type == "message" and ev.get("room") == room:
                got.append(ev.fields)
            elif ev.type == "history" and ev.get("room") == room:
                got.extend(ev["messages"])
    return got


def test_two_clients_see_one_timeline(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "alice") as alice, client(server, "bob") as bob:
            await alice.join("general")
            assert await bob.join("general") == ["alice", "bob"]
            sent = [alice.say_nowait("general", f"a{i}") for i in range(20)]
            sent += [bob.say_nowait("general", f"b{i}") for i in range(20)]
            acks = await asyncio.gather(*sent)
            seen_a = await collect_messages(alice, 40)
            seen_b = await collect_messages(bob, 40)
            assert [m["id"] for m in seen_a] == [m["id"] for m in seen_b]
            assert seen_a == seen_b
            ids = [m["id"] for m in seen_a]
            assert ids == sorted(ids) and len(set(ids)) == 40
            assert sorted(a["id"] for a in acks) == ids
            for m in seen_a:
                assert m["ts"].endswith("Z") and m["user"] in ("alice", "bob")
            # each sender's own messages arrive in the order it sent them
            mine = [m["text"] for m in seen_a if m["user"] == "alice"]
            assert mine == [f"a{i}" for i in range(20)]

    run(scenario())


def test_duplicate_username_is_refused_and_first_unaffected(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "alice") as alice:
            await alice.join("general")
            with pytest.raises(ConnectError, match="Username 'ALICE' is already taken"):
                await client(server, "ALICE").connect()
            msg = await alice.say("general", "still here")
            assert msg["text"] == "still here"

    run(scenario())


def test_rooms_private_messages_typing_presence(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "alice") as alice, client(server, "bob") as bob:
            await alice.create_room("dev")
            with pytest.raises(ServerError, match="already exists"):
                await bob.create_room("DEV")
            await bob.join("dev")
            ev = await wait_for(alice, lambda e: e.type == "presence")
            assert ev.fields == {"room": "dev", "user": "bob", "event": "join"}
            assert await alice.who("dev") == ["alice", "bob"]
            rooms = {r["name"]: r["users"] for r in await alice.list_rooms()}
            assert rooms["dev"] == 2 and "general" in rooms

            await bob.typing(True, room="dev")
            ev = await wait_for(alice, lambda e: e.type == "typing")
            assert ev.fields == {"room": "dev", "user": "bob", "active": True}

            pm = await alice.pm("bob", "psst")
            assert pm["to"] == "bob" and pm.get("room") is None
            got = await wait_for(bob, lambda e: e.type == "message")
            assert got["text"] == "psst" and got["user"] == "alice"
            with pytest.raises(ServerError, match="not connected"):
                await alice.pm("carol", "hello?")
            with pytest.raises(ServerError, match="join"):
                await alice.say("elsewhere", "not a member")
            history = await bob.history(peer="alice")
            assert [m["text"] for m in history["messages"]] == ["psst"]

            await bob.leave("dev")
            ev = await wait_for(alice, lambda e: e.type == "presence" and e["event"] == "leave")
            assert ev["user"] == "bob"
            await bob.close()
            # closing bob's connection is seen by nobody in general (he never joined it)
            assert await alice.who("dev") == ["alice"]

    run(scenario())


def test_history_survives_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def write(srv: ServerProcess) -> None:
        async with client(srv, "alice") as alice:
            await alice.join("general")
            for i in range(5):
                await alice.say("general", f"message {i}")

    async def read(srv: ServerProcess) -> None:
        async with client(srv, "bob") as bob:
            await bob.join("general")
            history = await wait_for(bob, lambda e: e.type == "history")
            assert [m["text"] for m in history["messages"]] == [f"message {i}" for i in range(5)]
            older = await bob.history(room="general", before=history["messages"][2]["id"])
            assert [m["text"] for m in older["messages"]] == ["message 0", "message 1"]

    with running_server(data) as srv:
        run(write(srv))
    assert (data / "chatscreen.db").exists()
    with running_server(data) as srv:
        run(read(srv))


def test_resume_after_dropped_connection_no_gap_no_duplicate(server: ServerProcess) -> None:
    async def scenario() -> None:
        proxy = await CuttableProxy(server.chat_port).start()
        bob = client(server, "bob", port=proxy.port)
        async with client(server, "alice") as alice:
            await bob.connect()
            await alice.join("general")
            await bob.join("general")
            for i in range(10):
                await alice.say("general", f"before {i}")
            before = await collect_messages(bob, 10)
            proxy.cut()
            await wait_for(bob, lambda e: e.type == "status" and e["state"] == "reconnecting")
            for i in range(10):
                await alice.say("general", f"during {i}")
            queued = bob.say_nowait("general", "sent while away")  # delivered after resume
            await wait_for(bob, lambda e: e.type == "status" and e["state"] == "connected")
            await queued
            for i in range(5):
                await alice.say("general", f"after {i}")
            rest = await collect_messages(bob, 16)
            texts = [m["text"] for m in before + rest]
            assert texts == ([f"before {i}" for i in range(10)] + [f"during {i}" for i in range(10)]
                             + ["sent while away"] + [f"after {i}" for i in range(5)])
            ids = [m["id"] for m in before + rest]
            assert ids == sorted(set(ids))
            assert proxy.connections >= 2
        await bob.close()
        await proxy.close()

    run(scenario())


def room_texts_until(sock: socket.socket, last: str) -> list[str]:
    """The texts of room messages a raw connection gets, history and live, in the order they
    arrive, until the one with text ``last``."""

    def texts(h: dict[str, Any]) -> list[str]:
        if h["type"] == "history":
            return [m["text"] for m in h["messages"]]
        return [h["text"]] if h["type"] == "message" and h.get("room") == "general" else []

    headers = read_headers_until(sock, lambda h: last in texts(h))
    return [t for h in headers for t in texts(h)]


def test_joining_while_messages_flow_misses_none_and_gets_none_twice(tmp_path: Path) -> None:
    """Clients join while another floods the room, so that messages are published while
    their history is looked up: each gets the history up to some message and then every
    message after it, once and in order."""
    before, n, joiners = 150, 600, 8
    hello_join = [frame({"type": "hello", "v": 1, "user": f"j{k}"})
                  + frame({"type": "join", "room": "general"}) for k in range(joiners)]

    async def scenario(srv: ServerProcess) -> list[list[str]]:
        socks = [raw_socket(srv, srv.chat_port) for _ in range(joiners)]
        try:
            async with client(srv, "alice") as alice:
                await alice.join("general")
                await asyncio.gather(*(alice.say_nowait("general", f"m{i}")
                                       for i in range(before)))
                acks = []
                for i in range(before, before + n):
                    acks.append(alice.say_nowait("general", f"m{i}"))
                    if i % (n // joiners) == 0:  # its messages are on their way meanwhile
                        k = (i - before) // (n // joiners)
                        socks[k].sendall(hello_join[k])
                        await asyncio.sleep(0)  # let alice's writes go out around it
                await asyncio.gather(*acks)
                last = f"m{before + n - 1}"
                return await asyncio.gather(*(asyncio.to_thread(room_texts_until, sock, last)
                                              for sock in socks))
        finally:
            for sock in socks:
                sock.close()

    with running_server(tmp_path / "data", env=NO_RATE_LIMITS) as srv:
        for texts in run(scenario(srv)):
            numbers = [int(t[1:]) for t in texts]
            assert numbers == list(range(numbers[0], before + n)), numbers


def test_queued_message_is_stored_once_even_if_resent(server: ServerProcess) -> None:
    """A message re-sent after a reconnect (its echo was lost) is not stored twice."""

    async def scenario() -> None:
        async with client(server, "carol") as carol:
            await carol.join("general")
            link = carol._link
            assert link is not None
            link.send("say", room="general", text="once", cid="fixed-1")
            link.send("say", room="general", text="once", cid="fixed-1")
            await carol.say("general", "marker")
            history = await carol.history(room="general")
            assert [m["text"] for m in history["messages"]] == ["once", "marker"]

    run(scenario())


# -- bad peers -----------------------------------------------------------------------------


@pytest.mark.parametrize("port_kind", ["chat", "screen"])
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame_too_large"),
        (struct.pack(">II", 12, 8) + b"\x80\x04\x95garbage", "bad_frame"),  # a pickle, say
        (struct.pack(">I", 2**31), "frame_too_large"),
        (frame({"type": "say", "room": "general", "text": "hi"}), "unexpected_message"),
        (frame({"type": "hello", "v": 7, "user": "x"}), "unsupported_version"),
        (frame({"type": "hello", "v": 1, "user": "bad name"}), "invalid_name"),
    ],
)
def test_bad_peers_are_cut_off_and_others_carry_on(server: ServerProcess, port_kind: str,
                                                    data: bytes, code: str) -> None:
    async def scenario() -> None:
        async with client(server, "steady") as steady:
            await steady.join("general")
            port = server.chat_port if port_kind == "chat" else server.screen_port
            errors = await asyncio.to_thread(raw_exchange, server, port, data)
            assert errors and errors[-1]["type"] == "error"
            assert errors[-1]["code"] == code and errors[-1]["fatal"] is True
            assert (await steady.say("general", "unaffected"))["text"] == "unaffected"
            await steady.ping()

    run(scenario())


def test_oversize_chat_frame_is_refused_before_it_is_read(server: ServerProcess) -> None:
    header = struct.pack(">II", 200 << 20, 16)  # announces 200 MB, sends 8 bytes
    errors = raw_exchange(server, server.chat_port, header)
    assert errors[-1]["code"] == "frame_too_large"


def test_silent_connection_is_closed_after_handshake_timeout(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", env={"CHATSCREEN_HANDSHAKE_TIMEOUT": "0.5"}) as srv:
        errors = raw_exchange(srv, srv.chat_port, b"")
        assert errors[-1]["code"] == "handshake_timeout"


def test_dead_peer_is_detected_by_heartbeat(tmp_path: Path) -> None:
    env = {"CHATSCREEN_HEARTBEAT": "0.3"}
    with running_server(tmp_path / "d", env=env) as srv:
        hello = frame({"type": "hello", "v": 1, "user": "zombie"})
        headers = raw_exchange(srv, srv.chat_port, hello)  # never answers the pings
        assert headers[0]["type"] == "welcome"
        assert any(h["type"] == "ping" for h in headers)
        assert headers[-1]["code"] == "heartbeat_timeout"


def test_graceful_shutdown_tells_clients_and_keeps_messages(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = ServerProcess(data, env=NO_RATE_LIMITS).start()

    async def scenario() -> None:
        c = Client("127.0.0.1", "alice", chat_port=srv.chat_port, reconnect=False,
                   timeout=TIMEOUT)
        await c.connect()
        await c.join("general")
        acks = [c.say_nowait("general", f"m{i}") for i in range(200)]
        await acks[-1]
        code = await asyncio.to_thread(srv.stop)
        assert code == 0
        ev = await wait_for(c, lambda e: e.type == "status" and e["state"] == "disconnected")
        assert "shutting down" in ev["reason"]
        await c.close()

    loop_start = asyncio.run(_timed(scenario))
    assert loop_start < 5 + TIMEOUT

    async def check() -> None:
        with running_server(data) as srv2:
            async with client(srv2, "bob") as bob:
                await bob.join("general")
                page = await bob.history(room="general", limit=1000)
                assert [m["text"] for m in page["messages"]] == [f"m{i}" for i in range(200)]

    asyncio.run(check())


async def _timed(fn: Callable[[], Awaitable[None]]) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(6 * TIMEOUT):
        await fn()
    return loop.time() - start
