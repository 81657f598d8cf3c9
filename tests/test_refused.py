"""A request the server refuses gets an error for that request; the connection stays up.
Only a broken stream, or a peer that keeps sending invalid requests, is cut off."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chatscreen.client import Client
from chatscreen.errors import ErrorCode, RemoteProtocolError, RequestError
from chatscreen.protocol import Connection, Limits, Role, State
from tests.helpers.proxy import CuttableProxy
from tests.helpers.rawchat import RawChat
from tests.helpers.server import (
    NO_RATE_LIMITS,
    REPO,
    TIMEOUT,
    ServerProcess,
    frame,
    run,
    running_server,
    wait_for,
)


def test_invalid_field_gets_an_error_with_its_id_and_the_connection_stays(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        raw = await RawChat.login(server, "probe")
        assert raw.welcomed, raw.answer
        try:
            raw.send({"type": "join", "room": "bad name", "rid": "r1"})
            err = await raw.until(lambda h: h["type"] == "error")
            assert err["fatal"] is False, err
            assert (err["code"], err["re"], err["rid"]) == ("invalid_name", "join", "r1")
            raw.send({"type": "join", "room": "general", "rid": "r2"})
            assert (await raw.until(lambda h: h.get("rid") == "r2"))["type"] == "joined"
            raw.send({"type": "say", "room": "general", "text": "x" * 4100, "cid": "c-1"})
            err = await raw.until(lambda h: h["type"] in ("error", "message"))
            assert err["type"] == "error" and err["fatal"] is False, err
            assert (err["code"], err["re"], err["cid"]) == ("bad_message", "say", "c-1")
            assert "4000" in err["message"]
            raw.send({"type": "say", "room": "general", "text": "still here", "cid": "c-2"})
            msg = await raw.until(lambda h: h["type"] in ("error", "message"))
            assert (msg["type"], msg["text"], msg["cid"]) == ("message", "still here", "c-2")
        finally:
            await raw.close()

    run(scenario())


def test_unattributable_or_broken_requests_stay_fatal(server: ServerProcess) -> None:
    async def scenario() -> None:
        for bad in ({"type": "join", "room": "general", "rid": 7},  # a rid that is no rid
                    {"type": "no-such-request"}, {"v": 1},
                    {"type": "hello", "v": 1, "user": "again"}):
            raw = await RawChat.login(server, "prober")
            assert raw.welcomed, raw.answer
            try:
                raw.send(bad)
                err = await raw.until(lambda h: h["type"] == "error")
                assert err["fatal"] is True, (bad, err)
                assert (await raw.until(lambda h: False))["type"] == "closed"
            finally:
                await raw.close()

    run(scenario())


def test_a_flood_of_invalid_requests_is_cut_off(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", env=NO_RATE_LIMITS) as srv:
        async def scenario() -> None:
            raw = await RawChat.login(srv, "garbage")
            assert raw.welcomed, raw.answer
            try:
                for n in range(1000):
                    raw.send({"type": "say", "room": "general", "text": "", "cid": f"g-{n}"})
                refused = 0
                async with asyncio.timeout(TIMEOUT):
                    while (h := await raw.read())["type"] != "closed":
                        if h["type"] == "error" and not h["fatal"]:
                            refused += 1
                        elif h["type"] == "error":
                            last = h
                assert last["code"] == "bad_message"
                assert "too many invalid requests" in last["message"]
                assert 10 <= refused <= 100, refused
            finally:
                await raw.close()

        run(scenario())


# -- the command line, from a script -------------------------------------------------------


def chat_cli(srv: ServerProcess, user: str, stdin: str,
             *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatscreen", "chat", "--server", f"127.0.0.1:{srv.chat_port}",
         "--user", user, *extra], input=stdin, capture_output=True, text=True,
        timeout=3 * TIMEOUT, cwd=REPO)


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as r:
        return str(r.read().decode())


async def presence_until_marker(observer: Client, marker: str) -> list[dict[str, Any]]:
    """Presence events the observer got before its own ``marker`` message came back: the
    server sends a room's presence news before its next message."""
    await observer.say("general", marker)
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            ev = await observer.next_event()
            if ev.type == "presence":
                seen.append(ev.fields)
            elif ev.type == "message" and ev["text"] == marker:
                return seen


def test_overlong_line_from_a_pipe_exits_non_zero_without_a_reconnect_storm(
        tmp_path: Path) -> None:
    with running_server(tmp_path / "d", "--metrics-port", "0") as srv:
        port = int(re.findall(r"Metrics: http://[\d.]+:(\d+)", "".join(srv.output))[0])

        async def scenario() -> None:
            async with Client("127.0.0.1", "watcher", chat_port=srv.chat_port,
                              timeout=TIMEOUT) as watcher:
                await watcher.join("general")
                started = time.monotonic()
                out = await asyncio.to_thread(chat_cli, srv, "ci-bot",
                                              "before\n" + "x" * 4100 + "\nafter\n")
                assert out.returncode == 1, out
                assert time.monotonic() - started < 2 * TIMEOUT
                assert "message too long: 4100 characters, at most 4000" in out.stderr
                assert "reconnecting" not in out.stderr
                history = await watcher.history(room="general")
                assert [m["text"] for m in history["messages"]] == ["before"]
                seen = await presence_until_marker(watcher, "marker")
                assert len([p for p in seen if p["user"] == "ci-bot"]) <= 2, seen
            body = await asyncio.to_thread(metrics, port)
            assert 'reason="bad_message"' not in body, body

        run(scenario())


def test_refused_join_from_a_pipe_stops_the_script(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with Client("127.0.0.1", "owner", chat_port=server.chat_port,
                          timeout=TIMEOUT) as owner:
            await owner.register("owner's password")  # guests have no private rooms
            await owner.create_room("secret", private=True)
            await owner.join("general")
            out = await asyncio.to_thread(chat_cli, server, "dave",
                                          "/join secret\nhello secret?\n")
            assert out.returncode == 1, out
            assert out.stderr.count("private") == 1, out.stderr  # said once
            history = await owner.history(room="general")
            assert "hello secret?" not in [m["text"] for m in history["messages"]]
            history = await owner.history(room="secret")
            assert history["messages"] == []

            out = await asyncio.to_thread(chat_cli, server, "frank",
                                          "/msg nobody hello\nnot after a refusal\n")
            assert out.returncode == 1, out
            assert out.stderr.count("'nobody' is not connected") == 1, out.stderr
            history = await owner.history(room="general")
            assert "not after a refusal" not in [m["text"] for m in history["messages"]]

            out = await asyncio.to_thread(chat_cli, server, "erin", "hi\n", "--room", "secret")
            assert out.returncode == 1, out
            assert out.stderr.count("private") == 1, out.stderr
            assert "Task was destroyed" not in out.stderr
            assert out.stderr.startswith("! cannot join secret: "), out.stderr
            assert len([x for x in out.stderr.splitlines() if x.startswith("!")]) == 1

    run(scenario())


# -- reconnect loops ------------------------------------------------------------------------


def test_a_flapping_client_does_not_fill_the_room_with_joins_and_leaves(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        async with Client("127.0.0.1", "watcher", chat_port=server.chat_port,
                          timeout=TIMEOUT) as watcher:
            await watcher.join("general")
            secret = "flap" * 8
            for n in range(20):
                raw = await RawChat.login(server, "flappy", resume=secret)
                assert raw.welcomed, raw.answer
                raw.send({"type": "join", "room": "general", "rid": "j"})
                assert (await raw.until(lambda h: h.get("rid") == "j"))["type"] == "joined"
                if n < 19:
                    await raw.close()
            try:
                seen = await presence_until_marker(watcher, "marker")
            finally:
                await raw.close()
            assert len([p for p in seen if p["user"] == "flappy"]) <= 2, seen

    run(scenario())


def test_reconnect_backoff_grows_while_connections_die_young(server: ServerProcess) -> None:
    async def scenario() -> None:
        proxy = await CuttableProxy(server.chat_port).start()
        c = Client("127.0.0.1", "yoyo", chat_port=proxy.port, timeout=TIMEOUT)
        try:
            await c.connect()
            waits: list[tuple[float, float]] = []
            async with asyncio.timeout(6 * TIMEOUT):
                while len(waits) < 3:
                    proxy.cut()  # right after each login, as a server refusing it would
                    ev = await wait_for(c, lambda e: e.type == "status"
                                        and e["state"] == "reconnecting")
                    waits.append((ev["backoff"], ev["retry_in"]))
                    await wait_for(c, lambda e: e.type == "status" and e["state"] == "connected")
            # each wait drawn from [0, backoff] (full jitter), the backoff doubling
            assert [b for b, _ in waits] == [0.5, 1.0, 2.0], waits
            assert all(0 <= w <= b + 0.05 for b, w in waits), waits
        finally:
            await c.close()
            await proxy.close()

    run(scenario())


def test_a_screen_request_out_of_turn_is_refused_alone(server: ServerProcess) -> None:
    """A frame before share: not_sharing, not fatal; the screen connection goes on."""

    async def scenario() -> None:
        chat = await RawChat.login(server, "sharer")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        async with asyncio.timeout(TIMEOUT):
            screen = RawChat(*await asyncio.open_connection("127.0.0.1", server.screen_port,
                                                            ssl=ctx))
        try:
            screen.send({"type": "hello", "v": 1, "token": chat.answer["token"]})
            assert (await screen.read())["type"] == "welcome"
            screen.send({"type": "frame", "seq": 1, "w": 8, "h": 8, "key": True,
                         "rects": [{"x": 0, "y": 0, "w": 8, "h": 8, "enc": "raw", "len": 0}]})
            err = await screen.until(lambda h: h["type"] == "error")
            assert (err["code"], err["fatal"], err["re"]) == ("not_sharing", False, "frame")
            screen.send({"type": "ping", "n": 5})
            assert (await screen.until(lambda h: h["type"] == "pong"))["n"] == 5
        finally:
            await screen.close()
            await chat.close()

    run(scenario())


# -- the protocol core (pure) ---------------------------------------------------------------


def open_server_side() -> Connection:
    conn = Connection(Role.SERVER, Limits(max_text=100))
    list(conn.receive_data(frame({"type": "hello", "v": 1, "user": "alice"})))
    conn.accept(user="alice", token="t", room="general")
    return conn


def test_core_yields_a_bad_request_as_refused_with_its_id_and_goes_on() -> None:
    conn = open_server_side()
    data = (frame({"type": "say", "room": "general", "text": "x" * 101, "cid": "s-1"})
            + frame({"type": "join", "room": "a b", "rid": "7"})
            + frame({"type": "say", "room": "general", "text": "fine"}))
    got = list(conn.receive_data(data))
    assert [(m.type, m.fields, m.refused is not None) for m in got] == [
        ("say", {"cid": "s-1"}, True), ("join", {"rid": "7"}, True),
        ("say", {"room": "general", "text": "fine"}, False)]
    first = got[0].refused
    assert first is not None and first.code == ErrorCode.BAD_MESSAGE
    assert first.message == "text: message too long: 101 characters, at most 100"
    assert conn.state is State.OPEN


@pytest.mark.parametrize("header", [
    {"type": "say", "room": "general", "text": "", "cid": 5},  # its id is no id
    {"type": "hello", "v": 1, "user": "a b"},  # the handshake is never refused alone
    {"type": "unknown"},
])
def test_core_keeps_what_cannot_be_attributed_fatal(header: dict[str, Any]) -> None:
    conn = open_server_side()
    with pytest.raises(RemoteProtocolError):  # raised, not yielded: the caller closes
        list(conn.receive_data(frame(header)))


def test_core_refuses_nothing_alone_before_the_handshake_or_from_the_server() -> None:
    server = Connection(Role.SERVER, Limits())
    with pytest.raises(RemoteProtocolError):
        list(server.receive_data(frame({"type": "hello", "v": 1, "user": "a b"})))
    client = Connection(Role.CLIENT, Limits())
    client.send("hello", v=1, user="alice")
    list(client.receive_data(frame({"type": "welcome", "v": 1, "user": "alice", "token": "t",
                                    "room": "general"})))
    with pytest.raises(RequestError):  # raised: the client closes, it trusts no nonsense
        list(client.receive_data(frame({"type": "joined", "room": "a b", "users": []})))
