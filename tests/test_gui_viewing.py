"""The desktop app's viewing states and layout, on a real Xvfb against the real server
(issue 16: what a newcomer trips over). Driven as in tests/test_gui.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from chatscreen.client import Client, OutRect, ScreenChannel, ThreadedClient
from chatscreen.gui.net import close_loop
from chatscreen.gui.timeline import day_line
from chatscreen.screen.codec import encode_jpeg
from tests.helpers.display import grab_display
from tests.helpers.gui import GUI_TIMEOUT, GuiHarness
from tests.helpers.server import REPO, TIMEOUT, ServerProcess
from tests.helpers.xvfb import run_xvfb
from tests.test_gui import Headless, _bgra, _picture, connected, gui, shots  # noqa: F401


def visible_texts(canvas: object) -> list[str]:
    """The texts drawn on a Tk canvas, as a person sees them (hidden ones left out)."""
    c = canvas  # a tk.Canvas
    return [str(c.itemcget(i, "text")) for i in c.find_all()  # type: ignore[attr-defined]
            if c.type(i) == "text" and c.itemcget(i, "state") != "hidden"]  # type: ignore[attr-defined]


def test_a_share_that_ends_says_so_over_the_greyed_picture(
        gui: GuiHarness, server: ServerProcess, shots: Path) -> None:  # noqa: F811
    g = gui
    picture = _picture()
    h, w = picture.shape[:2]
    data = encode_jpeg(_bgra(picture), 90)
    painter = ThreadedClient("127.0.0.1", "painter", chat_port=server.chat_port,
                             screen_port=server.screen_port, timeout=TIMEOUT)
    screens: list[ScreenChannel] = []

    async def share(c: Client) -> None:
        screen = await c.open_screen()
        screens.append(screen)
        await screen.share(w, h)
        await screen.send_frame(w, h, [OutRect(0, 0, w, h, "jpeg", data)], key=True)

    def brightness() -> float:
        g.pump()
        geo = tab.picture_geometry()
        assert geo is not None
        x, y, sw, sh = geo
        return float(grab_display(g.display)[y : y + sh, x : x + sw].mean())

    try:
        painter.connect().result(TIMEOUT)
        connected(g, server, "alice")
        tab = g.app.screen_tab
        g.select_tab("Screen Share")
        painter.call(share).result(TIMEOUT)
        g.wait_for(lambda: tab.selected_label().startswith("▣ painter"), "the share")
        g.click(tab.watch_button)
        g.wait_for(lambda: tab.composer is not None and tab.composer.complete
                   and tab.picture_shown, "the picture")
        live = brightness()

        painter.run(screens[0].unshare()).result(TIMEOUT)
        g.wait_for(lambda: "painter stopped sharing" in visible_texts(tab.canvas),
                   "'painter stopped sharing' across the picture")
        assert "ended" in str(tab.watch_title.cget("text"))
        assert brightness() < 0.6 * live  # greyed: plainly not live any more
        g.screenshot(shots / "share-ended.png")

        painter.call(share).result(TIMEOUT)  # back: live again, by itself
        g.wait_for(lambda: "painter stopped sharing" not in visible_texts(tab.canvas)
                   and tab.composer is not None and tab.composer.complete, "live again")
        g.wait_for(lambda: brightness() > 0.9 * live, "the picture, not greyed")
        assert "ended" not in str(tab.watch_title.cget("text"))
    finally:
        for screen in screens:
            painter.run(screen.close()).result(TIMEOUT)
        painter.close()
        close_loop(painter)


def _window(display: str, title: str) -> tuple[int, int, int, int] | None:
    """Where the window whose title contains ``title`` is (x, y, w, h), if there is one."""
    env = {**os.environ, "DISPLAY": display}
    found = subprocess.run(["xdotool", "search", "--name", title], env=env, text=True,
                           capture_output=True, timeout=TIMEOUT).stdout.split()
    if not found:
        return None
    geo = subprocess.run(["xdotool", "getwindowgeometry", "--shell", found[0]], env=env,
                         text=True, capture_output=True, timeout=TIMEOUT).stdout
    v = dict(line.split("=", 1) for line in geo.split())
    return int(v["X"]), int(v["Y"]), int(v["WIDTH"]), int(v["HEIGHT"])


def _wait_window(display: str, title: str, proc: subprocess.Popen[str]
                 ) -> tuple[int, int, int, int]:
    deadline = time.monotonic() + GUI_TIMEOUT
    while (where := _window(display, title)) is None:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no window titled {title!r}"
    return where


def test_the_view_window_dims_a_share_that_ended_and_says_so(
        xvfb_display: str, server: ServerProcess) -> None:
    picture = _picture()
    h, w = picture.shape[:2]
    data = encode_jpeg(_bgra(picture), 90)
    painter = ThreadedClient("127.0.0.1", "painter", chat_port=server.chat_port,
                             screen_port=server.screen_port, timeout=TIMEOUT)
    screens: list[ScreenChannel] = []

    async def share(c: Client) -> None:
        screen = await c.open_screen()
        screens.append(screen)
        await screen.share(w, h)
        await screen.send_frame(w, h, [OutRect(0, 0, w, h, "jpeg", data)], key=True)

    def brightness(where: tuple[int, int, int, int]) -> float:
        x, y, sw, sh = where
        return float(grab_display(xvfb_display)[y : y + sh, x : x + sw].mean())

    viewer: subprocess.Popen[str] | None = None
    try:
        painter.connect().result(TIMEOUT)
        painter.call(share).result(TIMEOUT)
        viewer = subprocess.Popen(
            [sys.executable, "-m", "chatscreen", "view", "--server",
             f"127.0.0.1:{server.chat_port}", "--screen-port", str(server.screen_port),
             "--user", "viewer", "--from", "painter"],
            env={**os.environ, "DISPLAY": xvfb_display}, cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        where = _wait_window(xvfb_display, "chatscreen viewer: Watching painter", viewer)
        deadline = time.monotonic() + GUI_TIMEOUT
        while (live := brightness(where)) < 20:  # the picture drawn (not the black window)
            assert time.monotonic() < deadline, "no picture in the viewer window"

        painter.run(screens[0].unshare()).result(TIMEOUT)
        where = _wait_window(xvfb_display, "painter stopped sharing", viewer)
        deadline = time.monotonic() + GUI_TIMEOUT
        while brightness(where) >= 0.6 * live:  # dimmed: plainly not live any more
            assert time.monotonic() < deadline, "the last picture is not dimmed"
    finally:
        if viewer is not None:
            viewer.terminate()
            viewer.communicate(timeout=TIMEOUT)
        for screen in screens:
            painter.run(screen.close()).result(TIMEOUT)
        painter.close()
        close_loop(painter)


LAYOUT_PROBE = """
import json, tkinter as tk
from tkinter import ttk
from chatscreen.gui.app import App
from chatscreen.gui.settings import ClientSettings

root = tk.Tk()
app = App(root, ClientSettings())
app.notebook.select(app.screen_tab)
root.update()

def cut(w):
    # every label, button and field that shows less than it needs, or sticks out of its row
    out = []
    for c in w.winfo_children():
        if c.winfo_ismapped() and isinstance(c, (ttk.Label, ttk.Button, ttk.Combobox,
                                                 ttk.Entry)):
            right = c.winfo_rootx() + c.winfo_width()
            if (c.winfo_width() < c.winfo_reqwidth()
                    or right > c.master.winfo_rootx() + c.master.winfo_width()):
                out.append(str(c.cget("text")) if isinstance(c, ttk.Label) else str(c))
        out += cut(c)
    return out

print(json.dumps({"window": [root.winfo_width(), root.winfo_height()],
                  "screen": [root.winfo_screenwidth(), root.winfo_screenheight()],
                  "cut": cut(app.screen_tab)}))
app.quit()
"""


def test_scaled_up_the_window_fits_the_screen_and_the_share_bar_is_whole() -> None:
    """CHATSCREEN_SCALE=1.5 on a 1600x1000 screen: the window was 1720x1126, and the Screen
    Share bar showed "…(JPEG q80) Not sha"."""
    with run_xvfb("1600x1000x24") as display:  # its own: Tk keeps its scaling per display
        out = subprocess.run([sys.executable, "-c", LAYOUT_PROBE], capture_output=True,
                             text=True, timeout=GUI_TIMEOUT, cwd=REPO,
                             env={**os.environ, "DISPLAY": display, "CHATSCREEN_SCALE": "1.5"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["screen"] == [1600, 1000]
    assert got["window"][0] <= 1600 and got["window"][1] <= 1000, got
    assert got["cut"] == []


def test_a_preset_shares_at_the_same_rate_from_the_app_as_from_the_cli(
        gui: GuiHarness, server: ServerProcess, xvfb_display: str) -> None:  # noqa: F811
    """"balanced" ran ~30 updates/s from `chatscreen share` but 15 from the app (which had
    a preset table of its own, with other qualities too)."""
    cli = subprocess.Popen(
        [sys.executable, "-m", "chatscreen", "share", "--server",
         f"127.0.0.1:{server.chat_port}", "--screen-port", str(server.screen_port),
         "--user", "cli", "--preset", "balanced"],
        env={**os.environ, "DISPLAY": xvfb_display}, cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert cli.stdout is not None
        said = cli.stdout.readline()  # "Sharing WxH at about N updates/s (preset balanced)..."
        assert "(preset balanced)" in said, said + cli.communicate(timeout=TIMEOUT)[1]
        cli_rate = float(said.split(" at about ")[1].split()[0])
    finally:
        cli.terminate()
        cli.communicate(timeout=TIMEOUT)

    g = gui
    connected(g, server, "alice")
    tab = g.app.screen_tab
    g.select_tab("Screen Share")
    tab.preset.set("balanced")
    g.click(tab.share_button)
    g.wait_for(lambda: g.app.banner.winfo_ismapped(), "the sharing indicator")
    net = g.app.net
    assert net is not None and net.share_stats is not None
    assert (net.share_stats.fps, net.share_stats.preset) == (cli_rate, "balanced")
    assert f"about {cli_rate:g} updates/s" in str(g.app.banner_detail.cget("text"))
    assert f"about {cli_rate:g} updates/s" in str(tab.preset_hint.cget("text"))
    g.click(g.app.banner_stop)
    g.wait_for(lambda: not g.app.banner.winfo_ismapped(), "sharing to stop")


def test_timeline_collapses_comings_and_goings_dates_days_and_hangs_lines_under_the_text(
        gui: GuiHarness, fixed_port_server: ServerProcess,  # noqa: F811
        shots: Path) -> None:  # noqa: F811
    """Issue 16, items 9 and 10: join/leave notices crowded out the messages and went on a
    reconnect, there were no day separators, another person's long message wrapped under
    the time, and the people list stayed green while disconnected."""
    g = gui
    server = fixed_port_server
    bob = Headless(server, "bob")
    again: ServerProcess | None = None
    try:
        connected(g, server, "alice")
        chat = g.app.chat_tab
        g.select_tab("Chat")
        for _ in range(5):  # a bot that comes and goes: the server announces its first
            Headless(server, "ci-bot").close()  # join and, 5 s after it last left, a leave
        g.wait_for(lambda: "ci-bot joined and left #general" in chat.shown_text(),
                   "one line for the bot's comings and goings")
        assert chat.shown_text().count("ci-bot") == 1
        assert "presence" in chat.text.tag_names(_line_of(chat, "ci-bot"))

        long = "a long line that has to wrap " * 8
        bob.tc.call(lambda c: c.say("general", f"{long}\nand a second line")).result(TIMEOUT)
        g.wait_for(lambda: "and a second line" in chat.shown_text(), "bob's long message")
        today = day_line(datetime.now().date())
        assert today in chat.shown_text()  # e.g. "— Monday 7 December —", above the day
        first = _line_of(chat, "bob  a long line")
        text_x = _x(g, chat, f"{first} + 12 chars")  # after "HH:MM  bob  ": the text
        wrapped = chat.text.index(f"{first} + 1 display lines linestart")
        assert chat.text.compare(wrapped, "<", f"{first} lineend")  # it does wrap
        assert _x(g, chat, f"{first} + 1 display lines") >= text_x  # not under the time
        second = _line_of(chat, "and a second line")
        assert _x(g, chat, second) >= text_x - 2  # the marked line, under the text too
        g.screenshot(shots / "timeline.png")

        server.stop()
        g.wait_for(lambda: g.app.state == "reconnecting", "Reconnecting")
        g.wait_for(lambda: "(offline)" in str(chat.people_label.cget("text")),
                   "the people list to say offline")
        colours = {str(chat.people.itemcget(i, "foreground"))
                   for i in range(chat.people.size())}
        assert colours == {"#9aa0a6"}, colours  # greyed: nobody known online

        again = ServerProcess(server.data_dir, chat_port=server.chat_port,
                              screen_port=server.screen_port).start()
        g.wait_for(lambda: g.app.state == "connected", "Connected again")
        g.wait_for(lambda: "online)" in str(chat.people_label.cget("text")), "online again")
        assert "ci-bot joined and left #general" in chat.shown_text()  # kept
        assert "and a second line" in chat.shown_text()
    finally:
        bob.close()
        if again is not None:
            again.stop()


def _line_of(chat: Any, needle: str) -> str:
    found = chat.text.search(needle, "1.0", "end")
    assert found, f"{needle!r} not shown"
    return f"{str(found).split('.')[0]}.0"


def _x(g: GuiHarness, chat: Any, index: str) -> int:
    chat.text.see(index)
    g.pump()
    box = chat.text.bbox(index)
    assert box is not None, index
    return int(box[0])


def test_the_view_window_says_why_there_is_nothing_to_show(xvfb_display: str,
                                                           server: ServerProcess) -> None:
    """`chatscreen view --from ghost` said only "Waiting for a share…" for as long as it ran."""
    viewer = subprocess.Popen(
        [sys.executable, "-m", "chatscreen", "view", "--server", f"127.0.0.1:{server.chat_port}",
         "--screen-port", str(server.screen_port), "--user", "viewer", "--from", "ghost"],
        env={**os.environ, "DISPLAY": xvfb_display}, cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_window(xvfb_display, "chatscreen viewer: Waiting: ghost is not online", viewer)
    finally:
        viewer.terminate()
        viewer.communicate(timeout=TIMEOUT)


def test_a_moderation_notice_is_in_the_timeline_of_an_app_that_joins_later(
        gui: GuiHarness, server: ServerProcess) -> None:  # noqa: F811
    """Issue 16, item 9: a kick notice was sent live only: an app started (or restarted)
    after it never showed it. It is in the room's history now, drawn as a notice."""
    g = gui
    loud, witness = Headless(server, "loud"), Headless(server, "witness")
    try:
        subprocess.run([sys.executable, "-m", "chatscreen", "admin", "--data-dir",
                        str(server.data_dir), "kick", "loud", "--reason", "enough"],
                       check=True, capture_output=True, timeout=3 * TIMEOUT, cwd=REPO)
        deadline = time.monotonic() + TIMEOUT
        while not witness.got("an admin kicked loud: enough", kind="notice"):
            assert time.monotonic() < deadline, witness.seen
            witness.seen.append(witness.tc.events.get(timeout=TIMEOUT))  # wait for one more
        connected(g, server, "alice")
        chat = g.app.chat_tab
        g.select_tab("Chat")
        g.wait_for(lambda: "an admin kicked loud: enough" in chat.shown_text(),
                   "the kick notice from the room's history")
        assert "(admin)" not in chat.shown_text()  # not drawn as someone's chat line
        assert "info" in chat.text.tag_names(_line_of(chat, "an admin kicked loud"))
    finally:
        loud.close()
        witness.close()
