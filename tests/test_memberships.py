"""An account's rooms, read markers and invitations live on the server and follow the user
to any client (issue 16, items 5 and 6): real server processes, real clients, the real CLI."""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chatscreen.client import Client
from chatscreen.errors import ServerError
from chatscreen.protocol import Message
from chatscreen.server.accounts import hash_password
from chatscreen.server.storage import _SCHEMA as storage_schema
from tests.helpers.server import NO_RATE_LIMITS, REPO, TIMEOUT, ServerProcess, run, running_server
from tests.test_names import OLD_ACCOUNTS

PASSWORD = "correct horse battery staple"


def client(srv: ServerProcess, user: str, **kwargs: Any) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT, **kwargs)


async def registered(srv: ServerProcess, user: str) -> None:
    async with client(srv, user) as c:
        await c.register(PASSWORD)


async def event(c: Client, kind: str, **fields: Any) -> Message:
    """The next event of this kind (with these fields), within TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            ev = await c.next_event()
            if ev.type == kind and all(ev.get(k) == v for k, v in fields.items()):
                return ev


def test_a_second_client_of_the_account_gets_its_rooms_and_markers(tmp_path: Path) -> None:
    """Rooms joined and markers set on one client come back on the next login, on another
    client, and after the server restarts; markers only move forward; leaving forgets."""
    with running_server(tmp_path / "data") as srv:
        async def first() -> tuple[int, int]:
            await registered(srv, "alice")
            async with client(srv, "bob") as bob, \
                    client(srv, "alice", password=PASSWORD) as alice:
                await alice.join("general")
                await alice.join("dev")
                await alice.join("tmp")
                await bob.join("dev")
                said = await bob.say("dev", "in dev")
                pm = await bob.pm("alice", "hello alice")
                assert await alice.mark_read(room="dev", id=said["id"]) == said["id"]
                assert await alice.mark_read(peer="bob", id=pm["id"]) == pm["id"]
                await alice.leave("tmp")
                return said["id"], pm["id"]

        dev_id, pm_id = run(first())

        async def second() -> None:
            async with client(srv, "ALICE", password=PASSWORD) as alice:
                assert sorted(alice.server_rooms or []) == ["dev", "general"]
                assert alice.read_markers == {"#dev": dev_id, "@bob": pm_id}
                # the client joins them again by itself
                await event(alice, "joined", room="dev")
                await event(alice, "joined", room="general")
                assert alice.rooms == {"dev", "general"}
                # a marker never moves back
                assert await alice.mark_read(peer="bob", id=1) == pm_id
                raw = await alice._request("read", peer="bob", id=1)
                assert raw["id"] == pm_id
                with pytest.raises(ServerError, match="not in 'tmp'"):
                    await alice._request("read", room="tmp", id=1)

        run(second())
        srv.stop()
        srv.start()

        async def after_restart() -> None:
            async with client(srv, "alice", password=PASSWORD) as alice:
                assert sorted(alice.server_rooms or []) == ["dev", "general"]
                assert alice.read_markers == {"#dev": dev_id, "@bob": pm_id}
            async with client(srv, "carol") as carol:  # a guest: nothing kept for it
                assert carol.server_rooms is None and carol.read_markers == {}

        run(after_restart())


def test_read_markers_are_bounded(tmp_path: Path) -> None:
    """At most 200 private conversations' markers per account (the oldest go), stored
    ones too; a room's marker only while one is in the room."""
    with running_server(tmp_path / "data", env=NO_RATE_LIMITS) as srv:
        async def scenario() -> None:
            await registered(srv, "alice")
            async with client(srv, "alice", password=PASSWORD) as alice:
                await alice.join("general")
                m = await alice.say("general", "x")
                for i in range(1, 231):
                    await alice._request("read", peer=f"p{i}", id=min(i, m["id"]))
            async with client(srv, "alice", password=PASSWORD) as alice:
                peers = [k for k in alice.read_markers if k.startswith("@")]
                assert len(peers) == 200
                assert "@p230" in peers and "@p1" not in peers

        run(scenario())
    db = sqlite3.connect(tmp_path / "data" / "chatscreen.db")
    (n,) = db.execute("SELECT COUNT(*) FROM read_markers").fetchone()
    assert n == 200


def test_an_invitation_is_an_event_and_writing_before_joining_says_how(
        tmp_path: Path) -> None:
    """The invitee gets `invited` with who invited it (and the notice, for old clients),
    a `say` there before joining says how to join, the invitation is listed at login
    until joined or declined."""
    with running_server(tmp_path / "data") as srv:
        async def scenario() -> None:
            await registered(srv, "alice")
            await registered(srv, "bob")
            async with client(srv, "alice", password=PASSWORD) as alice, \
                    client(srv, "bob", password=PASSWORD) as bob:
                await alice.create_room("secret", private=True)
                await alice.invite("secret", "bob")
                ev = await event(bob, "invited", room="secret")
                assert ev["by"] == "alice" and bob.invitations == {"secret": "alice"}
                assert "secret" not in bob.rooms
                with pytest.raises(ServerError, match=r"you are invited to #secret: join it "
                                                      r"first \(/join secret\)"):
                    await bob.say("secret", "hi")
            async with client(srv, "bob", password=PASSWORD) as bob:
                assert bob.invitations == {"secret": None}
                await bob.decline("secret")
                assert bob.invitations == {}
            async with client(srv, "bob", password=PASSWORD) as bob:
                assert bob.invitations == {}
                with pytest.raises(ServerError, match="private"):
                    await bob.join("secret")

        run(scenario())


def test_the_cli_prints_how_to_join_an_invitation(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as srv:
        run(registered(srv, "alice"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatscreen", "chat", "--server",
             f"127.0.0.1:{srv.chat_port}", "--user", "bob"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

        def wait_line(text: str) -> list[str]:
            seen: list[str] = []
            deadline = time.monotonic() + TIMEOUT
            while not any(text in line for line in seen):
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
                assert line is not None, f"the CLI ended before {text!r}: {seen}"
                seen.append(line)
            return seen

        try:
            wait_line("* joined general")

            async def invite() -> None:
                async with client(srv, "alice", password=PASSWORD) as alice:
                    await alice.create_room("secret", private=True)
                    await alice.invite("secret", "bob")

            run(invite())
            seen = wait_line("invited you")
            assert "* alice invited you to #secret: type /join secret\n" in seen
            assert sum("invited you" in line for line in seen) == 1  # not the notice too
            assert proc.stdin is not None
            proc.stdin.write("/join secret\nhello secret\n")
            proc.stdin.close()
            wait_line("* joined secret")
            wait_line("bob: hello secret")
            assert proc.wait(TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_guests_markers_are_its_own_and_not_stored(tmp_path: Path) -> None:
    """A guest's markers last while it comes back with its resume secret; another guest
    taking the name later starts with none, and nothing of guests is stored."""
    with running_server(tmp_path / "data") as srv:
        async def scenario() -> None:
            async with client(srv, "bob") as bob, client(srv, "carol") as carol:
                pm = await bob.pm("carol", "hi carol")
                assert await carol.mark_read(peer="bob", id=pm["id"]) == pm["id"]
                assert carol.server_rooms is None
            async with client(srv, "carol") as carol:  # another guest with the name
                assert carol.read_markers == {}

        run(scenario())
    db = sqlite3.connect(tmp_path / "data" / "chatscreen.db")
    assert db.execute("SELECT COUNT(*) FROM read_markers").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM memberships").fetchone() == (0,)


def test_a_database_from_before_memberships_gets_them(tmp_path: Path) -> None:
    """An existing database (made by an older version, without the tables) is given them
    at start, and its accounts' rooms are kept from then on."""
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "chatscreen.db")
    db.executescript(OLD_ACCOUNTS + storage_schema)
    db.execute("INSERT INTO accounts (name, display, hash, role) VALUES (?,?,?,?)",
               ("boss", "Boss", hash_password(PASSWORD), "admin"))
    db.commit()
    db.close()
    with running_server(data) as srv:
        async def scenario() -> None:
            async with client(srv, "boss", password=PASSWORD) as boss:
                assert boss.server_rooms == []
                await boss.join("dev")
            async with client(srv, "boss", password=PASSWORD) as boss:
                assert boss.server_rooms == ["dev"]

        run(scenario())


def test_a_room_that_expired_is_no_longer_the_accounts(tmp_path: Path) -> None:
    """An account in a guest's room that expired (empty for room_expiry) is not sent back
    there: the room is dropped from its rooms, stored ones too."""
    with running_server(tmp_path / "data", env={"CHATSCREEN_ROOM_EXPIRY": "1"}) as srv:
        async def scenario() -> None:
            await registered(srv, "alice")
            async with client(srv, "guest") as guest:
                await guest.create_room("fleeting")
                async with client(srv, "alice", password=PASSWORD) as alice:
                    await alice.join("fleeting")
                await guest.leave("fleeting")
                deadline = time.monotonic() + TIMEOUT
                while "fleeting" in {r["name"] for r in await guest.list_rooms()}:
                    assert time.monotonic() < deadline, "the room did not expire"
                    await asyncio.sleep(0.1)  # polling the listing, with a deadline
            async with client(srv, "alice", password=PASSWORD) as alice:
                assert alice.server_rooms == []

        run(scenario())
    db = sqlite3.connect(tmp_path / "data" / "chatscreen.db")
    assert db.execute("SELECT room FROM memberships").fetchall() == []


def test_read_and_invite_requests_count_against_the_request_rate(tmp_path: Path) -> None:
    """`read`, `invite` and `decline` are requests like the others: a client that floods
    them is slowed down with `rate_limited`, as for `say` (an invitation sent again and
    again would put an event and a notice in front of the invitee each time)."""
    with running_server(tmp_path / "data") as srv:
        async def scenario() -> None:
            await registered(srv, "bob")
            async with client(srv, "bob", password=PASSWORD) as bob, \
                    client(srv, "carol") as carol:
                pm = await bob.pm("carol", "hi")
                for i in range(150):
                    carol._send("read", peer=f"p{i}", id=pm["id"])
                ev = await event(carol, "error", code="rate_limited")
                assert "too fast" in ev["message"]
                await bob.create_room("secret", private=True)
                for _ in range(150):
                    bob._send("invite", room="secret", user="carol")
                ev = await event(bob, "error", code="rate_limited")
                assert "too fast" in ev["message"]

        run(scenario())
