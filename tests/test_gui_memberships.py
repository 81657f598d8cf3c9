"""Issue 16 (5, 6) in the desktop app on Xvfb: an account's rooms and what it has read come
back after a restart (markers moved by any client of the account count), the app connects
by itself at launch, and an invitation shows as one, with Join and Decline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatscreen.client import Client
from tests.helpers.gui import GuiHarness
from tests.helpers.server import TIMEOUT, ServerProcess, run
from tests.test_gui import Headless, connected
from tests.test_gui import gui as gui

PASSWORD = "correct horse battery"


def register(srv: ServerProcess, *users: str) -> None:
    async def go() -> None:
        for user in users:
            async with Client("127.0.0.1", user, chat_port=srv.chat_port,
                              timeout=TIMEOUT) as c:
                await c.register(PASSWORD)

    run(go())


@pytest.fixture
def bob_account(server: ServerProcess) -> Iterator[Headless]:
    register(server, "bob")
    h = Headless(server, "bob", PASSWORD)
    try:
        yield h
    finally:
        h.close()


@contextlib.contextmanager
def app_window(display: str) -> Iterator[GuiHarness]:
    """The app, started as a person starts it (its settings from the config dir)."""
    harness = GuiHarness(display)
    try:
        yield harness
    finally:
        harness.close()


def pick(g: GuiHarness, key: str) -> None:
    """Click a conversation in the list."""
    chat = g.app.chat_tab
    row = chat.conv_list.bbox(chat.order.index(key))
    assert row is not None
    g.click_at(chat.conv_list.winfo_rootx() + 30, chat.conv_list.winfo_rooty() + row[1] + 5)
    g.wait_for(lambda: chat.current == key, key)


def test_rooms_and_read_state_come_back_after_a_restart(
        server: ServerProcess, bob_account: Headless, xvfb_display: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bob = bob_account
    monkeypatch.setenv("DISPLAY", xvfb_display)
    monkeypatch.delenv("CHATSCREEN_PASSWORD", raising=False)
    register(server, "alice")
    with app_window(xvfb_display) as g:
        tab = g.app.connection_tab
        g.type_into(tab.entries["Password"], PASSWORD)
        connected(g, server, "alice")
        chat = g.app.chat_tab
        g.select_tab("Chat")
        g.type_into(chat.entry, "/join dev", enter=True)
        g.wait_for(lambda: chat.current == "#dev", "#dev")
        one = bob.tc.call(lambda c: c.pm("alice", "dm one")).result(TIMEOUT)
        g.wait_for(lambda: "@bob" in chat.conversations
                   and chat.conversations["@bob"].unread == 1, "the private message, unread")
        pick(g, "@bob")
        g.wait_for(lambda: chat.current == "@bob" and chat.conversations["@bob"].unread == 0,
                   "the private message read")
        g.wait_for(lambda: g.app.net is not None
                   and g.app.net.client.read_markers.get("@bob") == one["id"], "the marker")
        bob.tc.call(lambda c: c.join("dev")).result(TIMEOUT)
        said = bob.tc.call(lambda c: c.say("dev", "dev one")).result(TIMEOUT)
        g.wait_for(lambda: chat.conversations["#dev"].unread == 1, "#dev's message, unread")
        pick(g, "#dev")
        g.wait_for(lambda: g.app.net is not None
                   and g.app.net.client.read_markers.get("#dev") == said["id"], "its marker")
    bob.tc.call(lambda c: c.say("dev", "dev two")).result(TIMEOUT)  # while alice is away

    # Meanwhile another client of alice's reads the next message, not the third.
    async def elsewhere() -> None:
        async with Client("127.0.0.1", "alice", chat_port=server.chat_port, timeout=TIMEOUT,
                          password=PASSWORD) as alice:
            two = await asyncio.wrap_future(bob.tc.call(lambda c: c.pm("alice", "dm two")))
            await asyncio.wrap_future(bob.tc.call(lambda c: c.pm("alice", "dm three")))
            assert await alice.mark_read(peer="bob", id=two["id"]) == two["id"]

    run(elsewhere())

    # The app starts again: it connects by itself (the password from CHATSCREEN_PASSWORD)
    monkeypatch.setenv("CHATSCREEN_PASSWORD", PASSWORD)
    with app_window(xvfb_display) as again:
        chat = again.app.chat_tab
        again.wait_for(lambda: again.app.status_text.startswith("Connected"), "connected")
        again.wait_for(lambda: {"#dev", "#general"} <= set(chat.conversations), "its rooms")
        again.wait_for(lambda: "@bob" in chat.conversations
                       and len(chat.conversations["@bob"].messages) == 3, "the three DMs")
        again.wait_for(lambda: "dev two" in {m["text"] for m in
                                             chat.conversations["#dev"].messages}, "#dev")
        assert chat.current == "#general"
        assert chat.conversations["@bob"].unread == 1  # only "dm three" was never read
        assert chat.conversations["#dev"].unread == 1  # "dev two"


def test_an_invitation_shows_join_and_decline(gui: GuiHarness,
                                              server: ServerProcess,
                                              bob_account: Headless) -> None:
    g, bob = gui, bob_account
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    async def invite(c: Client) -> None:
        for room in ("secret", "other"):
            await c.create_room(room, private=True)
            await c.invite(room, "alice")

    bob.tc.call(invite).result(TIMEOUT)
    g.wait_for(lambda: set(chat.invite_buttons) == {"secret", "other"}, "two invitations")
    assert "#secret" not in chat.conversations and "#other" not in chat.conversations
    assert "bob invited you" in chat.invite_text("secret")
    join, _decline = chat.invite_buttons["secret"]
    assert str(join.cget("text")) == "Join"
    g.click(join)
    g.wait_for(lambda: chat.current == "#secret", "#secret, joined")
    g.type_into(chat.entry, "thanks bob", enter=True)
    g.wait_for(lambda: bob.got("thanks bob", room="secret"), "the message in #secret")
    _join, decline = chat.invite_buttons["other"]
    assert str(decline.cget("text")) == "Decline"
    g.click(decline)
    g.wait_for(lambda: not chat.invite_buttons, "no invitation left")
    assert "#other" not in chat.conversations
    assert "other" not in g.app.net.client.invitations if g.app.net else False


def test_a_guest_gets_its_rooms_back_after_disconnect_connect(
        gui: GuiHarness, server: ServerProcess) -> None:
    """The server keeps nothing of a guest: the app joins again the rooms it had."""
    g = gui
    connected(g, server, "dora")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    g.type_into(chat.entry, "/join dev", enter=True)
    g.wait_for(lambda: chat.current == "#dev", "#dev")
    tab = g.app.connection_tab
    g.select_tab("Connection")
    g.click(tab.disconnect_button)
    g.wait_for(lambda: g.app.net is None, "disconnected")
    g.click(tab.connect_button)
    g.wait_for(lambda: g.app.status_text.startswith("Connected"), "connected again")
    g.wait_for(lambda: {"#dev", "#general"} <= set(chat.conversations), "both rooms back")
