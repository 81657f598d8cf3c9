"""The desktop app's viewing states and layout, on a real Xvfb against the real server
(issue 16: what a newcomer trips over). Driven as in tests/test_gui.py."""

from __future__ import annotations

from pathlib import Path

from chatscreen.client import Client, OutRect, ScreenChannel, ThreadedClient
from chatscreen.codec import encode_jpeg
from chatscreen.gui.net import close_loop
from tests.helpers.display import grab_display
from tests.helpers.gui import GuiHarness
from tests.helpers.server import TIMEOUT, ServerProcess
from tests.test_gui import _bgra, _picture, connected, gui, shots  # noqa: F401


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
