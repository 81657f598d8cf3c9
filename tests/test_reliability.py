"""Durability, slow consumers and observability, on the real server process."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

from chatscreen.client import Client
from tests.helpers.proxy import FlakyProxy
from tests.helpers.server import (
    NO_RATE_LIMITS,
    TIMEOUT,
    ServerProcess,
    frame,
    raw_socket,
    run,
    running_server,
    wait_for,
)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
        body: bytes = resp.read()
        return body.decode()


def connect(srv: ServerProcess, user: str) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT, reconnect=False)


def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = ServerProcess(data, env=NO_RATE_LIMITS).start()

    async def write() -> list[int]:
        async with connect(srv, "alice") as alice:
            await alice.join("general")
            acks = await asyncio.gather(*(alice.say_nowait("general", f"m{i}")
                                          for i in range(500)))
            return [a["id"] for a in acks]

    acked = asyncio.run(write())
    srv.kill()  # SIGKILL: no shutdown, no flush

    async def read(srv2: ServerProcess) -> list[int]:
        async with connect(srv2, "bob") as bob:
            page = await bob.history(room="general", limit=1000)
            return [m["id"] for m in page["messages"]]

    with running_server(data) as srv2:
        stored = asyncio.run(read(srv2))
    assert stored == sorted(acked)


def test_a_message_resent_after_a_restart_is_stored_once(tmp_path: Path) -> None:
    """A message stored just before kill -9, whose echo its sender never read: re-sent with
    the same client id to the restarted server, it is dropped as a repeat."""
    data = tmp_path / "data"
    srv = ServerProcess(data, env=NO_RATE_LIMITS).start()
    hello = frame({"type": "hello", "v": 1, "user": "alice"})
    join = frame({"type": "join", "room": "general"})

    def say(text: str, cid: str) -> bytes:
        return frame({"type": "say", "room": "general", "text": text, "cid": cid})

    async def before(srv: ServerProcess) -> None:
        async with connect(srv, "bob") as bob:
            await bob.join("general")
            with raw_socket(srv, srv.chat_port) as alice:  # never reads its echo
                alice.sendall(hello + join + say("once", "s1-1"))
                await wait_for(bob, lambda ev: ev.type == "message" and ev["text"] == "once")

    run(before(srv))
    srv.kill()

    async def after(srv: ServerProcess) -> list[str]:
        async with connect(srv, "bob") as bob:
            await bob.join("general")
            with raw_socket(srv, srv.chat_port) as alice:
                alice.sendall(hello + join + say("once", "s1-1") + say("then", "s1-2"))
                # taken in order: once "then" is out, the re-send was dealt with
                await wait_for(bob, lambda ev: ev.type == "message" and ev["text"] == "then")
            page = await bob.history(room="general", limit=10)
            return [m["text"] for m in page["messages"]]

    with running_server(data, env=NO_RATE_LIMITS) as srv2:
        assert run(after(srv2)) == ["once", "then"]


def stalled_chat_reader(srv: ServerProcess) -> socket.socket:
    """Logs in, joins general, then never reads again (with a tiny receive buffer)."""
    sock = raw_socket(srv, srv.chat_port, rcvbuf=4096)
    sock.sendall(frame({"type": "hello", "v": 1, "user": "stalled"}))
    sock.sendall(frame({"type": "join", "room": "general"}))
    return sock


def test_stalled_chat_reader_is_cut_off_and_others_carry_on(tmp_path: Path) -> None:
    env = {"CHATSCREEN_SLOW_TIMEOUT": "1", **NO_RATE_LIMITS}
    with running_server(tmp_path / "d", "--metrics-port", "0", env=env) as srv:
        metrics_port = int(re.findall(r"Metrics: http://[\d.]+:(\d+)", "".join(srv.output))[0])

        async def scenario() -> None:
            stalled = stalled_chat_reader(srv)
            async with connect(srv, "sender") as sender, connect(srv, "reader") as reader:
                await sender.join("general")
                await reader.join("general")
                text = "x" * 3000
                loop = asyncio.get_running_loop()
                got = expected = 0
                deadline = loop.time() + 6 * TIMEOUT
                cut = False
                while not cut:
                    assert loop.time() < deadline, "the stalled reader was never cut off"
                    # a burst of 150 kB, then everyone who reads has all of it in time
                    await asyncio.gather(*(sender.say_nowait("general", text) for _ in range(50)))
                    expected += 50
                    async with asyncio.timeout(TIMEOUT):
                        while got < expected:
                            ev = await reader.next_event()
                            got += ev.type == "message"
                    body = await asyncio.to_thread(
                        get, f"http://127.0.0.1:{metrics_port}/metrics")
                    cut = 'chatscreen_disconnects_total{reason="too_slow"} 1' in body
                stalled.close()

        asyncio.run(scenario())


def test_health_and_metrics_endpoints(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", "--metrics-port", "0") as srv:
        banner = "".join(srv.output)
        port = int(re.findall(r"📈 Metrics: http://127.0.0.1:(\d+)/metrics", banner)[0])

        async def chat() -> None:
            async with connect(srv, "a") as a, connect(srv, "b") as b:
                await a.join("general")
                await b.join("general")
                await a.say("general", "counted")
                health = json.loads(await asyncio.to_thread(get, f"http://127.0.0.1:{port}/health"))
                assert health["status"] == "ok" and health["sessions"] == 2

        asyncio.run(chat())
        body = get(f"http://127.0.0.1:{port}/metrics")
        assert "# TYPE chatscreen_messages_total counter" in body
        assert "chatscreen_messages_total 1" in body
        assert "chatscreen_deliveries_total 2" in body  # one message, two recipients
        assert re.search(r'chatscreen_send_buffer_bytes\{stat="max"\} \d+', body)


def test_conversation_through_a_flaky_network_arrives_whole(tmp_path: Path) -> None:
    """Thousands of messages, both ways, over a link that delays, splits and keeps cutting
    connections mid-frame: every message arrives once, in order, on both sides."""
    n = 1500

    async def scenario(srv: ServerProcess) -> None:
        proxy = FlakyProxy(srv.chat_port, seed=7, cut_after=(20_000, 120_000))
        await proxy.start()
        alice = connect(srv, "alice")
        bob = Client("127.0.0.1", "bob", chat_port=proxy.port, timeout=TIMEOUT)
        await alice.connect()
        await bob.connect()
        await alice.join("general")
        await bob.join("general")
        a_acks, b_acks = [], []
        for i in range(n):
            a_acks.append(alice.say_nowait("general", f"a{i}"))
            if i % 3 == 0:
                b_acks.append(bob.say_nowait("general", f"b{i}"))  # queued while cut off
            if i % 100 == 99:
                await asyncio.gather(*a_acks[-100:])
        await asyncio.gather(*a_acks, *b_acks)
        total = n + len(b_acks)
        seen_bob = await collect(bob, total)
        seen_alice = await collect(alice, total)
        assert [m["id"] for m in seen_bob] == [m["id"] for m in seen_alice]
        ids = [m["id"] for m in seen_alice]
        assert ids == sorted(set(ids)) and len(ids) == total
        texts = [m["text"] for m in seen_alice]
        assert [t for t in texts if t[0] == "a"] == [f"a{i}" for i in range(n)]
        assert [t for t in texts if t[0] == "b"] == [f"b{i}" for i in range(0, n, 3)]
        assert proxy.cuts >= 3, proxy.cuts  # the faults really happened
        await alice.close()
        await bob.close()
        await proxy.close()

    with running_server(tmp_path / "d", env=NO_RATE_LIMITS) as srv:
        asyncio.run(asyncio.wait_for(scenario(srv), 12 * TIMEOUT))


async def collect(c: Client, count: int) -> list[dict[str, Any]]:
    """Every room message a client was given (live or as history), until ``count``."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(6 * TIMEOUT):
        while len(got) < count:
            ev = await c.next_event()
            if ev.type == "message" and ev.get("room") == "general":
                got.append(ev.fields)
            elif ev.type == "history" and ev.get("room") == "general":
                got.extend(ev["messages"])
    return got
