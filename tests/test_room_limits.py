"""Rooms as state a client makes the server hold: a flood of new rooms from one address,
caps per address, per account and in total, rooms joined per connection, invitations per
room, rate limits per address and account on every request that creates state, and empty
guest rooms expiring. Each attack runs against the real server while a user on another
address chats, and that user's round trip is compared with its idle figure.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chatscreen.client import Client
from chatscreen.errors import ServerError
from tests.helpers.server import (
    REPO,
    TIMEOUT,
    ServerProcess,
    frame,
    raw_socket,
    read_headers_until,
    run,
    running_server,
)

PASSWORD = "a long enough password"


def client(srv: ServerProcess, user: str, password: str | None = None) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT, password=password)


class Flood:
    """``tests.helpers.room_flood`` in a process of its own (see there)."""

    def __init__(self, srv: ServerProcess, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.room_flood", "--port", str(srv.chat_port),
             *args], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        started = json.loads(self.proc.stdout.readline() or "{}")
        assert "started" in started, "the flood did not log in"

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.proc.wait(TIMEOUT)
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


PACE = 0.06  # s between a round trip and the next: a busy user, under the rate limit (20/s)


async def round_trip(c: Client, n: int) -> float:
    """Say -> echo, then a pause: the user's pace (not a wait for anything)."""
    start = time.perf_counter()
    assert (await c.say("general", f"rt {n}"))["text"] == f"rt {n}"
    took = time.perf_counter() - start
    await asyncio.sleep(PACE)
    return took


def test_a_room_flood_from_one_address_is_capped_while_others_chat(tmp_path: Path) -> None:
    """Four guests from one address ask for new rooms as fast as the server reads them: the
    address keeps at most its cap of rooms (the rest get rate_limited / limit_reached, not
    fatal: every flooder is still connected), and a user on another address chats on with a
    round trip within a few times its idle figure."""
    with running_server(tmp_path / "d") as srv:
        async def scenario() -> None:
            async with client(srv, "calm") as calm:
                await calm.join("general")
                idle = [await round_trip(calm, n) for n in range(20)]
                flood = await asyncio.to_thread(Flood, srv, "--source", "127.0.0.2",
                                                "--connections", "4", "--duration", "2.5")
                try:
                    flood.go()
                    waiting = asyncio.create_task(asyncio.to_thread(flood.result))
                    during: list[float] = []
                    while not waiting.done():
                        during.append(await round_trip(calm, len(during)))
                    result = await waiting
                finally:
                    flood.close()
                assert result["fatal"] == [] and result["open"] == 4, result
                assert result["errors"].get("rate_limited", 0) + result["errors"].get(
                    "limit_reached", 0) > 0, result
                flooded = [r for r in await calm.list_rooms() if r["name"].startswith("f")]
                assert len(flooded) <= 20, len(flooded)
                assert result["joined"] <= 20, result
                median_idle, median_during = statistics.median(idle), statistics.median(during)
                assert median_during <= max(3 * median_idle, median_idle + 0.05), (
                    median_idle, median_during)

        run(scenario())


def test_room_caps_hold_per_address_across_connections_and_in_total(tmp_path: Path) -> None:
    """The per-guest cap counts every connection of the address; another address has its
    own; past the total cap, everyone is refused. Refusals are limit_reached, for that
    request only."""
    env = {"CHATSCREEN_MAX_ROOMS_PER_GUEST": "3", "CHATSCREEN_MAX_ROOMS": "6",
           "CHATSCREEN_CREATE_RATE": "100", "CHATSCREEN_CREATE_BURST": "100"}
    with running_server(tmp_path / "d", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "a1") as a1, client(srv, "a2") as a2:
                await a1.create_room("r1")
                await a1.join("r2")
                await a2.create_room("r3")
                for request in (lambda: a2.create_room("r4"), lambda: a1.join("r5")):
                    with pytest.raises(ServerError) as info:
                        await request()
                    assert info.value.code == "limit_reached", info.value
                    assert "3 rooms" in info.value.message
                await a1.join("r3")  # an existing room: no new state
                other = await asyncio.to_thread(raw_socket, srv, srv.chat_port,
                                                source="127.0.0.3")
                with other:
                    other.sendall(frame({"type": "hello", "v": 1, "user": "b"}))
                    for room in ("x1", "x2", "x3"):
                        other.sendall(frame({"type": "join", "room": room, "rid": room}))
                    answers: dict[str, dict[str, Any]] = {}

                    def all_answered(h: dict[str, Any]) -> bool:
                        if "rid" in h:
                            answers[h["rid"]] = h
                        return len(answers) == 3

                    await asyncio.to_thread(read_headers_until, other, all_answered)
                assert answers["x1"]["type"] == answers["x2"]["type"] == "joined"
                assert answers["x3"]["code"] == "limit_reached" and not answers["x3"]["fatal"]
                assert "server" in answers["x3"]["message"]
                await a2.join("general")
                assert (await a2.say("general", "still here"))["text"] == "still here"
                names = {r["name"] for r in await a1.list_rooms()}
                assert names == {"general", "r1", "r2", "r3", "x1", "x2"}

        run(scenario())


def test_state_creating_requests_are_rate_limited_per_address(tmp_path: Path) -> None:
    """New rooms, invitations and registrations take from one bucket per address, shared by
    its connections: past it each gets rate_limited (not fatal); joining an existing room
    and chatting go on."""
    env = {"CHATSCREEN_CREATE_RATE": "0.01", "CHATSCREEN_CREATE_BURST": "4"}
    with running_server(tmp_path / "d", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "u1") as u1, client(srv, "u2") as u2:
                await u1.create_room("k1")
                await u2.create_room("k2")
                await u1.join("k3")
                await u2.join("k4")
                for request in (lambda: u1.create_room("k5"), lambda: u2.join("k6"),
                                lambda: u1.register(PASSWORD)):
                    with pytest.raises(ServerError) as info:
                        await request()
                    assert info.value.code == "rate_limited", info.value
                    assert "address" in info.value.message
                assert await u2.join("k1") == ["u1", "u2"]
                assert (await u2.say("k1", "fine"))["text"] == "fine"
                names = {r["name"] for r in await u1.list_rooms()}
                assert names == {"general", "k1", "k2", "k3", "k4"}

        run(scenario())


def test_empty_guest_rooms_expire_and_the_rest_stay(tmp_path: Path) -> None:
    """A room a guest created goes once it has been empty for room_expiry; one with people
    in it, one a member created, and general stay (also after a restart, but the guest's)."""
    env = {"CHATSCREEN_ROOM_EXPIRY": "1"}
    with running_server(tmp_path / "d", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "mem") as mem, client(srv, "guest") as guest:
                await mem.register(PASSWORD)
                await mem.create_room("kept")
                await mem.leave("kept")
                await guest.join("busy")
                await guest.create_room("fleeting")
                await guest.say("fleeting", "said before it went")
                await guest.leave("fleeting")
                deadline = time.monotonic() + TIMEOUT
                while "fleeting" in (names := {r["name"] for r in await mem.list_rooms()}):
                    assert time.monotonic() < deadline, names
                    await asyncio.sleep(0.1)  # polling the listing, with a deadline
                assert names == {"general", "kept", "busy"}
                with pytest.raises(ServerError) as info:
                    await mem.who("fleeting")
                assert info.value.code == "no_such_room"

        run(scenario())
    with running_server(srv.data_dir, env=env) as again:
        async def after_restart() -> None:
            async with client(again, "mem", PASSWORD) as mem:
                assert {r["name"] for r in await mem.list_rooms()} == {"general", "kept"}

        run(after_restart())


def test_guests_may_not_create_private_rooms(server: ServerProcess) -> None:
    """A guest's private room would admit whoever holds that name next, and would be
    stored for good: refused, in plain words."""
    async def scenario() -> None:
        async with client(server, "g") as g:
            with pytest.raises(ServerError) as info:
                await g.create_room("hideout", private=True)
            assert info.value.code == "forbidden" and "register" in info.value.message

    run(scenario())


def test_rooms_joined_and_invitations_are_capped(tmp_path: Path) -> None:
    """One connection is in at most max_joined rooms; a private room has at most
    max_invitations names invited."""
    env = {"CHATSCREEN_MAX_JOINED": "3", "CHATSCREEN_MAX_INVITATIONS": "3",
           "CHATSCREEN_CREATE_BURST": "50"}
    with running_server(tmp_path / "d", env=env) as srv:
        async def scenario() -> None:
            for name in ("ann", "bob", "cy"):  # invitations by name are to accounts
                async with client(srv, name) as someone:
                    await someone.register(PASSWORD)
            async with client(srv, "m") as m:
                await m.register(PASSWORD)
                await m.join("general")
                await m.create_room("secret", private=True)
                await m.invite("secret", "ann")
                await m.invite("secret", "ANN")  # already invited: nothing new
                await m.invite("secret", "bob")
                with pytest.raises(ServerError) as info:
                    await m.invite("secret", "cy")
                assert info.value.code == "limit_reached", info.value
                await m.join("third")
                with pytest.raises(ServerError) as info:
                    await m.join("fourth")
                assert info.value.code == "limit_reached" and "3 rooms" in info.value.message
                await m.leave("third")
                await m.join("fourth")

        run(scenario())


def test_the_rooms_listing_comes_in_pages(tmp_path: Path) -> None:
    """``rooms`` answers at most ``limit`` rooms from ``after`` on, with ``more``; the client
    library pages through all of them."""
    env = {"CHATSCREEN_CREATE_RATE": "1000", "CHATSCREEN_CREATE_BURST": "1000",
           "CHATSCREEN_MAX_ROOMS_PER_GUEST": "100"}
    with running_server(tmp_path / "d", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "p") as p:
                names = [f"room{n:02d}" for n in range(25)]
                for name in names:
                    await p.create_room(name)
                page = await p.rooms_page(limit=10)
                assert [r["name"] for r in page["rooms"]] == ["general", *names[:9]]
                assert page["more"] is True
                page = await p.rooms_page(after="room08", limit=20)
                assert [r["name"] for r in page["rooms"]] == names[9:]
                assert not page.get("more")
                everything = await p.list_rooms()
                assert [r["name"] for r in everything] == ["general", *names]
                assert all(r["users"] == 1 for r in everything[1:])

        run(scenario())



def test_an_accounts_bucket_follows_it_to_another_address(tmp_path: Path) -> None:
    """A registered name takes from its account's bucket as well as its address's: logging
    in from another address does not give it a fresh one."""
    env = {"CHATSCREEN_CREATE_RATE": "0.01", "CHATSCREEN_CREATE_BURST": "4"}
    with running_server(tmp_path / "d", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "m") as m:
                await m.register(PASSWORD)  # as a guest: the address's bucket, 4 -> 3
                for room in ("a1", "a2", "a3"):  # address 3 -> 0, account 4 -> 1
                    await m.create_room(room)
            other = await asyncio.to_thread(raw_socket, srv, srv.chat_port,
                                            source="127.0.0.4")
            with other:
                other.sendall(frame({"type": "hello", "v": 1, "user": "m",
                                     "password": PASSWORD}))
                for room in ("a4", "a5"):  # this address: 4 tokens; the account: 1
                    other.sendall(frame({"type": "create", "room": room, "rid": room}))
                answers: dict[str, dict[str, Any]] = {}

                def both(h: dict[str, Any]) -> bool:
                    if "rid" in h:
                        answers[h["rid"]] = h
                    return len(answers) == 2

                await asyncio.to_thread(read_headers_until, other, both)
            assert answers["a4"]["type"] == "joined", answers
            assert answers["a5"]["code"] == "rate_limited" and not answers["a5"]["fatal"]
            assert "address or account" in answers["a5"]["message"]

        run(scenario())


def test_a_member_has_a_cap_of_its_own(tmp_path: Path) -> None:
    """A member's rooms count against the account, not against the guests of its address."""
    env = {"CHATSCREEN_MAX_ROOMS_PER_MEMBER": "2", "CHATSCREEN_MAX_ROOMS_PER_GUEST": "1"}
    with running_server(tmp_path / "d", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "m") as m, client(srv, "g") as g:
                await m.register(PASSWORD)
                await m.create_room("x1")
                await m.join("x2")
                with pytest.raises(ServerError) as info:
                    await m.create_room("x3")
                assert info.value.code == "limit_reached"
                assert "you have created 2 rooms" in info.value.message
                await g.create_room("g1")
                with pytest.raises(ServerError) as info:
                    await g.join("g2")
                assert "the guests of your address have 1 rooms" in info.value.message

        run(scenario())
