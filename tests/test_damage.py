"""X DAMAGE: the listener on a real Xvfb, the damage-driven sharer, and the polling fallback."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
from Xlib import X
from Xlib import display as xdisplay

from chatscreen.screen.capture import ScreenCapture
from chatscreen.screen.codec import Canvas, psnr
from chatscreen.screen.damage import (
    DamageAccumulator,
    DamageListener,
    Rect,
    bounding_box,
    damage_mask,
)
from chatscreen.screen.encoders import (
    ScreenEncoder,
    changed_boxes,
    damage_changes,
    hinted_change_map,
)
from chatscreen.screen.sharing import CaptureThread, ShareStats, _Grabber, frame_rects
from chatscreen.screen.tiles import Box, change_map
from tests.helpers.server import TIMEOUT, ServerProcess, run
from tests.helpers.sharing import watched_share
from tests.test_video import photo

DEADLINE_S = 5.0


class XWindow:
    """A borderless window on ``display`` that fills rectangles with python-xlib."""

    def __init__(self, display: str, x: int, y: int, w: int, h: int,
                 background: int = 0x202020) -> None:
        self.disp = xdisplay.Display(display)
        screen = self.disp.screen()
        self.win = screen.root.create_window(
            x, y, w, h, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
            background_pixel=background, override_redirect=True)
        self.win.map()
        self.disp.sync()

    def fill(self, x: int, y: int, w: int, h: int, rgb: int) -> None:
        gc = self.win.create_gc(foreground=rgb)
        self.win.fill_rectangle(gc, x, y, w, h)
        gc.free()
        self.disp.sync()

    def put(self, x: int, y: int, bgra: np.ndarray) -> None:
        """Draw a picture (BGRA rows), in bands that fit in one X request."""
        gc = self.win.create_gc()
        h, w = bgra.shape[:2]
        band = max(1, 65536 // w)
        for y0 in range(0, h, band):
            part = np.ascontiguousarray(bgra[y0 : y0 + band])
            self.win.put_image(gc, x, y + y0, w, part.shape[0], X.ZPixmap, 24, 0,
                               part.tobytes())
        gc.free()
        self.disp.sync()

    def close(self) -> None:
        self.win.destroy()
        self.disp.close()


def covers(rects: list[Rect], want: Rect) -> bool:
    x, y, w, h = want
    return any(rx <= x and ry <= y and rx + rw >= x + w and ry + rh >= y + h
               for rx, ry, rw, rh in rects)


def wait_for_rect(listener: DamageListener, want: Rect) -> list[Rect]:
    """Wait (on the listener's event, up to DEADLINE_S) until a reported rect covers want."""
    seen: list[Rect] = []
    deadline = time.monotonic() + DEADLINE_S
    while not covers(seen, want):
        left = deadline - time.monotonic()
        assert left > 0 and listener.wait(left), f"no damage covering {want}; got {seen}"
        seen += listener.take()
    return seen


# -- the accumulator and the tile mask (no X) --------------------------------------------------


def test_accumulator_wakes_once_and_collapses_to_a_bounding_box() -> None:
    acc = DamageAccumulator(max_rects=3)
    assert acc.add([(0, 0, 10, 10)]) is True  # empty before: wake the sharer
    assert acc.add([(20, 20, 5, 5), (0, 0, 0, 9)]) is False  # already pending; empty rect dropped
    assert acc.take() == [(0, 0, 10, 10), (20, 20, 5, 5)]
    assert not acc and acc.take() == []
    acc.add([(i * 10, 5, 2, 2) for i in range(5)])  # more than max_rects
    assert acc.take() == [(0, 5, 42, 2)] == [bounding_box([(0, 5, 2, 2), (40, 5, 2, 2)])]


def test_damage_mask_marks_every_touched_tile_within_the_monitor() -> None:
    mask = damage_mask([(63, 0, 2, 1), (100, 100, 1, 1), (-50, -50, 10, 10)], 200, 130,
                       tile=64)
    assert mask.shape == (3, 4)
    assert mask.tolist() == [[True, True, False, False],
                             [False, True, False, False],
                             [False, False, False, False]]
    # a monitor at (1000, 0): root coordinates are shifted, outside ones ignored
    mask = damage_mask([(1000, 70, 64, 1), (10, 10, 50, 50)], 200, 130, left=1000, tile=64)
    assert np.flatnonzero(mask).tolist() == [4]


def test_hinted_diff_finds_changes_in_hinted_tiles_only_and_keeps_the_truth() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 3, (200, 300, 4), np.uint8)  # few colours: all sent losslessly
    b = a.copy()
    b[10, 10] += 1  # tile (0, 0)
    b[150, 250] += 1  # tile (2, 3)
    full = change_map(a, b, 64)
    hint = np.zeros_like(full)
    hint[0, :2] = True
    hint[2, 2] = True
    got = hinted_change_map(a, b, hint, 64)
    assert (got == (full & hint)).all() and got[0, 0] and not got[2, 3]

    enc = ScreenEncoder("balanced", tile=64)
    assert enc.encode(a.copy(), now=0.0) is not None  # key frame
    # the hint misses (2, 3): not sent now, but the encoder's reference keeps the old tile ...
    up = enc.encode(b.copy(), now=1.0, hint=hint)
    assert up is not None and [(r.x, r.y) for r in up.regions] == [(10, 10)]  # tile (0, 0)
    assert enc.encode(b.copy(), now=2.0, hint=np.zeros_like(hint)) is None
    # ... so the next full comparison still finds it
    up = enc.encode(b.copy(), now=3.0)
    assert up is not None and [(r.x, r.y) for r in up.regions] == [(250, 150)]  # tile (2, 3)
    with pytest.raises(ValueError):
        enc.encode(b.copy(), hint=np.zeros((1, 1), np.bool_))


def test_comparing_only_the_damaged_pixels_finds_the_boxes_a_tile_diff_finds() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        h, w = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        a = rng.integers(0, 2, (h, w), np.uint32)
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            boxes.append(Box(x, y, int(rng.integers(1, w - x + 1)),
                             int(rng.integers(1, h - y + 1))))
        b = a.copy()
        for box in boxes:  # changes inside the boxes only (damage covers every change)
            part = b[box.y : box.y + box.h, box.x : box.x + box.w]
            part ^= (rng.random(part.shape) < 0.02).astype(np.uint32)
        want = {(r, c): xyxy for r, c, xyxy in changed_boxes(a, b, Box(0, 0, w, h), 64)}
        assert damage_changes(a, b, boxes, 64) == want


def test_an_encoder_told_the_damaged_pixels_sends_what_changed_there() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 3, (200, 300, 4), np.uint8)
    b = a.copy()
    b[70:75, 60:70] += 1  # across the edge of tiles (1, 0) and (1, 1)
    b[199, 299] += 1  # the last pixel, in a partial tile
    damage = [Box(50, 66, 30, 20), Box(290, 190, 10, 10)]
    hint = damage_mask([(d.x, d.y, d.w, d.h) for d in damage], 300, 200, tile=64)
    enc = ScreenEncoder("balanced", tile=64)
    assert enc.encode(a.copy(), now=0.0) is not None  # key frame
    up = enc.encode(b.copy(), now=1.0, hint=hint, damage=damage)
    assert up is not None
    assert sorted((r.x, r.y, r.w, r.h) for r in up.regions) == [(60, 70, 10, 5),
                                                                  (299, 199, 1, 1)]


def test_refresh_due_says_when_a_lossy_tile_needs_its_lossless_refresh() -> None:
    enc = ScreenEncoder("balanced", tile=64)
    rng = np.random.default_rng(3)
    a = np.zeros((128, 128, 4), np.uint8)
    assert enc.encode(a.copy(), now=0.0) is not None and enc.refresh_due() is None
    b = a.copy()
    b[:64, :64] = rng.integers(0, 256, (64, 64, 4), np.uint8)  # photographic: sent as JPEG
    up = enc.encode(b.copy(), now=1.0)
    assert up is not None and up.regions[0].enc == "jpeg"
    assert enc.refresh_due() == pytest.approx(1.0 + enc.preset.refresh_after)
    hint = np.zeros((2, 2), np.bool_)  # nothing damaged: only the refresh
    up = enc.encode(b.copy(), now=2.0, hint=hint)
    assert up is not None and up.refreshed == 1 and up.regions[0].enc != "jpeg"
    assert enc.refresh_due() is None


# -- the listener on Xvfb ----------------------------------------------------------------------


def test_listener_reports_a_rectangle_drawn_on_the_display(xvfb_display: str) -> None:
    listener = DamageListener(xvfb_display, track_pointer=False)
    assert listener.start(), listener.unavailable
    win = None
    try:
        win = XWindow(xvfb_display, 300, 200, 400, 300)
        listener.take()
        t0 = time.monotonic()
        win.fill(50, 60, 70, 80, 0xFF0000)
        rects = wait_for_rect(listener, (350, 260, 70, 80))
        assert time.monotonic() - t0 < DEADLINE_S
        assert all(x >= 0 and y >= 0 and x + w <= 1920 and y + h <= 1080
                   for x, y, w, h in rects)
    finally:
        if win is not None:
            win.close()
        listener.close()
    assert not listener.active
    assert not any(t.name == "damage" for t in threading.enumerate())


def test_listener_calls_back_and_stops_on_close(xvfb_display: str) -> None:
    woke = threading.Event()
    with DamageListener(xvfb_display, on_damage=woke.set, track_pointer=False) as listener:
        assert listener.active
        win = XWindow(xvfb_display, 10, 10, 50, 50)
        try:
            assert woke.wait(DEADLINE_S)
        finally:
            win.close()
    assert not listener.active


def test_listener_reports_where_the_pointer_was_and_is(xvfb_display: str) -> None:
    """The pointer is not in the framebuffer (mss draws it in): DAMAGE does not see it move,
    the listener's pointer tracking does."""
    disp = xdisplay.Display(xvfb_display)
    root = disp.screen().root
    root.warp_pointer(100, 100)
    disp.sync()
    try:
        with DamageListener(xvfb_display, pointer_hz=100) as listener:
            assert listener.active
            listener.take()
            root.warp_pointer(900, 700)
            disp.sync()
            rects = wait_for_rect(listener, (900, 700, 1, 1))
            assert covers(rects, (100, 100, 1, 1))  # reported with the new position
    finally:
        disp.close()


def wait_for_moves(listener: DamageListener, more_than: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while listener.pointer_moves <= more_than:
        left = deadline - time.monotonic()
        assert left > 0 and listener.wait(left), "the pointer's change was not reported"
        listener.take()


def test_a_still_pointer_costs_no_round_trips_and_a_move_is_seen(xvfb_display: str) -> None:
    """With XInput 2.2 the position is asked for when the pointer moves (a raw motion event),
    not pointer_hz times a second; with XFixes a new picture of the pointer is reported."""
    win = XWindow(xvfb_display, 300, 200, 400, 300)
    disp = xdisplay.Display(xvfb_display)
    root = disp.screen().root
    try:
        with DamageListener(xvfb_display, pointer_hz=1000, pointer_rects=False) as listener:
            assert listener.motion_events and listener.cursor_events
            listener.take()
            started, polls = time.monotonic(), listener.pointer_polls
            for k in range(20):  # 20 reports of damage, each waited for
                win.fill(10 + k, 10, 1, 1, 0x00FF00)
                wait_for_rect(listener, (310 + k, 210, 1, 1))
            took = time.monotonic() - started
            # polled at 1000 Hz, that would be ~1000 round trips a second
            assert listener.pointer_polls - polls <= 2 + took * 1.0, (listener.pointer_polls,
                                                                      took)
            moves = listener.pointer_moves
            disp.xtest_fake_input(X.MotionNotify, x=777, y=555)
            disp.sync()
            wait_for_moves(listener, moves)
            assert listener._pointer == (777, 555)
            moves = listener.pointer_moves
            font = disp.open_font("cursor")
            busy = font.create_glyph_cursor(font, 150, 151, (65535, 65535, 65535), (0, 0, 0))
            root.change_attributes(cursor=busy)  # a new picture, no move
            disp.sync()
            wait_for_moves(listener, moves)
            root.change_attributes(cursor=X.NONE)
            disp.sync()
    finally:
        disp.close()
        win.close()


def test_damage_read_during_the_pointer_query_is_reported_at_once(xvfb_display: str) -> None:
    """Damage read from the socket while the listener waits for the pointer's reply is in
    its queue, not in the socket: the listener must not wait in select() for more (the
    next pointer poll, 10 s away here) before reporting it."""
    win = XWindow(xvfb_display, 300, 200, 400, 300)
    listener = DamageListener(xvfb_display, pointer_hz=0.1)  # a pointer poll every 10 s
    drawn = threading.Event()
    real = listener._pointer_moved

    def draw_then_query(wire: Any) -> list[Rect]:
        if not drawn.is_set():  # the first poll: draw, so that the damage comes before
            drawn.set()  # the reply of the pointer query that follows
            win.fill(10, 10, 20, 20, 0x00FF00)
        return real(wire)

    listener._pointer_moved = draw_then_query  # type: ignore[method-assign]
    try:
        assert listener.start(), listener.unavailable  # its first poll draws, then asks
        seen: list[Rect] = []
        deadline = time.monotonic() + DEADLINE_S
        while (310, 210, 20, 20) not in seen:  # the rect itself (the start may report the
            left = deadline - time.monotonic()  # whole screen once, which covers it)
            assert left > 0 and listener.wait(left), f"the fill was not reported: {seen}"
            seen += listener.take()
        assert drawn.is_set()
    finally:
        listener.close()
        win.close()


def test_without_its_thread_the_listener_reports_on_the_callers_thread(
        xvfb_display: str) -> None:
    """``threaded=False``: the sharer's capture thread reads the events itself (pump): a
    drawing is reported once over, a poke from another thread ends the wait at once, and
    nothing to report ends it at the timeout."""
    win = XWindow(xvfb_display, 300, 200, 400, 300)
    listener = DamageListener(xvfb_display, threaded=False)
    try:
        assert listener.start(), listener.unavailable
        assert listener.active and listener._thread is None
        listener.take()
        win.fill(10, 10, 20, 20, 0x00FF00)
        seen: list[Rect] = []
        deadline = time.monotonic() + DEADLINE_S
        while not covers(seen, (310, 210, 20, 20)):
            assert time.monotonic() < deadline, seen
            if listener.pump(DEADLINE_S) == "damage":
                seen += listener.take()
        poker = threading.Thread(target=listener.poke)
        poker.start()
        assert listener.pump(10 * DEADLINE_S) == "poked"
        poker.join()
        started = time.monotonic()
        while (got := listener.pump(0.05)) == "damage":  # what is left of the drawing
            listener.take()
        assert got == "timeout" and time.monotonic() - started < DEADLINE_S
    finally:
        listener.close()
        win.close()
    assert not listener.active


def test_listener_says_why_it_cannot_listen() -> None:
    off = DamageListener(":0", enabled=False)
    assert off.start() is False and off.unavailable == "disabled"
    gone = DamageListener(":4242")  # no X server there
    assert gone.start() is False and gone.unavailable and "4242" in gone.unavailable
    none = DamageListener("")
    assert none.start() is False and none.unavailable
    for listener in (off, gone, none):
        listener.close()


# -- the sharer ---------------------------------------------------------------------------------


def test_the_capture_thread_runs_jobs_in_order_on_one_thread_and_passes_errors_on() -> None:
    async def scenario() -> None:
        worker = CaptureThread(asyncio.get_running_loop())
        try:
            seen: list[tuple[int, int]] = []

            def job(k: int) -> int:
                seen.append((k, threading.get_ident()))
                return k * k

            pending = [worker.run(job, k) for k in range(5)]
            assert await asyncio.gather(*pending) == [0, 1, 4, 9, 16]
            assert [k for k, _ in seen] == list(range(5))
            assert len({t for _, t in seen}) == 1 and seen[0][1] != threading.get_ident()
            with pytest.raises(ZeroDivisionError):
                await worker.run(lambda: 1 // 0)
            assert await worker.run(job, 7) == 49  # an error does not end the thread
        finally:
            worker.stop()
        worker._thread.join(DEADLINE_S)
        assert not worker._thread.is_alive()

    asyncio.run(scenario())


def share_and_draw(server: ServerProcess, display: str, *, damage: bool) -> ShareStats:
    """Share the display, draw a red square on it, return once the watcher shows it."""
    x, y, side = 640, 384, 128

    async def scenario() -> ShareStats:
        async with watched_share(server, "drawer", "eye", damage=damage) as w:
            win = await asyncio.to_thread(XWindow, display, x, y, side, side, 0x0000FF)
            try:
                await asyncio.to_thread(win.fill, 0, 0, side, side, 0xFF0000)
                async with asyncio.timeout(3 * TIMEOUT):
                    while True:
                        msg = await w.screen.next_frame()
                        w.canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                        seen = w.canvas.pixels[y + 10 : y + side - 10, x + 10 : x + side - 10]
                        if (seen == (255, 0, 0)).all():
                            break
            finally:
                await asyncio.to_thread(win.close)
        return w.stats

    stats: ShareStats = run(scenario())
    return stats


def test_sharer_with_damage_sends_the_change_and_captures_only_on_damage(
        server: ServerProcess, xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    stats = share_and_draw(server, xvfb_display, damage=True)
    assert stats.damage
    assert stats.key_frames == 1
    # no blind polling: (almost) every capture found something to send
    assert stats.captures <= stats.frames + 3, (stats.captures, stats.frames)


def test_sharer_without_damage_falls_back_to_polling(
        server: ServerProcess, xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    stats = share_and_draw(server, xvfb_display, damage=False)
    assert not stats.damage
    assert stats.key_frames == 1 and stats.frames >= 2


def test_with_a_stream_in_a_large_damage_its_tiles_are_captured_first(
        xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage over much of the screen (an application redrawing the bounding box of all it
    changed) with an H.264 stream running in it: the sharer captures the stream's tiles and
    starts x264 on them before capturing the rest (``_grab_stream_first``); what the viewer
    decodes is still the screen, the change far from the stream exact."""
    monkeypatch.setenv("DISPLAY", xvfb_display)
    win = XWindow(xvfb_display, 0, 0, 1920, 1080)
    grabber = _Grabber(1, None, None)
    first = 0
    real = grabber._grab_stream_first

    def counted(scratch: Any, mask: Any) -> Any:
        nonlocal first
        out = real(scratch, mask)
        first += out is not None
        return out

    grabber._grab_stream_first = counted  # type: ignore[method-assign]
    canvas = Canvas(1920, 1080)

    def apply(grabbed: tuple[int, int, Any] | None) -> None:
        if grabbed is not None:
            w, h, u = grabbed
            canvas.apply(w, h, u.key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in u.regions])

    try:
        apply(grabber.grab(True))
        for k in range(20):
            win.put(200, 150, photo(k, 500, 300))  # the "video"
            win.fill(1800, 1000, 20, 20, 0xFF00FF if k % 2 else 0x00FF00)  # far from it
            apply(grabber.grab(False, [(200, 150, 1620, 870)]))  # their bounding box
        assert grabber.encoder.stream_area() is not None and first >= 5, first
        assert grabber.encoder.video is not None
        assert grabber.encoder.video.box == Box(200, 150, 500, 300)  # fitted to the video
        shot = np.ascontiguousarray(grabber.capture.grab()[..., 2::-1])
        assert np.array_equal(canvas.pixels[1000:1020, 1800:1820], shot[1000:1020, 1800:1820])
        assert psnr(canvas.pixels[150:450, 200:700], shot[150:450, 200:700]) > 35
        deadline = time.monotonic() + DEADLINE_S  # still: the lossless refresh, 0.3 s on
        while not np.array_equal(canvas.pixels, shot):
            assert time.monotonic() < deadline, "the still screen never became exact"
            apply(grabber.grab(False, []))
    finally:
        grabber.close()
        win.close()


def test_a_rectangle_captured_into_a_picture_is_the_screen_there(
        xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``grab_into`` reads the rectangle straight out of the shared memory segment (without
    the pointer) or, with the pointer drawn in, through mss: either way the picture then
    holds exactly what a whole capture shows there, and nothing else changed; and so does
    ``grab_boxes_into`` for several rectangles at once (one round trip)."""
    monkeypatch.setenv("DISPLAY", xvfb_display)
    win = XWindow(xvfb_display, 0, 0, 1920, 1080)
    captures = [ScreenCapture(1, with_cursor=False), ScreenCapture(1, with_cursor=True)]
    try:
        win.put(0, 0, photo(3, 1920, 1080))
        for cap in captures:
            whole = cap.grab().copy()  # the first grab: mss finds MIT-SHM working
            out = np.zeros_like(whole)
            for x, y, w, h in ((0, 0, 64, 64), (448, 256, 1088, 640), (1, 3, 1919, 1077),
                               (1855, 1079, 65, 1), (700, 20, 1, 900)):
                out[:] = 0
                cap.grab_into(out, x, y, w, h)
                assert np.array_equal(out[y : y + h, x : x + w], whole[y : y + h, x : x + w])
                out[y : y + h, x : x + w] = 0
                assert not out.any(), (x, y, w, h)
            boxes = [(0, 0, 64, 64), (1, 381, 1918, 19), (1536, 1056, 384, 24),
                     (700, 20, 1, 900), (10, 10, 100, 100)]  # (the last two overlap)
            out[:] = 0
            cap.grab_boxes_into(out, boxes)  # one round trip where the segment is read
            for x, y, w, h in boxes:
                assert np.array_equal(out[y : y + h, x : x + w], whole[y : y + h, x : x + w])
            for x, y, w, h in boxes:
                out[y : y + h, x : x + w] = 0
            assert not out.any()
        reader = captures[0]._shm  # it reads the segment in place
        assert reader is not None and reader.read_into(np.zeros((8, 8, 4), np.uint8), 0, 0)
        assert captures[1]._shm is None  # the pointer is mss's to draw
    finally:
        for cap in captures:
            cap.close()
        win.close()


def test_thin_damage_is_captured_as_it_is_and_the_viewer_stays_exact(
        xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Typing: a line ~20 pixels high changes, and a clock far from it. The sharer captures
    those rectangles (not the 64-pixel tiles they touch) into its copy of the screen, looks
    for no scroll in them, and what the viewer decodes is the screen, bit for bit."""
    monkeypatch.setenv("DISPLAY", xvfb_display)
    win = XWindow(xvfb_display, 0, 0, 1920, 1080, background=0xF0F0F0)
    grabber = _Grabber(1, None, None)
    captured: list[tuple[int, int, int, int]] = []
    real = grabber.capture.grab_into

    def counted(out: Any, x: int, y: int, w: int, h: int) -> None:
        captured.append((x, y, w, h))
        real(out, x, y, w, h)

    def counted_boxes(out: Any, boxes: list[tuple[int, int, int, int]]) -> None:
        captured.extend(boxes)
        real_boxes(out, boxes)

    real_boxes = grabber.capture.grab_boxes_into
    grabber.capture.grab_into = counted  # type: ignore[method-assign]
    grabber.capture.grab_boxes_into = counted_boxes  # type: ignore[method-assign]
    canvas = Canvas(1920, 1080)

    def apply(grabbed: tuple[int, int, Any] | None) -> None:
        if grabbed is not None:
            w, h, u = grabbed
            canvas.apply(w, h, u.key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in u.regions])

    try:
        apply(grabber.grab(True))
        apply(grabber.grab(False, [(0, 0, 1920, 1080)]))  # a whole capture: the copy to keep
        for k in range(12):
            captured.clear()
            line = (1, 381 + (k // 4) * 19, 1918, 19)
            win.fill(10 * k + 1, line[1] + 2, 8, 14, 0x202020 + k)  # a "glyph" on the line
            win.fill(1536, 1056, 384, 24, 0x00FF00 if k % 2 else 0x0000FF)  # the "clock"
            apply(grabber.grab(False, [line, (1536, 1056, 384, 24)]))
            assert sorted(captured) == sorted([line, (1536, 1056, 384, 24)])
            assert not grabber.encoder.moves
            shot = np.ascontiguousarray(grabber.capture.grab()[..., 2::-1])
            assert np.array_equal(canvas.pixels, shot), k
    finally:
        grabber.close()
        win.close()
