"""The mouse pointer as its own small update: drawn like mss draws it, validated, relayed
newest-wins to every viewer (late ones too), and moving it sends no tiles."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from Xlib import display as xdisplay

from chatscreen.client import OutRect, ScreenChannel
from chatscreen.errors import RemoteProtocolError
from chatscreen.gui.render import Composer, Patch
from chatscreen.protocol import Frame, Limits, parse_message
from chatscreen.protocol.schema import CLIENT_MESSAGES, SERVER_MESSAGES
from chatscreen.screen.capture import ScreenCapture
from chatscreen.screen.cursor import Cursor, CursorError, CursorTracker, Shape, composite
from chatscreen.screen.sharing import ShareStats
from tests.helpers.display import make_test_picture, show_picture
from tests.helpers.server import TIMEOUT, ServerProcess, run
from tests.helpers.sharing import watched_share
from tests.test_screen import sharer_channel, viewer

ARROW = Shape(3, 2, bytes([255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0,
                           9, 9, 9, 1, 200, 100, 50, 254, 1, 2, 3, 255]))


async def until_cursor(screen: ScreenChannel, pred: Callable[[], bool]) -> None:
    """Wait (the caller bounds the time) until a pointer update makes ``pred`` true."""
    while True:
        screen.cursor_changed.clear()
        if pred():
            return
        await screen.cursor_changed.wait()


def test_composite_draws_the_pointer_exactly_as_mss_does(
        xvfb_display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    with show_picture(xvfb_display, make_test_picture(1920, 1080, tmp_path / "p.png")):
        drawn = ScreenCapture(1, with_cursor=True)
        bare = ScreenCapture(1, with_cursor=False)
        try:
            want, got = drawn.grab()[..., 2::-1], bare.grab()[..., 2::-1]
            pointer = bare.cursor()
        finally:
            drawn.close()
            bare.close()
    assert pointer is not None and pointer.shape is not None
    assert not np.array_equal(want, got)  # the pointer is on the screen, not in `got`
    assert np.array_equal(composite(np.ascontiguousarray(got), pointer), want)


def test_composite_clips_and_blends() -> None:
    pixels = np.full((4, 5, 3), 100, np.uint8)
    out = composite(pixels, Cursor(3, -1, ARROW))  # partly off the right and top edges
    assert np.array_equal(pixels, np.full((4, 5, 3), 100, np.uint8))  # a copy
    assert list(out[0, 3]) == [int(9 * (1 / 255) + 100 * (1 - 1 / 255))] * 3
    assert list(out[0, 4]) == [int(200 * 254 / 255 + 100 * (1 - 254 / 255)),
                               int(100 * 254 / 255 + 100 * (1 - 254 / 255)),
                               int(50 * 254 / 255 + 100 * (1 - 254 / 255))]
    assert (out[1:] == 100).all() and (out[:, :3] == 100).all()
    assert np.array_equal(composite(pixels, Cursor(10, 10, ARROW)), pixels)
    assert np.array_equal(composite(pixels, None), pixels)


def test_shape_round_trip_and_bad_pictures() -> None:
    assert Shape.decode(ARROW.encode(), 3, 2) == ARROW
    with pytest.raises(CursorError):
        Shape.decode(ARROW.encode(), 2, 3 + 1)  # inflates to the wrong size
    with pytest.raises(CursorError):
        Shape.decode(b"not zlib", 3, 2)
    with pytest.raises(CursorError):
        Shape.decode(ARROW.encode() + b"x", 3, 2)  # trailing data
    with pytest.raises(CursorError):
        Shape.decode(zlib.compress(bytes(4 * 300 * 300)), 300, 300)  # too big a pointer


def test_tracker_sends_the_picture_only_when_it_changes() -> None:
    t = CursorTracker()
    assert t.update(Cursor(1, 2, ARROW)) == (Cursor(1, 2, ARROW), True)
    assert t.update(Cursor(1, 2, ARROW)) is None
    assert t.update(Cursor(5, 2, ARROW)) == (Cursor(5, 2, ARROW), False)
    other = Shape(1, 1, bytes(4))
    assert t.update(Cursor(5, 2, other)) == (Cursor(5, 2, other), True)
    assert t.update(None) is None


def test_schema_checks_cursor_messages() -> None:
    limits = Limits()
    data = ARROW.encode()
    ok = parse_message(Frame({"type": "cursor", "x": -3, "y": 7, "w": 3, "h": 2}, data),
                       CLIENT_MESSAGES, limits)
    assert ok["x"] == -3 and ok.payload == data
    moved = parse_message(Frame({"type": "cursor", "share": 1, "x": 4, "y": 5}, b""),
                          SERVER_MESSAGES, limits)
    assert moved["share"] == 1
    for header, payload in [({"type": "cursor", "x": 0, "y": 0, "w": 3}, data),  # no h
                            ({"type": "cursor", "x": 0, "y": 0}, data),  # data without size
                            ({"type": "cursor", "x": 0, "y": 0, "w": 3, "h": 2}, b""),
                            ({"type": "cursor", "x": 0, "y": 0, "w": 300, "h": 2}, data),
                            ({"type": "cursor", "x": 99999, "y": 0}, b"")]:
        with pytest.raises(RemoteProtocolError):
            parse_message(Frame(header, payload), CLIENT_MESSAGES, limits)


def test_relay_sends_the_newest_pointer_to_every_viewer_late_ones_too(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        c, sharer = await sharer_channel(server, "pointer")
        await sharer.send_frame(1920, 1080, [OutRect(0, 0, 1920, 1080, "raw",
                                                     bytes(1920 * 1080 * 3))], key=True)
        v, vscreen, share_id = await viewer(server, "early", "pointer")
        vscreen.cursor_messages = True
        async with asyncio.timeout(TIMEOUT):
            # its 6 MB catch-up first: pointer moves made while its connection is busy are
            # merged (newest wins), and this test wants to see both
            got = [await vscreen.next_frame()]
        await sharer.send_cursor(Cursor(10, 20, ARROW), True)
        await sharer.send_cursor(Cursor(30, 40, ARROW), False)
        async with asyncio.timeout(TIMEOUT):
            got += [await vscreen.next_frame() for _ in range(2)]
        assert vscreen.cursors[share_id] == Cursor(30, 40, ARROW)
        assert [m.type for m in got] == ["frame", "cursor", "cursor"]
        assert "w" in got[1].fields and got[2].payload == b""  # the picture once
        late, lscreen, _ = await viewer(server, "late", "pointer")
        async with asyncio.timeout(TIMEOUT):
            msg = await lscreen.next_frame()
            assert msg.type == "frame" and msg["key"]
            await until_cursor(lscreen, lambda: share_id in lscreen.cursors)  # kept, not queued
        assert lscreen.cursors[share_id] == Cursor(30, 40, ARROW)
        for client in (late, v, c):
            await client.close()

    run(scenario())


def test_moving_the_pointer_sends_a_cursor_update_not_tiles(
        server: ServerProcess, xvfb_display: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    disp = xdisplay.Display(xvfb_display)
    root = disp.screen().root
    root.warp_pointer(300, 300)
    disp.sync()

    async def scenario() -> tuple[ShareStats, int, int]:
        cap = await asyncio.to_thread(ScreenCapture, 1)  # with the pointer, as a user sees
        try:
            async with watched_share(server, "mover", "eye3") as w:
                frames = w.stats.frames
                for x, y in [(900, 500), (1200, 700), (40, 60)]:
                    root.warp_pointer(x, y)
                    disp.sync()
                    def there(x: int = x) -> bool:
                        p = w.screen.cursors.get(w.share["id"])
                        return (p is not None and p.shape is not None
                                and p.x <= x < p.x + p.shape.w)

                    async with asyncio.timeout(TIMEOUT):  # until the viewer sees it there
                        await until_cursor(w.screen, there)
                    p = w.screen.cursors[w.share["id"]]
                    want = (await asyncio.to_thread(cap.grab))[..., 2::-1]
                    assert np.array_equal(composite(w.canvas.pixels, p), want)
                return w.stats, frames, w.stats.frames
        finally:
            cap.close()

    with show_picture(xvfb_display, make_test_picture(1920, 1080, tmp_path / "m.png")):
        try:
            stats, before, after = run(scenario())
        finally:
            disp.close()
    assert stats.cursors >= 4 and after == before  # three moves, not one tile


def test_gui_composer_draws_and_lifts_the_pointer() -> None:
    composer = Composer()
    composer.set_box(8, 6)
    base = np.full((6, 8, 3), 50, np.uint8)
    composer.apply(8, 6, True, [Patch(0, 0, base)])
    pointer = Cursor(2, 1, ARROW)
    redraw = composer.set_cursor(pointer)
    assert redraw is not None and redraw.regions
    assert composer.full is not None
    assert np.array_equal(np.asarray(composer.full), composite(base, pointer))
    patch = np.full((2, 8, 3), 7, np.uint8)  # a frame under the pointer
    composer.apply(8, 6, False, [Patch(0, 1, patch)])
    want = base.copy()
    want[1:3] = 7
    assert np.array_equal(np.asarray(composer.full), composite(want, pointer))
    composer.set_cursor(None)
    assert np.array_equal(np.asarray(composer.full), want)
    assert isinstance(composer.full, Image.Image)
