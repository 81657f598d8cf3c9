"""The desktop app on a real Xvfb against the real server, driven with xdotool.

Each test runs the app in this process (its Tk loop pumped by ``tests.helpers.gui``), types
and clicks with xdotool, talks to a headless client on the other side, and checks what the
window shows. Screenshots of each tab go to ``$CHATSCREEN_SCREENSHOTS`` (else a tmp dir).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import time
import tkinter as tk
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageTk

from chatscreen.client import Client, OutRect, ScreenChannel, ThreadedClient
from chatscreen.gui.net import close_loop
from chatscreen.gui.settings import load_settings
from chatscreen.protocol import Message
from chatscreen.screen.codec import encode_jpeg, psnr
from chatscreen.screen.sharing import snapshot
from chatscreen.tls import KnownHosts, cert_fingerprint
from tests.helpers.display import grab_display, render_test_picture, show_picture
from tests.helpers.gui import GUI_TIMEOUT, GuiHarness
from tests.helpers.server import TIMEOUT, ServerProcess


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("CHATSCREEN_SCREENSHOTS") or tmp_path / "shots")


@pytest.fixture
def gui(xvfb_display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GuiHarness]:
    monkeypatch.setenv("CHATSCREEN_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("DISPLAY", xvfb_display)  # what the app captures when it shares
    monkeypatch.delenv("CHATSCREEN_SCALE", raising=False)
    monkeypatch.delenv("GDK_SCALE", raising=False)
    harness = GuiHarness(xvfb_display)
    try:
        yield harness
    finally:
        harness.close()


class Headless:
    """The other person: a library client on its own thread; its events in a queue."""

    def __init__(self, srv: ServerProcess, user: str, password: str | None = None) -> None:
        self.tc = ThreadedClient("127.0.0.1", user, chat_port=srv.chat_port,
                                 screen_port=srv.screen_port, timeout=TIMEOUT,
                                 password=password)
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
        close_loop(self.tc)


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


@contextlib.contextmanager
def another_window(g: GuiHarness, tmp_path: Path) -> Iterator[None]:
    """A small window of another application, at (0, 0), that takes the focus."""
    png = tmp_path / "other.png"
    Image.new("RGB", (24, 24), (200, 40, 40)).save(png)
    with show_picture(g.display, png):
        g.xdo("mousemove", "--sync", "6", "6")
        where = subprocess.run(["xdotool", "getmouselocation", "--shell"], check=True,
                               env={**os.environ, "DISPLAY": g.display}, capture_output=True,
                               text=True, timeout=GUI_TIMEOUT).stdout
        window = dict(line.split("=", 1) for line in where.split())["WINDOW"]
        g.xdo("windowfocus", "--sync", window)
        g.wait_for(lambda: not g.app.has_focus(), "the app to lose the focus")
        yield


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
    assert "You  hello bob, from the app" in chat.shown_text()  # own messages set apart
    own = chat.text.tag_ranges("own")
    assert own and "hello bob" in chat.text.get(own[0], own[1])

    # Shift+Enter adds a line, Enter sends both.
    g.type_into(chat.entry, "first line")
    g.key("shift+Return")
    g.xdo("type", "--delay", "4", "second line")
    g.pump()
    assert chat.entry_text() == "first line\nsecond line"
    assert int(chat.entry.cget("height")) == 2  # the field grew
    g.key("Return")
    g.wait_for(lambda: bob.got("first line\nsecond line", user="alice"),
               "bob to receive the two lines as one message")
    assert chat.entry_text() == ""

    # "bob is typing…", then his message with a link, which opens in the browser.
    bob.tc.call(lambda c: c.typing(True, room="general")).result(TIMEOUT)
    g.wait_for(lambda: chat.typing_label.cget("text") == "bob is typing…", "bob is typing…")
    opened: list[str] = []
    g.app.open_url = opened.append
    bob.tc.call(lambda c: c.say("general", "see https://example.org/docs?x=1, it helps"))\
        .result(TIMEOUT)
    g.wait_for(lambda: "https://example.org/docs?x=1" in chat.shown_text(), "the link")
    g.wait_for(lambda: chat.typing_label.cget("text") == "", "the typing notice to go")
    g.screenshot(shots / "chat.png")
    start = chat.text.tag_ranges("link")[0]
    chat.text.see(start)
    g.pump()
    bx, by, _bw, bh = chat.text.bbox(f"{start} + 3 chars")  # type: ignore[misc]
    g.click_at(chat.text.winfo_rootx() + bx + 2, chat.text.winfo_rooty() + by + bh // 2)
    g.wait_for(lambda: opened == ["https://example.org/docs?x=1"], "the link to open")

    # A message while the window is not focused: a count in the title and the bell.
    with another_window(g, tmp_path):
        bob.tc.call(lambda c: c.say("general", "are you there?")).result(TIMEOUT)
        g.wait_for(lambda: g.root.title().startswith("(1) chatscreen"), "the notice")
        assert g.app.bells == 1
    g.focus_window()
    g.wait_for(lambda: g.root.title().startswith("chatscreen —"), "the title to clear")

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


def test_an_overlong_message_stays_in_the_box_with_the_reason(
        gui: GuiHarness, server: ServerProcess, bob: Headless) -> None:
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    g.click(chat.entry)
    g.wait_for(lambda: g.root.focus_get() is chat.entry, "the box to take focus")
    g.root.clipboard_clear()
    g.root.clipboard_append("y" * 4005)  # pasted: typing it would take a minute
    g.key("ctrl+v")
    g.wait_for(lambda: len(chat.entry_text()) == 4005, "the pasted text")
    g.key("Return")
    g.wait_for(lambda: "4005" in str(chat.input_error.cget("text")), "the reason")
    assert str(chat.input_error.cget("text")) == (
        "Not sent: message too long: 4005 characters, at most 4000")
    assert chat.entry_text() == "y" * 4005 and not chat.pending  # kept, nothing sent
    # the connection stays up: a shorter message goes through
    g.key("ctrl+End", "BackSpace", *["BackSpace"] * 5)
    g.wait_for(lambda: len(chat.entry_text()) == 3999, "the text cut to 3999")
    g.key("Return")
    g.wait_for(lambda: bob.got("y" * 3999, user="alice"), "bob to receive the shorter one")
    assert g.app.status_text.startswith("Connected")
    assert chat.entry_text() == "" and str(chat.input_error.cget("text")) == ""
    assert "Reconnecting" not in g.app.status_text


def test_a_message_unsent_at_disconnect_comes_back_into_the_box(
        gui: GuiHarness, server: ServerProcess) -> None:
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)  # the server answers nothing for a while
    try:
        g.type_into(chat.entry, "still mine", enter=True)
        g.wait_for(lambda: chat.pending and chat.entry_text() == "", "the message on its way")
        g.select_tab("Connection")
        g.click(g.app.connection_tab.disconnect_button)
        g.wait_for(lambda: g.app.state == "disconnected", "the disconnect")
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert chat.entry_text() == "still mine" and not chat.pending
    assert str(chat.input_error.cget("text")) == "Not sent: you disconnected"


def test_history_scroll_back_and_presence(gui: GuiHarness, server: ServerProcess,
                                          bob: Headless) -> None:
    g = gui

    async def chatter(c: Client) -> None:
        for i in range(150):
            c.say_nowait("general", f"old {i:03d}")
        await c.say("general", "the newest")

    bob.tc.call(chatter).result(TIMEOUT)
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    g.wait_for(lambda: "the newest" in chat.shown_text(), "the history on joining")
    assert "old 149" in chat.shown_text() and "old 000" not in chat.shown_text()
    assert chat.conversations["#general"].more
    for _ in range(30):  # scroll to the top, page after page
        if "old 000" in chat.shown_text():
            break
        g.wheel_up(chat.text, 15)
        g.wait_for(lambda: not chat.conversations["#general"].loading, "older messages")
    shown = chat.shown_text()
    assert "old 000" in shown and not chat.conversations["#general"].more
    assert all(shown.count(f"old {i:03d}\n") == 1 for i in range(150))

    # Presence: carol comes and goes; the people list and the timeline say so.
    carol = Headless(server, "carol")
    try:
        g.wait_for(lambda: "carol" in chat.people_names, "carol in the people list")
        g.wait_for(lambda: "carol joined #general" in chat.shown_text(), "the join notice")
        assert str(chat.people_label.cget("text")) == "In #general (3 online)"
    finally:
        carol.close()
    g.wait_for(lambda: "carol joined and left #general" in chat.shown_text(),
               "the leave notice (with the join: one line)")
    assert "carol" not in chat.people_names


def test_private_conversation(gui: GuiHarness, server: ServerProcess, bob: Headless) -> None:
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    g.wait_for(lambda: "bob" in chat.people_names, "bob in the people list")
    index = chat.people_names.index("bob")
    chat.people.see(index)
    g.pump()
    x, y, _w, h = chat.people.bbox(index)  # type: ignore[misc]
    g.click_at(chat.people.winfo_rootx() + x + 10, chat.people.winfo_rooty() + y + h // 2,
               double=True)
    g.wait_for(lambda: chat.current == "@bob", "the private conversation with bob")
    assert str(chat.title.cget("text")) == "Private with bob  (online)"
    g.type_into(chat.entry, "just between us", enter=True)
    g.wait_for(lambda: bob.got("just between us", user="alice", to="bob"),
               "bob to receive the private message")
    bob.tc.call(lambda c: c.pm("alice", "sure thing")).result(TIMEOUT)
    g.wait_for(lambda: "sure thing" in chat.shown_text(), "bob's answer")
    assert "@bob" in chat.conversations and "hello" not in chat.shown_text()


def test_keyboard_tabs_and_high_dpi(gui: GuiHarness, xvfb_display: str) -> None:
    g = gui
    nb = g.app.notebook
    g.click(g.app.connection_tab.entries["Username"])

    def title() -> str:
        return str(nb.tab(nb.select(), "text"))  # type: ignore[no-untyped-call]

    assert title() == "Connection"
    for want in ("Chat", "Screen Share", "Connection"):
        g.key("ctrl+Tab")
        g.wait_for(lambda: title() == want, f"Ctrl+Tab to {want}")  # noqa: B023
    g.key("ctrl+shift+Tab")
    g.wait_for(lambda: title() == "Screen Share", "Ctrl+Shift+Tab back")
    normal = g.app.fonts["body"].metrics("linespace")

    # High DPI: CHATSCREEN_SCALE=2 doubles Tk's scaling, so every font (in points) doubles.
    # In another process: Tk keeps its scaling and focus state per X display connection,
    # which a second Tk app in this process would share.
    probe = ("import json, tkinter as tk\n"
             "from chatscreen.gui.app import App\n"
             "from chatscreen.gui.settings import ClientSettings\n"
             "root = tk.Tk()\n"
             "app = App(root, ClientSettings())\n"
             "print(json.dumps([app.scale, app.fonts['body'].metrics('linespace'),"
             " app.px(100)]))\n"
             "app.quit()\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=GUI_TIMEOUT,
                         env={**os.environ, "DISPLAY": xvfb_display, "CHATSCREEN_SCALE": "2"})
    scale, linespace, px100 = json.loads(out.stdout)
    assert scale == 2.0
    assert linespace >= 1.8 * normal
    assert px100 >= 1.9 * g.app.px(100)  # paddings and the window size follow


def _picture() -> np.ndarray:
    return np.asarray(render_test_picture(1280, 720).convert("RGB"))


def _bgra(rgb: np.ndarray) -> np.ndarray:
    out = np.empty((*rgb.shape[:2], 4), np.uint8)
    out[..., :3] = rgb[..., ::-1]
    out[..., 3] = 255
    return out


def _shown(g: GuiHarness, geo: tuple[int, int, int, int]) -> np.ndarray:
    g.pump()  # Tk draws when idle: let it, and sync with the X server
    x, y, sw, sh = geo
    return grab_display(g.display)[y : y + sh, x : x + sw]


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
        connected(g, server, "alice")
        tab = g.app.screen_tab
        g.select_tab("Screen Share")
        assert tab.shares == [] and "Nobody" in str(tab.empty_hint.cget("text"))
        painter.call(share).result(TIMEOUT)  # the list follows, live
        g.wait_for(lambda: tab.selected_label().startswith("▣ painter"), "the share in the list")
        g.click(tab.watch_button)

        best = 0.0

        def shown_well() -> bool:
            nonlocal best
            geo = tab.picture_geometry()
            if geo is None or tab.composer is None or not tab.composer.complete:
                return False
            # The source resized to the displayed size by area averaging (what a good
            # downscale is; the app uses the same filter when shrinking).
            want = np.asarray(Image.fromarray(picture).resize(geo[2:], Image.Resampling.BOX))
            best = max(best, psnr(_shown(g, geo), want))
            return best >= 30

        try:
            g.wait_for(shown_well, "the share on screen (PSNR >= 30 dB)")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; best PSNR {best:.1f} dB; shown at "
                                 f"{tab.picture_geometry()}") from None
        geo = tab.picture_geometry()
        assert geo is not None and geo[2] < w  # scaled down to fit the window
        assert abs(geo[2] / geo[3] - w / h) < 0.01  # with its aspect ratio
        g.wait_for(lambda: "received" in str(tab.stats_label.cget("text")), "the frame rate")
        assert "frames/s" in str(tab.stats_label.cget("text"))
        assert "bit/s" in str(tab.stats_label.cget("text"))
        g.screenshot(shots / "screen-share.png")

        # 1:1: the picture at its own size, part of it in view; the top-left corner exact.
        g.click(tab.one_button)
        g.wait_for(lambda: tab.blitter.size == (w, h) and tab.picture_geometry() is not None,
                   "the picture 1:1")

        def one_to_one() -> bool:
            g.pump()  # the scroll bars appear: the canvas gets smaller
            geo = tab.picture_geometry()
            assert geo is not None
            return psnr(_shown(g, geo), picture[: geo[3], : geo[2]]) >= 30

        g.wait_for(one_to_one, "the 1:1 pixels")
        geo = tab.picture_geometry()
        assert geo is not None and geo[2] < w  # only part of it in view: it scrolls
        g.click(tab.fit_button)
        g.wait_for(lambda: tab.blitter.size[0] < w, "fit again")

        # Full screen, then Esc.
        g.click(tab.full_button)
        g.wait_for(lambda: tab.fullscreen is not None and tab.blitter.size == (1920, 1080),
                   "the picture full screen")
        g.pump()
        full = grab_display(g.display)
        want = np.asarray(Image.fromarray(picture).resize((1920, 1080),
                                                          Image.Resampling.BILINEAR))
        assert psnr(full, want) >= 28
        g.key("Escape")
        g.wait_for(lambda: tab.fullscreen is None and tab.blitter.size[0] < w,
                   "Esc to leave full screen")

        # The painter stops: the viewer says so, and the list empties.
        painter.run(screens[0].unshare()).result(TIMEOUT)
        g.wait_for(lambda: tab.shares == [], "the list to empty")
        g.click(tab.watch_button)
        g.wait_for(lambda: not tab.picture_shown, "the picture to go")
    finally:
        for screen in screens:
            painter.run(screen.close()).result(TIMEOUT)
        painter.close()
        close_loop(painter)


def test_share_from_the_app_then_ctrl_q(gui: GuiHarness, server: ServerProcess, bob: Headless,
                                        shots: Path) -> None:
    g = gui
    connected(g, server, "alice")
    tab = g.app.screen_tab
    g.select_tab("Screen Share")
    # A known picture elsewhere on the screen, to find in what bob receives.
    picture = np.asarray(render_test_picture(640, 360).convert("RGB"))
    shown = tk.Toplevel(g.root)
    shown.overrideredirect(True)
    shown.geometry("640x360+1200+600")
    photo = ImageTk.PhotoImage(Image.fromarray(picture), master=shown)
    canvas = tk.Canvas(shown, width=640, height=360, highlightthickness=0, borderwidth=0)
    canvas.create_image(0, 0, anchor="nw", image=photo)
    canvas.place(x=0, y=0, width=640, height=360)
    g.wait_for(lambda: shown.winfo_ismapped(), "the known picture")

    assert not g.app.banner.winfo_ismapped()
    tab.preset.set("text")
    tab.audience.set("Only the people named")  # bob may watch; carol does not even see it
    g.type_into(tab.audience_entry, "bob")
    g.click(tab.may_record_box)  # bob may record it too
    g.wait_for(lambda: tab.may_record.get(), "the box ticked")
    carol = Headless(server, "carol")
    g.click(tab.share_button)
    g.wait_for(lambda: g.app.banner.winfo_ismapped(), "the sharing indicator")
    assert "You are sharing your screen" in str(g.app.banner_label.cget("text"))
    assert "text (q90, about 30 updates/s)" in str(g.app.banner_detail.cget("text"))
    assert g.root.title().startswith("● Sharing your screen")
    assert str(tab.share_button.cget("text")) == "Stop Sharing Screen"
    g.wait_for(lambda: tab.selected_label().startswith("▣ alice (you)"), "our share listed")
    g.wait_for(lambda: str(tab.viewers_label.cget("text")) == "Nobody is watching",
               "the viewer list")

    g.wait_for(lambda: any(s["user"] == "alice" for s in bob.tc.client.shares),
               "bob to see the share")
    share_id = next(s["id"] for s in bob.tc.client.shares if s["user"] == "alice")
    watching = bob.tc.call(lambda c: c.open_screen()).result(TIMEOUT)
    bob.tc.call(lambda c: watching.watch(share_id)).result(TIMEOUT)
    g.wait_for(lambda: str(tab.viewers_label.cget("text")) == "Watched by bob",
               "bob among the viewers, live")
    assert str(tab.recording_label.cget("text")) == ""
    bob.tc.call(lambda c: watching.record(share_id)).result(TIMEOUT)  # issue 18: the notice
    g.wait_for(lambda: str(tab.recording_label.cget("text")) == "● Recording (bob)",
               "the notice that bob records")
    assert str(g.app.banner_detail.cget("text")).startswith("● Recording (bob)  ·  ")
    g.screenshot(shots / "recording.png")
    carol.tc.call(lambda c: c.ping()).result(TIMEOUT)  # the share list came before this
    assert carol.tc.client.shares == []
    carol.close()
    bob.tc.call(lambda c: watching.close()).result(TIMEOUT)
    g.wait_for(lambda: str(tab.viewers_label.cget("text")) == "Nobody is watching",
               "bob gone from the viewers")
    g.wait_for(lambda: str(tab.recording_label.cget("text")) == "", "the notice gone")

    got = bob.tc.call(lambda c: snapshot(c, "alice", TIMEOUT)).result(2 * TIMEOUT)
    assert got.size == (1920, 1080)
    region = got.pixels[600:960, 1200:1840]
    assert psnr(region, picture) >= 28, psnr(region, picture)
    g.screenshot(shots / "sharing.png")

    # Ctrl+Q: the window closes, the share stops and alice logs out.
    g.key("ctrl+q")
    assert g.app.wait_closed(GUI_TIMEOUT)
    deadline = time.monotonic() + GUI_TIMEOUT
    while True:
        seen = bob.drain()
        shares_gone = any(ev.type == "shares" and not ev["shares"] for ev in seen)
        left = any(ev.type == "presence" and ev["user"] == "alice" and ev["event"] == "leave"
                   for ev in seen)
        if shares_gone and left:
            break
        assert time.monotonic() < deadline, "bob to see the share end and alice leave"
        with contextlib.suppress(queue.Empty):
            bob.seen.append(bob.tc.events.get(timeout=0.2))
    del photo


def test_server_restart_reconnects_without_losing_messages(
        gui: GuiHarness, fixed_port_server: ServerProcess) -> None:
    g = gui
    server = fixed_port_server
    bob = Headless(server, "bob")
    again: ServerProcess | None = None
    try:
        connected(g, server, "alice")
        chat = g.app.chat_tab
        g.select_tab("Chat")
        bob.tc.call(lambda c: c.say("general", "before the restart")).result(TIMEOUT)
        g.wait_for(lambda: "before the restart" in chat.shown_text(), "the first message")

        server.stop()
        g.wait_for(lambda: g.app.status_text.startswith("Reconnecting"), "Reconnecting")
        assert g.app.state == "reconnecting"
        g.type_into(chat.entry, "typed while the server was away", enter=True)
        assert "typed while the server was away" in chat.shown_text()  # shown as pending

        again = ServerProcess(server.data_dir, chat_port=server.chat_port,
                              screen_port=server.screen_port).start()
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
        bob.close()
        if again is not None:
            again.stop()


def test_register_log_in_with_password_and_moderate_from_the_chat_line(
        gui: GuiHarness, server: ServerProcess, bob: Headless) -> None:
    """/register asks for the password in a dialog (dots, never in the chat line); the
    Password field logs in with it; /who answers in the conversation; an admin's /kick
    works from the chat line and its notice shows in the room."""
    g = gui
    password = "correct horse battery"
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    g.type_into(chat.entry, "/register", enter=True)
    g.wait_for(lambda: chat.password_dialog is not None
               and chat.password_dialog.winfo_ismapped(), "the password dialog")
    dialog = chat.password_dialog
    assert dialog is not None and str(dialog.entries[0].cget("show")) == "•"
    g.type_into(dialog.entries[0], password)
    g.type_into(dialog.entries[1], password, enter=True)
    g.wait_for(lambda: "Registered: from now on only your password logs in as alice"
               in chat.shown_text(), "the registration note")
    assert "/register" not in chat.shown_text() and password not in chat.shown_text()
    g.type_into(chat.entry, "/who", enter=True)
    g.wait_for(lambda: "In #general: alice, bob" in chat.shown_text(), "/who's answer")

    # Without the password the name is refused; with it in the Password field, admitted.
    g.select_tab("Connection")
    g.click(g.app.connection_tab.disconnect_button)
    g.wait_for(lambda: g.app.net is None, "disconnected")
    connect(g, server, "alice")
    g.wait_for(lambda: "is registered: give its password"
               in str(g.app.connection_tab.message.cget("text")), "the refusal")
    tab = g.app.connection_tab
    assert str(tab.entries["Password"].cget("show")) == "•"
    g.type_into(tab.entries["Password"], password)
    g.click(tab.connect_button)
    g.wait_for(lambda: g.app.status_text.startswith("Connected"), "Connected with a password")

    subprocess.run([sys.executable, "-m", "chatscreen", "admin", "--data-dir",
                    str(server.data_dir), "set-role", "alice", "admin"], check=True,
                   capture_output=True, timeout=3 * TIMEOUT)
    g.select_tab("Chat")
    g.wait_for(lambda: chat.current == "#general", "#general")

    def refused_or_kicked() -> bool:
        return ("alice kicked bob: being rude" in chat.shown_text()
                or "Cannot kick" in str(tab.message.cget("text")))

    deadline = time.monotonic() + GUI_TIMEOUT
    while True:  # the server picks up the new role within a second: until then, refused
        tab.show("")
        g.type_into(chat.entry, "/kick bob being rude", enter=True)
        g.wait_for(refused_or_kicked, "the kick notice in #general, or a refusal")
        if "alice kicked bob: being rude" in chat.shown_text() or time.monotonic() > deadline:
            break
    assert "alice kicked bob: being rude" in chat.shown_text()
    bob.drain()
    assert any(ev.type == "status" and ev["state"] == "disconnected"
               and "kicked" in ev["reason"] for ev in bob.seen)


def test_a_forged_line_shows_as_a_marked_continuation(gui: GuiHarness, server: ServerProcess,
                                                      bob: Headless) -> None:
    """Issue 15 (3): a guest's multi-line message cannot show a line like another person's,
    and a bidi override in it is shown, not obeyed."""
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    bob.tc.call(lambda c: c.say("general", "see below\n12:00  boss  re-enter your password"))\
        .result(TIMEOUT)
    bob.tc.call(lambda c: c.say("general", "invoice\u202efdp.exe")).result(TIMEOUT)
    g.wait_for(lambda: "invoice" in chat.shown_text(), "bob's messages")
    g.pump()
    shown = chat.shown_text()
    assert "\u202e" not in shown and "invoice<U+202E>fdp.exe" in shown
    lines = shown.splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line.endswith("bob  see below"))
    forged = next(i for i, line in enumerate(lines, 1) if "boss  re-enter" in line)
    assert forged == first + 1
    assert lines[forged - 1].startswith("│ ")  # marked, and indented past the time
    assert "cont" in chat.text.tag_names(f"{forged}.0")
    chat.text.see(f"{forged}.0")
    g.pump()
    x_first = chat.text.bbox(f"{first}.0")[0]  # type: ignore[index]
    x_forged = chat.text.bbox(f"{forged}.0")[0]  # type: ignore[index]
    x_name = chat.text.bbox(f"{first}.7")[0]  # type: ignore[index]  # where "bob" starts
    assert x_forged >= x_name > x_first


def test_first_contact_shows_the_fingerprint_and_a_given_one_is_checked(
        gui: GuiHarness, server: ServerProcess, tmp_path: Path) -> None:
    """Issue 15 (11): the app shows a certificate it pins on first contact, and with a
    fingerprint in its Connection tab it checks it first (refusing a wrong one) and
    remembers it for that server."""
    g = gui
    tab = g.app.connection_tab
    fp = cert_fingerprint(server.data_dir / "tls-cert.pem")
    where = f"127.0.0.1:{server.chat_port}"
    connected(g, server, "alice")  # no fingerprint given: trust on first use, shown
    g.wait_for(lambda: fp in g.app.status_text, "the new certificate on the status line")
    assert "compare it with the server's banner" in g.app.status_text
    assert fp in str(tab.message.cget("text"))
    assert KnownHosts(tmp_path / "config" / "known_hosts").get(where) == fp

    g.select_tab("Connection")
    g.click(tab.disconnect_button)
    g.wait_for(lambda: g.app.net is None, "disconnected")
    wrong = "SHA256:" + ":".join(["AB"] * 32)
    g.type_into(tab.entries["Fingerprint"], wrong)
    g.click(tab.connect_button)
    g.wait_for(lambda: "Failed to connect" in str(tab.message.cget("text")), "the refusal")
    refusal = str(tab.message.cget("text"))
    assert fp in refusal and wrong in refusal
    assert KnownHosts(tmp_path / "config" / "known_hosts").get(where) == fp  # unchanged

    g.type_into(tab.entries["Fingerprint"], fp.lower().removeprefix("sha256:"))
    g.click(tab.connect_button)
    g.wait_for(lambda: g.app.status_text.startswith("Connected"), "Connected")
    assert "new certificate" not in g.app.status_text  # it was checked, nothing to compare
    assert load_settings().fingerprints == {where: fp}  # remembered for this server
    # Another server: its own (no) fingerprint; back to this one: the remembered one.
    g.select_tab("Connection")
    g.click(tab.disconnect_button)
    g.wait_for(lambda: g.app.net is None, "disconnected")
    g.type_into(tab.entries["Server"], "127.0.0.1:1")
    g.click(tab.entries["Username"])
    g.wait_for(lambda: tab.entries["Fingerprint"].get() == "", "no fingerprint for another")
    g.type_into(tab.entries["Server"], where)
    g.click(tab.entries["Username"])
    g.wait_for(lambda: tab.entries["Fingerprint"].get() == fp, "the remembered fingerprint")
