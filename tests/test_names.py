"""Names that impersonate others: look-alikes (Unicode TS #39 skeletons), invisible
characters, and a guest name that would inherit another's private messages or an account."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatscreen.client import Client
from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol import Frame, Limits
from chatscreen.protocol.lookalike import name_skeleton, parse_confusables, skeleton
from chatscreen.protocol.schema import CLIENT_MESSAGES, parse_message
from chatscreen.server.accounts import AccountDB, hash_password
from chatscreen.server.storage import _SCHEMA as storage_schema
from tests.helpers.proxy import CuttableProxy
from tests.helpers.server import (
    REPO,
    TIMEOUT,
    ServerProcess,
    refused,
    run,
    running_server,
    wait_for,
)

PASSWORD = "look alike password"
CYRILLIC_O = "\u043e"


# -- the pure layer ----------------------------------------------------------------------

def test_skeleton_maps_look_alikes_to_one_string() -> None:
    assert skeleton("b" + CYRILLIC_O + "ss") == skeleton("boss") == "boss"
    assert skeleton("\u0440\u0430\u0443\u0440\u0430l") == skeleton("paypal")  # Cyrillic р а у
    assert skeleton("m") == "rn"  # a prototype may be two characters
    assert skeleton("Ian") == skeleton("lan")  # capital I and small L
    assert skeleton("jose\u0301") == skeleton("jos\u00e9")  # NFD on both sides


def test_name_skeleton_ignores_case_and_digits_that_look_like_letters() -> None:
    same = ["boss", "Boss", "BOSS", "b0ss", "B0SS", "b" + CYRILLIC_O + "ss", "\uff42oss"]
    assert {name_skeleton(n) for n in same} == {name_skeleton("boss")}
    different = ["boss", "bose", "alice", "\u0418\u0432\u0430\u043d", "Ivan", "\u674e\u96f7",
                 "jos\u00e9", "jose"]
    assert len({name_skeleton(n) for n in different}) == len(different)


def test_confusables_lines_are_parsed() -> None:
    text = ("# comment\n\n"
            "043E ;\t006F ;\tMA\t# ( \u043e \u2192 o ) CYRILLIC SMALL LETTER O\n"
            "006D ;\t0072 006E ;\tMA\t# ( m \u2192 rn )\n")
    assert parse_confusables(text) == {"\u043e": "o", "m": "rn"}


def hello(user: str) -> Any:
    return parse_message(Frame({"type": "hello", "v": 1, "user": user}, b""), CLIENT_MESSAGES,
                         Limits())


@pytest.mark.parametrize("user", [
    "boss\u3164",  # HANGUL FILLER (a letter by category)
    "\u3164",
    "\uffa0boss",  # HALFWIDTH HANGUL FILLER
    "\u115f", "bo\u1160ss",  # Hangul choseong and jungseong fillers
    "\u2800",  # BRAILLE PATTERN BLANK
    "boss\u2800", "\U0001d159boss",  # and MUSICAL SYMBOL NULL NOTEHEAD
    "bo\u200dss", "bo\u200bss", "boss\u2060",  # zero-width joiner, space, word joiner
    "boss\ufe0f", "boss\U000e0101",  # variation selectors
    "bo\u034fss",  # COMBINING GRAPHEME JOINER
    "boss\U000e0041",  # a tag
    "\u0301boss",  # starts with a combining mark
    "\u3000boss",  # IDEOGRAPHIC SPACE
])
def test_invisible_characters_in_names_are_refused(user: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        hello(user)
    assert info.value.code == ErrorCode.INVALID_NAME
    assert "invisible" in str(info.value) or "spaces" in str(info.value) \
        or "combining mark" in str(info.value)


@pytest.mark.parametrize("user", ["\u0418\u0432\u0430\u043d", "\u674e\u96f7", "jos\u00e9",
                                  "jose\u0301", "M\u00fcller", "\u0391\u03b8\u03b7\u03bd\u03ac",
                                  "\u0645\u062d\u0645\u062f", "\ud55c\uad6d", "x\u00e6-1"])
def test_ordinary_names_in_any_script_are_accepted(user: str) -> None:
    assert hello(user)["user"]


# -- on the real server ------------------------------------------------------------------

def admin_cli(data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "chatscreen", "admin", "--data-dir", str(data),
                          *args], capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO,
                         env={**os.environ, "CHATSCREEN_PASSWORD": PASSWORD})
    if check:
        assert out.returncode == 0, out.stderr
    return out


def client(srv: ServerProcess, user: str, password: str | None = None) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, timeout=TIMEOUT, reconnect=False,
                  password=password)


async def ended(c: Client) -> str:
    ev = await wait_for(c, lambda e: e.type == "status" and e["state"] == "disconnected")
    return str(ev["reason"])


def test_look_alikes_of_connected_and_registered_names_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin_cli(data, "create-admin", "boss")
    admin_cli(data, "add-user", "mel")
    with running_server(data) as srv:
        async def scenario() -> None:
            # an offline account's look-alikes
            for fake in ("m\u0435l", "MEL", "m\u0435I"):  # Cyrillic е; capital i for l
                err = await refused(client(srv, fake))
                assert err.code in ("name_taken", "bad_password"), err
                assert "'mel'" in err.message
            async with client(srv, "boss", PASSWORD):
                err = await refused(client(srv, "b" + CYRILLIC_O + "ss"))  # Cyrillic о
                assert err.code == "name_taken"
                assert err.message == ("name 'b\u043ess' looks like 'boss', which is taken")
                for fake in ("boss\u3164", "\u2800", "bo\u200dss"):
                    err = await refused(client(srv, fake))
                    assert err.code == "invalid_name", err
                    assert "invisible" in err.message
            # a connected guest's look-alikes
            async with client(srv, "alice") as alice:
                err = await refused(client(srv, "\u0430lice"))  # Cyrillic а
                assert err.code == "name_taken" and "looks like 'alice'" in err.message
                err = await refused(client(srv, "a1ice"))  # digit one
                assert err.code == "name_taken" and "looks like 'alice'" in err.message
                await alice.join("general")  # alice is unaffected
                assert (await alice.say("general", "still me"))["user"] == "alice"
            # names in other scripts are fine, side by side
            names = ["\u0418\u0432\u0430\u043d", "\u674e\u96f7", "jos\u00e9", "Ivan"]
            clients = [client(srv, n) for n in names]
            try:
                for c in clients:
                    await c.connect()
                assert [c.user for c in clients] == names
            finally:
                for c in clients:
                    await c.close()

        run(scenario())


def test_an_account_that_looks_like_another_cannot_be_created(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin_cli(data, "create-admin", "boss")
    out = admin_cli(data, "add-user", "b0ss", check=False)
    assert out.returncode == 1 and "looks like 'boss'" in out.stderr, out.stderr
    out = admin_cli(data, "add-user", "boss\u3164", check=False)
    assert out.returncode == 1 and "invisible" in out.stderr, out.stderr
    out = admin_cli(data, "list")
    assert "b0ss" not in out.stdout


def test_a_new_guest_of_the_same_name_does_not_get_the_old_ones_private_messages(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin_cli(data, "add-user", "mel")
    with running_server(data) as srv:
        async def scenario() -> None:
            async with client(srv, "alice") as alice:
                async with client(srv, "bob") as bob:
                    await alice.pm("bob", "the secret plan")
                    await bob.pm("alice", "got it")
                    assert len((await bob.history(peer="alice"))["messages"]) == 2
                async with client(srv, "bob") as new_bob:  # another guest, same name
                    for peer in ("alice", "bob"):
                        msg = await new_bob.history(peer=peer)
                        assert msg["messages"] == [], msg["messages"]
                # alice's own messages with the old bob stay hers
                texts = [m["text"] for m in (await alice.history(peer="bob"))["messages"]]
                assert texts == ["the secret plan", "got it"]
                # a registered user keeps theirs from one login to the next
                async with client(srv, "mel", PASSWORD) as mel:
                    await alice.pm("mel", "for mel")
                async with client(srv, "mel", PASSWORD) as mel:
                    texts = [m["text"] for m in (await mel.history(peer="alice"))["messages"]]
                    assert texts == ["for mel"]

        run(scenario())


def test_registering_a_name_ends_the_guests_using_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data) as srv:
        async def scenario() -> None:
            async with client(srv, "alice") as alice, client(srv, "dana") as dana, \
                    client(srv, "\u0435rin") as fake_erin:  # Cyrillic е
                await alice.pm("dana", "for the guest dana")
                await asyncio.to_thread(admin_cli, data, "add-user", "dana")
                reason = await ended(dana)
                assert "'dana' is now a registered name" in reason, reason
                await asyncio.to_thread(admin_cli, data, "create-admin", "Erin")
                reason = await ended(fake_erin)
                assert "looks like 'Erin'" in reason, reason
                await alice.join("general")  # alice carries on
                async with client(srv, "dana", PASSWORD) as real_dana:
                    assert real_dana.role == "member"
                    msg = await real_dana.history(peer="alice")
                    assert msg["messages"] == []  # the guest's messages were the guest's

        run(scenario())


OLD_ACCOUNTS = """
CREATE TABLE accounts (
    name    TEXT PRIMARY KEY,
    display TEXT NOT NULL,
    hash    TEXT NOT NULL,
    role    TEXT NOT NULL DEFAULT 'member',
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""


def test_a_database_from_before_skeletons_is_migrated_and_indexed(tmp_path: Path) -> None:
    """Accounts made by an older version get their skeletons at start, and keep their
    private messages; look-ups by skeleton use an index."""
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "chatscreen.db")
    db.executescript(OLD_ACCOUNTS + storage_schema)
    db.execute("INSERT INTO accounts (name, display, hash, role) VALUES (?,?,?,?)",
               ("boss", "Boss", hash_password(PASSWORD), "admin"))
    db.execute("INSERT INTO messages (id, ts, user, text, room, to_user) VALUES "
               "(1, '2026-01-01T00:00:00.000Z', 'alice', 'an old one', NULL, 'Boss')")
    db.commit()
    db.close()
    with running_server(data) as srv:
        async def scenario() -> None:
            err = await refused(client(srv, "B0SS"))
            assert err.message == "name 'B0SS' looks like 'Boss', which is registered"
            async with client(srv, "boss", PASSWORD) as boss:
                texts = [m["text"] for m in (await boss.history(peer="alice"))["messages"]]
                assert texts == ["an old one"]

        run(scenario())
    db = sqlite3.connect(data / "chatscreen.db")
    assert db.execute("SELECT skeleton, since FROM accounts").fetchall() == [("boss", 0)]
    plan = " ".join(str(r) for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT name FROM accounts WHERE skeleton = ?", ("x",)))
    assert "USING INDEX accounts_skeleton" in plan or "USING COVERING INDEX" in plan, plan
    db.close()


def test_an_account_cannot_be_created_next_to_a_look_alike(tmp_path: Path) -> None:
    """The check and the insert are one transaction, on a real SQLite file: /register and
    `chatscreen admin` go through it."""
    db = AccountDB.open(tmp_path)
    try:
        assert db.create("Boss", "hash", "admin") is None
        assert db.create("b" + CYRILLIC_O + "ss", "hash") == "Boss"
        assert db.create("B0SS", "hash") == "Boss"
        assert db.create("boss", "hash") == "Boss"
        assert db.create("bose", "hash", since=7) is None
        assert [(a.name, a.skeleton, a.since) for a in db.accounts()] == [
            ("bose", "bose", 7), ("Boss", "boss", None)]
        assert db.settle(42) == 1
        assert db.get("boss").since == 42  # type: ignore[union-attr]
    finally:
        db.close()


def test_a_guest_coming_back_with_its_resume_secret_keeps_its_private_messages(
        tmp_path: Path) -> None:
    """The same client, reconnecting after its connection dropped, is the same guest: its
    private messages are still its own (and those of a guest in between would not be)."""
    with running_server(tmp_path / "data") as srv:
        async def scenario() -> None:
            proxy = await CuttableProxy(srv.chat_port).start()
            bob = Client("127.0.0.1", "bob", chat_port=proxy.port, timeout=TIMEOUT)
            try:
                async with client(srv, "alice") as alice:
                    await bob.connect()
                    await alice.pm("bob", "before the cut")
                    proxy.cut()
                    await wait_for(bob, lambda e: e.type == "status"
                                   and e["state"] == "reconnecting")
                    await wait_for(bob, lambda e: e.type == "status"
                                   and e["state"] == "connected")
                    texts = [m["text"] for m in (await bob.history(peer="alice"))["messages"]]
                    assert texts == ["before the cut"]
            finally:
                await bob.close()
                await proxy.close()

        run(scenario())
