"""The desktop app on a real Xvfb against the real server, driven with xdotool.

Each test runs the app in this process (its Tk loop pumped by ``tests.helpers.gui``), types
and clicks with xdotool, talks to a headless client on the other side, and checks what the
window shows. Screenshots of each tab go to ``$CHATSCREEN_SCREENSHOTS`` (else a tmp dir).
"""

from __future__ import annotations

import os
import queue
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chatscreen.client import Client, OutRect, ScreenChannel, ThreadedClient
from chatscreen.codec import encode_jpeg, psnr
from chatscreen.protocol import Message
from tests.helpers.display import render_test_picture
from tests.helpers.gui import GuiHarness
from tests.helpers.server import TIMEOUT, ServerProcess, running_server


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("CHATSCREEN_SCREENSHOTS") or tmp_path / "shots")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path / "data") as srv:
        yield srv


@pytest.fixture
def gui(xvfb_display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GuiHarness]:
    monkeypatch.setenv("CHATSCREEN_CONFIG_DIR", str(tmp_path / "config"))
    harness = GuiHarness(xvfb_display)
    try:
        yield harness
    finally:
        harness.close()


class Headless:
    """The other person: a library client on its own thread; its events in a queue."""

    def __init__(self, srv: ServerProcess, user: str) -> None:
        self.tc = ThreadedClient("127.0.0.1", user, chat_port=srv.chat_port,
                                 screen_port=srv.screen_port, timeout=TIMEOUT)
        self.tc.connect().result(TIMEOUT)
        self.tc.call(lambda c: c.join("general")).result(TIMEOUT)
        self.seen: list[Message] = []

    def drain(self) -> list[Message]:
        while True:
            try:
                self.seen.append(self.tc.events.get_nowait())
            except queue.Empty:
                return self.seen

    def messages(self) -> list[dict[str, Any]]:
        """Every chat message received, live or in a history page (after a re-join)."""
        out: list[dict[str, Any]] = []
        for ev in self.drain():
            if ev.type == "message":
                out.append(ev.fields)
            elif ev.type == "history":
                out.extend(ev["messages"])
        return out

    def got(self, text: str, **fields: Any) -> bool:
        return any(m["text"] == text and all(m.get(k) == v for k, v in fields.items())
                   for m in self.messages())

    def close(self) -> None:
        self.tc.close()


@pytest.fixture
def bob(server: ServerProcess) -> Iterator[Headless]:
    h = Headless(server, "bob")
    try:
        yield h
    finally:
        h.close()


def connect(g: GuiHarness, srv: ServerProcess, user: str, *,
            chat_port: int | None = None) -> None:
    tab = g.app.connection_tab
    g.select_tab("Connection")
    g.type_into(tab.entries["Username"], user)
    g.type_into(tab.entries["Server"], f"127.0.0.1:{chat_port or srv.chat_port}")
    g.type_into(tab.entries["Screen port"], str(srv.screen_port))
    g.click(tab.connect_button)


def connected(g: GuiHarness, srv: ServerProcess, user: str) -> None:
    connect(g, srv, user)
    g.wait_for(lambda: g.app.status_text.startswith("Connected"), "Connected")
    g.wait_for(lambda: "#general" in g.app.chat_tab.conversations, "joining #general")


def test_connect_send_and_receive(gui: GuiHarness, server: ServerProcess, bob: Headless,
                                  shots: Path, tmp_path: Path) -> None:
    g = gui
    connected(g, server, "alice")
    g.wait_for(lambda: "(rtt " in g.app.status_text, "the round trip on the status line")
    assert g.app.status_text.startswith(f"Connected to 127.0.0.1:{server.chat_port} as alice")
    saved = tomllib.loads((tmp_path / "config" / "client.toml").read_text())["client"]
    assert saved == {"user": "alice", "server": f"127.0.0.1:{server.chat_port}",
                     "screen_port": server.screen_port}

    chat = g.app.chat_tab
    g.select_tab("Chat")
    g.type_into(chat.entry, "hello bob, from the app", enter=True)
    g.wait_for(lambda: bob.got("hello bob, from the app", user="alice", room="general"),
               "bob to receive the message")
    bob.tc.call(lambda c: c.say("general", "hi alice")).result(TIMEOUT)
    g.wait_for(lambda: "hi alice" in chat.shown_text(), "bob's message in the window")
    shown = chat.shown_text()
    assert shown.count("hello bob, from the app") == 1 and "bob  hi alice" in shown
    g.wait_for(lambda: not chat.pending, "the echo of our own message")
    g.screenshot(shots / "chat.png")
    g.select_tab("Connection")
    g.screenshot(shots / "connection.png")


def test_connection_errors_in_plain_words(gui: GuiHarness, server: ServerProcess,
                                          bob: Headless) -> None:
    g = gui
    connect(g, server, "alice", chat_port=1)  # nothing listens on port 1: refused
    g.wait_for(lambda: g.app.state == "disconnected", "the failure")
    assert g.app.status_text == "Failed to connect: connection refused (127.0.0.1:1)"
    assert str(g.app.connection_tab.message.cget("text")) == g.app.status_text
    connect(g, server, "bob")
    g.wait_for(lambda: g.app.state == "disconnected", "the failure")
    assert g.app.status_text == "Username 'bob' is already taken"


def test_private_conversation(gui: GuiHarness, server: ServerProcess, bob: Headless) -> None:
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    g.wait_for(lambda: "bob" in chat.people.get(0, "end"), "bob in the people list")
    index = list(chat.people.get(0, "end")).index("bob")
    chat.people.see(index)
    g.pump()
    x, y, _w, h = chat.people.bbox(index)  # type: ignore[misc]
    g.click_at(chat.people.winfo_rootx() + x + 10, chat.people.winfo_rooty() + y + h // 2,
               double=True)
    g.wait_for(lambda: chat.current == "@bob", "the private conversation with bob")
    assert str(chat.title.cget("text")) == "Private with bob"
    g.type_into(chat.entry, "just between us", enter=True)
    g.wait_for(lambda: bob.got("just between us", user="alice", to="bob"),
               "bob to receive the private message")
    bob.tc.call(lambda c: c.pm("alice", "sure thing")).result(TIMEOUT)
    g.wait_for(lambda: "sure thing" in chat.shown_text(), "bob's answer")
    assert "@bob" in chat.conversations and "hello" not in chat.shown_text()


def _picture() -> np.ndarray:
    return np.asarray(render_test_picture(1280, 720).convert("RGB"))


def _bgra(rgb: np.ndarray) -> np.ndarray:
    out = np.empty((*rgb.shape[:2], 4), np.uint8)
    out[..., :3] = rgb[..., ::-1]
    out[..., 3] = 255
    return out


def test_watch_a_share(gui: GuiHarness, server: ServerProcess, shots: Path) -> None:
    g = gui
    picture = _picture()
    h, w = picture.shape[:2]
    painter = ThreadedClient("127.0.0.1", "painter", chat_port=server.chat_port,
                             screen_port=server.screen_port, timeout=TIMEOUT)
    data = encode_jpeg(_bgra(picture), 95)

    screens: list[ScreenChannel] = []

    async def share(c: Client) -> None:
        screen = await c.open_screen()
        screens.append(screen)
        await screen.share(w, h)
        await screen.send_frame(w, h, [OutRect(0, 0, w, h, "jpeg", data)], key=True)

    try:
        painter.connect().result(TIMEOUT)
        painter.call(share).result(TIMEOUT)
        connected(g, server, "alice")
        tab = g.app.screen_tab
        g.select_tab("Screen Share")
        g.wait_for(lambda: tab.share_list.get().startswith("painter"), "the share in the list")
        g.click(tab.watch_button)

        best = 0.0

        def shown_well() -> bool:
            nonlocal best
            geo = tab.picture_geometry()
            if geo is None or tab.composer is None or not tab.composer.complete:
                return False
            x, y, sw, sh = geo
            got = g.window_picture()  # the window is at (0, 0): root coordinates
            region = got[y - g.root.winfo_rooty() : y - g.root.winfo_rooty() + sh,
                         x - g.root.winfo_rootx() : x - g.root.winfo_rootx() + sw]
            # The source resized to the displayed size by area averaging (what a good
            # downscale is; the app uses the same filter when shrinking).
            want = np.asarray(Image.fromarray(picture).resize((sw, sh), Image.Resampling.BOX))
            best = max(best, psnr(region, want))
            return best >= 30

        try:
            g.wait_for(shown_well, "the share on screen (PSNR >= 30 dB)")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; best PSNR {best:.1f} dB") from None
        geo = tab.picture_geometry()
        assert geo is not None and geo[2] < w  # scaled down to fit the window
        g.screenshot(shots / "screen-share.png")
        g.click(tab.watch_button)
        g.wait_for(lambda: not tab.picture_shown, "the picture to go")
    finally:
        for screen in screens:
            painter.run(screen.close()).result(TIMEOUT)
        painter.close()


def test_server_restart_reconnects_without_losing_messages(
        gui: GuiHarness, server: ServerProcess, bob: Headless) -> None:
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    bob.tc.call(lambda c: c.say("general", "before the restart")).result(TIMEOUT)
    g.wait_for(lambda: "before the restart" in chat.shown_text(), "the first message")

    server.stop()
    g.wait_for(lambda: g.app.status_text.startswith("Reconnecting"), "Reconnecting")
    g.type_into(chat.entry, "typed while the server was away", enter=True)
    assert "typed while the server was away" in chat.shown_text()  # shown as pending

    again = ServerProcess(server.data_dir, chat_port=server.chat_port,
                          screen_port=server.screen_port).start()
    try:
        g.wait_for(lambda: g.app.status_text.startswith("Connected"), "Connected again")
        bob.tc.call(lambda c: c.wait_connected(3 * TIMEOUT)).result(4 * TIMEOUT)
        g.wait_for(lambda: bob.got("typed while the server was away", user="alice"),
                   "bob to receive what was typed meanwhile")
        bob.tc.call(lambda c: c.say("general", "after the restart")).result(TIMEOUT)
        g.wait_for(lambda: "after the restart" in chat.shown_text() and not chat.pending,
                   "the message after the restart")
        shown = chat.shown_text()
        assert sum(m["text"] == "typed while the server was away" for m in bob.messages()) == 1
        for text in ("before the restart", "typed while the server was away",
                     "after the restart"):
            assert shown.count(text) == 1, shown
    finally:
        again.stop()
