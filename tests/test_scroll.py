"""Scrolling as ``copy`` rects: the detector, the encoder's round trip, the relay's pinning,
and the whole path through a real server for a live, a late and a throttled viewer."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont

from chatscreen.client import OutRect
from chatscreen.client.screen import merge_frames
from chatscreen.errors import RemoteProtocolError, ServerError
from chatscreen.protocol import Frame, Limits, Message, parse_message
from chatscreen.protocol.schema import CLIENT_MESSAGES, Rect
from chatscreen.screen.codec import COPY, Canvas, DecodeError
from chatscreen.screen.cursor import composite
from chatscreen.screen.encoders import ScreenEncoder
from chatscreen.screen.scroll import Move, apply_move, detect_move, move_tiles
from chatscreen.screen.sharing import frame_rects
from chatscreen.screen.tiles import TILE, change_map, grid
from chatscreen.server.screen import MAX_COPY_DEPTH, Piece, TileStore
from tests.helpers.server import TIMEOUT, ServerProcess, run
from tests.test_screen import RawViewer, sharer_channel, viewer

W, H = 1920, 1080
LINE = 14
TEXT_H = 1000  # the document's window; below it a status bar, right of it a side panel
PANEL_X = 1600
_FONT = ImageFont.load_default()


def document(top: int, *, scrollbar: bool = False) -> np.ndarray:
    """BGRA screen: a text document scrolled to line ``top`` (one line = LINE rows), a still
    side panel and status bar; with ``scrollbar``, a thumb inside the text window that moves."""
    im = Image.new("RGB", (W, H), (250, 250, 248))
    d = ImageDraw.Draw(im)
    for k in range(-1, TEXT_H // LINE + 2):
        n = top + k
        d.text((6, k * LINE + 1), f"{n:6d}  def handle(self, peer, msg):  # line {n} of a "
               f"long document " + "x" * (n % 37), fill=(20, 20, 30), font=_FONT)
    d.rectangle((0, TEXT_H, W, H), fill=(40, 44, 52))  # status bar (covers the last line)
    d.text((10, TEXT_H + 20), "status: editing", fill=(200, 200, 200), font=_FONT)
    d.rectangle((PANEL_X, 0, W, TEXT_H), fill=(230, 235, 240))
    for k in range(20):
        d.text((PANEL_X + 10, 20 + 40 * k), f"file_{k}.py", fill=(10, 60, 120), font=_FONT)
    if scrollbar:
        y = (top * 3) % (TEXT_H - 100)
        d.rectangle((PANEL_X - 12, 0, PANEL_X - 1, TEXT_H - 1), fill=(220, 220, 220))
        d.rectangle((PANEL_X - 12, y, PANEL_X - 1, y + 80), fill=(120, 120, 120))
    a = np.asarray(im)
    out = np.empty((H, W, 4), np.uint8)
    out[..., :3] = a[..., ::-1]
    out[..., 3] = 255
    return out


def rgb(bgra: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgra[..., 2::-1])


# -- the detector ----------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(0, 3), (10, 4), (7, 8), (100, 160)])
def test_detect_move_finds_a_scroll_either_way(a: int, b: int) -> None:
    prev, cur = document(a), document(b)
    move = detect_move(prev, cur, change_map(prev, cur))
    if abs(b - a) * LINE > TEXT_H - 32:  # nothing left in common: no move to find
        assert move is None
        return
    assert move is not None
    assert move.sy - move.y == (b - a) * LINE and move.x == move.sx
    assert move.x == 0 and move.w >= 512 and move.h >= TEXT_H - abs(b - a) * LINE - 2 * LINE
    fixed = prev.copy()
    apply_move(fixed, move)
    assert np.array_equal(fixed[move.y : move.y + move.h, move.x : move.x + move.w],
                          cur[move.y : move.y + move.h, move.x : move.x + move.w])
    # after the copy, only the exposed lines (and tiles cut by the copy's edges) differ
    share = 0.4 if abs(b - a) <= 10 else 0.95
    assert change_map(fixed, cur).sum() < share * change_map(prev, cur).sum()


def test_detect_move_leaves_out_a_scrollbar_that_moves_differently() -> None:
    prev, cur = document(20, scrollbar=True), document(23, scrollbar=True)
    move = detect_move(prev, cur, change_map(prev, cur))
    assert move is not None and move.sy - move.y == 3 * LINE
    assert move.x + move.w <= PANEL_X - 12  # the scrollbar's column is not copied


def test_detect_move_says_none_for_changes_that_are_not_moves() -> None:
    prev = document(0)
    rng = np.random.default_rng(1)
    noise = prev.copy()
    noise[100:700, 100:900, :3] = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    assert detect_move(prev, noise, change_map(prev, noise)) is None
    small = prev.copy()
    small[10:30, 10:200] = 0  # a few tiles: not worth looking
    assert detect_move(prev, small, change_map(prev, small)) is None
    assert detect_move(prev, prev.copy(), change_map(prev, prev)) is None


def test_move_tiles_and_apply_move_handle_overlap() -> None:
    img = np.arange(10 * 6 * 4, dtype=np.uint8).reshape(10, 6, 4)
    want = img.copy()
    want[0:7] = img[3:10].copy()
    apply_move(img, Move(0, 0, 6, 7, 0, 3))
    assert np.array_equal(img, want)
    m = move_tiles(Move(10, 70, 100, 60, 10, 90), (3, 4))
    assert sorted(zip(*np.nonzero(m), strict=True)) == [(1, 0), (1, 1), (2, 0), (2, 1)]


# -- the encoder and the canvas --------------------------------------------------------------


def apply_update(canvas: Canvas, regions: list[OutRect], key: bool) -> None:
    canvas.apply(W, H, key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in regions])


@pytest.mark.parametrize("damage", [False, True])
def test_encoder_sends_scrolls_as_copies_bit_exact_and_small(damage: bool) -> None:
    """Polling (the whole screen compared) or with a damage hint (the text window and the
    status bar; the encoder then reuses the hashes of the region it compared)."""
    enc = ScreenEncoder()
    hint = np.zeros(grid(W, H), bool)
    hint[: -(-(TEXT_H + 40) // TILE), : PANEL_X // TILE] = True
    canvas = Canvas(W, H)
    first = enc.encode(document(0), now=0.0)
    assert first is not None and first.key
    apply_update(canvas, first.regions, True)
    tops = [1, 2, 4, 3, 3, 10, 9, 40, 41]  # down, up, a jump, still, a big jump
    for n, top in enumerate(tops, start=1):
        img = document(top)
        if n == 6:  # something else changes too: the status bar
            img[TEXT_H + 10 : TEXT_H + 40, 300:700] = 255
        u = enc.encode(img, now=n / 30, hint=hint if damage else None)
        if u is None:
            assert top == tops[n - 2]
            continue
        apply_update(canvas, u.regions, u.key)
        assert np.array_equal(canvas.pixels, rgb(img)), n  # lossless while moving
        if abs(top - tops[n - 2]) <= 10:
            assert u.regions[0].enc == "copy" and u.move is not None
            assert u.size < first.size / 5, (n, u.size, first.size)


def test_copy_rect_data_is_checked() -> None:
    canvas = Canvas(100, 50)
    with pytest.raises(DecodeError):
        canvas.apply(100, 50, False, [(0, 0, 10, 10, "copy", COPY.pack(95, 0))])
    with pytest.raises(DecodeError):
        canvas.apply(100, 50, False, [(0, 0, 10, 10, "copy", b"\0" * 4)])


def copy_header(sx: int, sy: int, *, key: bool = False, length: int = 8) -> dict[str, Any]:
    return {"type": "frame", "seq": 1, "w": 100, "h": 50, "key": key,
            "rects": [{"x": 0, "y": 0, "w": 60, "h": 40, "enc": "copy", "len": length}]}


def test_schema_checks_copy_rects() -> None:
    limits = Limits()
    ok = parse_message(Frame(copy_header(40, 10), COPY.pack(40, 10)), CLIENT_MESSAGES, limits)
    assert ok["rects"][0].enc == "copy"
    for header, payload in [(copy_header(41, 0), COPY.pack(41, 0)),  # source past the right
                            (copy_header(0, 11), COPY.pack(0, 11)),  # and past the bottom
                            (copy_header(0, 0, length=4), b"\0" * 4)]:
        with pytest.raises(RemoteProtocolError):
            parse_message(Frame(header, payload), CLIENT_MESSAGES, limits)


# -- the relay's pinning ---------------------------------------------------------------------


def raw(pid: int, x: int, y: int, w: int, h: int, value: int) -> Piece:
    data = bytes([value % 256]) * (w * h * 3)
    return Piece(pid, pid, {"x": x, "y": y, "w": w, "h": h, "enc": "raw", "len": len(data)},
                 data)


def copy(pid: int, x: int, y: int, w: int, h: int, sx: int, sy: int) -> Piece:
    return Piece(pid, pid, {"x": x, "y": y, "w": w, "h": h, "enc": "copy", "len": 8},
                 COPY.pack(sx, sy))


def replay(pieces: list[Piece]) -> list[tuple[int, int, int, int, str, bytes]]:
    return [(p.rect["x"], p.rect["y"], p.rect["w"], p.rect["h"], p.rect["enc"], p.data)
            for p in pieces]


def test_tile_store_pins_what_a_copy_reads() -> None:
    store = TileStore(256, 128, first_id=1)
    store.add(raw(1, 0, 0, 256, 128, 1))
    store.add(raw(2, 0, 64, 256, 64, 2))  # the bottom row of tiles
    store.add(copy(3, 0, 0, 256, 64, 0, 64))  # scroll: the bottom row moves up
    store.add(raw(4, 0, 64, 256, 64, 4))  # the exposed row: piece 2 is overwritten...
    assert list(store.live) == [2, 3, 4]  # ...but the copy still needs it (1 is gone)
    assert store.live[2].refs == 1 and store.live[3].depth == 1
    truth = Canvas(256, 128)
    truth.apply(256, 128, True, replay([raw(1, 0, 0, 256, 128, 1), raw(2, 0, 64, 256, 64, 2),
                                         copy(3, 0, 0, 256, 64, 0, 64),
                                         raw(4, 0, 64, 256, 64, 4)]))
    late = Canvas(256, 128)
    late.apply(256, 128, True, replay(store.newer_than(0)))
    assert np.array_equal(late.pixels, truth.pixels)
    assert truth.pixels[0, 0, 0] == 2 and truth.pixels[100, 0, 0] == 4
    store.add(raw(5, 0, 0, 256, 64, 5))  # the copy is overwritten: it and its pins go
    assert list(store.live) == [4, 5]


def test_a_chain_of_copies_deeper_than_the_limit_asks_for_a_key_frame() -> None:
    store = TileStore(128, 256, first_id=1)
    store.add(raw(1, 0, 0, 128, 256, 1))
    pid = 2
    for n in range(MAX_COPY_DEPTH + 1):
        assert not store.overflow, n
        store.add(copy(pid, 0, 0, 128, 192, 0, 64))
        store.add(raw(pid + 1, 0, 192, 128, 64, n))
        pid += 2
    assert store.overflow and store.max_depth == MAX_COPY_DEPTH + 1


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 2),
                          st.integers(1, 4), st.integers(1, 3), st.integers(-2, 2),
                          st.integers(-70, 70)), min_size=1, max_size=40),
       st.sets(st.integers(0, 45)))
def test_catching_up_through_copies_gives_the_current_picture(
        ops: list[tuple[bool, int, int, int, int, int, int]], catch_points: set[int]) -> None:
    """Random tile updates and copies (any offset, overlapping or not); viewers that took the
    store's newer pieces at arbitrary moments, or joined at the end, see the true picture."""
    w, h = 256, 192
    rng = np.random.default_rng(0)
    first = Piece(1, 1, {"x": 0, "y": 0, "w": w, "h": h, "enc": "raw", "len": w * h * 3},
                  rng.integers(0, 256, w * h * 3, dtype=np.uint8).tobytes())
    pieces = [first]
    for n, (is_copy, c, r, cw, rh, dxt, dy) in enumerate(ops, start=2):
        x, y = c * TILE, r * TILE
        rw, rh_ = min(cw * TILE, w - x), min(rh * TILE, h - y)
        if is_copy:
            sx = min(max(x + dxt * TILE // 2, 0), w - rw)
            sy = min(max(y + dy, 0), h - rh_)
            pieces.append(copy(n, x, y, rw, rh_, sx, sy))
        else:
            pieces.append(raw(n, x, y, rw, rh_, n * 37))
    assert_catching_up_gives_the_picture(w, h, pieces, catch_points)


def assert_catching_up_gives_the_picture(w: int, h: int, pieces: list[Piece],
                                         catch_points: set[int]) -> None:
    """Add ``pieces`` (the first a key frame) to a store; a viewer takes the store's newer
    pieces after each piece whose id is in ``catch_points`` and at the end, another joins at
    the end: both see what applying every piece in order gives."""
    store = TileStore(w, h, first_id=1)
    truth, viewer_ = Canvas(w, h), Canvas(w, h)
    sent = 0
    for piece in pieces:
        store.add(piece)
        truth.apply(w, h, piece.id == 1, replay([piece]))
        if piece.id in catch_points:
            viewer_.apply(w, h, sent < store.key_id, replay(store.newer_than(sent)))
            sent = store.last_id
    viewer_.apply(w, h, sent < store.key_id, replay(store.newer_than(sent)))
    assert np.array_equal(viewer_.pixels, truth.pixels)
    late = Canvas(w, h)
    late.apply(w, h, True, replay(store.newer_than(0)))
    assert np.array_equal(late.pixels, truth.pixels)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 255), st.integers(0, 191),
                          st.integers(1, 200), st.integers(1, 150), st.integers(0, 255),
                          st.integers(0, 191)), min_size=1, max_size=40),
       st.sets(st.integers(0, 45)))
def test_pieces_off_the_tile_grid_replay_to_the_current_picture(
        ops: list[tuple[bool, int, int, int, int, int, int]], catch_points: set[int]) -> None:
    """Rectangles and copies anywhere, of any size: a piece drops from the tiles it covers in
    part the pieces it draws over entirely; viewers catching up at arbitrary moments, or
    joining at the end, still see the true picture."""
    w, h = 256, 192
    pieces = [raw(1, 0, 0, w, h, 1)]
    for n, (is_copy, x, y, rw, rh, sx, sy) in enumerate(ops, start=2):
        rw, rh = min(rw, w - x), min(rh, h - y)
        pieces.append(copy(n, x, y, rw, rh, min(sx, w - rw), min(sy, h - rh)) if is_copy
                      else raw(n, x, y, rw, rh, n * 37))
    assert_catching_up_gives_the_picture(w, h, pieces, catch_points)


def test_a_rectangle_repeated_off_the_tile_grid_does_not_pile_up() -> None:
    """A video fitted inside its tiles (an h264 stream of 100x70 at 30,20) sends the same
    rectangle every frame: each replaces the last on the tiles it covers in part, so the
    relay neither keeps them all nor asks for a key frame (MAX_PARTIAL)."""
    store = TileStore(256, 192, first_id=1)
    store.add(raw(1, 0, 0, 256, 192, 1))
    for pid in range(2, 200):
        store.add(raw(pid, 30, 20, 100, 70, pid))
    assert not store.overflow
    assert sorted(store.live) == [1, 199]
    assert max(len(parts) for parts in store.partial) == 1


def test_client_merge_keeps_what_a_later_copy_reads() -> None:
    def msg(seq: int, rects: list[tuple[int, int, int, int, str, bytes]]) -> Message:
        rs = tuple(Rect(x, y, w_, h_, enc, len(d)) for x, y, w_, h_, enc, d in rects)
        return Message("frame", {"share": 1, "seq": seq, "w": 8, "h": 8, "key": False,
                                 "rects": rs}, b"".join(r[5] for r in rects))

    fill = [(0, 4, 8, 4, "raw", bytes([7]) * 96)]
    a = msg(1, fill)
    b = msg(2, [(0, 0, 8, 4, "copy", COPY.pack(0, 4)), (0, 4, 8, 4, "raw", bytes([9]) * 96)])
    one, two = Canvas(8, 8), Canvas(8, 8)
    for m in (a, b):
        one.apply(8, 8, False, frame_rects(m))
    two.apply(8, 8, False, frame_rects(merge_frames(a, b)))
    assert np.array_equal(one.pixels, two.pixels) and one.pixels[0, 0, 0] == 7


# -- through the real server -----------------------------------------------------------------


def scroll_updates(steps: int) -> tuple[list[tuple[bool, list[OutRect]]], list[np.ndarray]]:
    """The reference encoder's updates for a document scrolled one line per step (with a
    scrollbar), and the screen after each."""
    enc = ScreenEncoder()
    out, screens = [], []
    for n in range(steps + 1):
        img = document(n, scrollbar=True)
        u = enc.encode(img, now=n / 30)
        assert u is not None
        out.append((u.key, list(u.regions)))
        screens.append(rgb(img))
    return out, screens


def test_scrolling_through_the_server_is_bit_exact_for_live_late_and_slow_viewers(
        server: ServerProcess) -> None:
    steps = 40
    updates, screens = scroll_updates(steps)
    assert sum(any(r.enc == "copy" for r in rs) for _, rs in updates) >= steps - 2

    async def scenario() -> None:
        c, sharer = await sharer_channel(server, "scroller")
        key, regions = updates[0]
        await sharer.send_frame(W, H, regions, key=key)
        v, vscreen, share_id = await viewer(server, "live", "scroller")
        live = Canvas(W, H)
        msg = await vscreen.next_frame(timeout=TIMEOUT)
        live.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        assert np.array_equal(live.pixels, screens[0])
        slow = await asyncio.to_thread(RawViewer, server, "slow", share_id, 300e3)
        loop = asyncio.get_running_loop()
        slow_task = loop.run_in_executor(None, slow.read_until, screens[-1],
                                         time.monotonic() + 4 * TIMEOUT)
        late: tuple[Any, Any, int] | None = None
        for n in range(1, steps + 1):
            key, regions = updates[n]
            await sharer.send_frame(W, H, regions, key=key)
            while True:  # the live viewer follows frame by frame, exactly
                msg = await vscreen.next_frame(timeout=TIMEOUT)
                live.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                if msg["seq"] == n + 1:
                    break
            assert np.array_equal(live.pixels, screens[n]), n
            if n == steps // 2:  # a viewer joins mid-scroll: the exact picture at once
                late = await viewer(server, "late", "scroller")
                lc = Canvas(W, H)
                lmsg = await late[1].next_frame(timeout=TIMEOUT)
                assert lmsg["key"]
                lc.apply(lmsg["w"], lmsg["h"], lmsg["key"], frame_rects(lmsg))
                assert np.array_equal(lc.pixels, screens[n])
        await slow_task  # the throttled viewer ends on exactly the last picture
        slow.close()
        assert slow.canvas.complete and np.array_equal(slow.canvas.pixels, screens[-1])
        assert late is not None
        await late[0].close()
        await v.close()
        await c.close()

    run(scenario())


def test_a_key_frame_with_a_copy_is_refused(server: ServerProcess) -> None:
    async def scenario() -> None:
        c, sharer = await sharer_channel(server, "badcopy")
        await sharer.send_frame(W, H, [OutRect(0, 0, W, H, "raw", bytes(W * H * 3))], key=True)
        await sharer.send_frame(W, H, [OutRect(0, 0, 64, 64, "copy", COPY.pack(64, 0))],
                                key=True)
        with pytest.raises((ServerError, ConnectionResetError)):
            async with asyncio.timeout(TIMEOUT):
                await sharer.share(W, H)  # answered by the error, or the link is closed
        await c.close()

    run(scenario())


def test_copy_payload_layout() -> None:
    assert COPY.pack(1, 2) == struct.pack(">II", 1, 2) and COPY.size == 8


# -- the real sharer on Xvfb -----------------------------------------------------------------


@pytest.mark.parametrize("workload", ["typing", "scrolling"])
def test_real_sharer_follows_a_workload_and_ends_exact(
        server: ServerProcess, xvfb_display: str, monkeypatch: pytest.MonkeyPatch,
        workload: str) -> None:
    """The sharer on Xvfb with X DAMAGE (small damage: only its box is captured; a scroll:
    copies) while bench/screen_workloads.py types or scrolls for 1.5 s at 30 changes/s: the
    viewer's picture then equals the screen bit for bit."""
    import subprocess
    import sys
    from pathlib import Path

    from chatscreen.screen.capture import ScreenCapture
    from tests.helpers.sharing import watched_share

    monkeypatch.setenv("DISPLAY", xvfb_display)
    script = Path(__file__).resolve().parents[1] / "bench" / "screen_workloads.py"
    proc = subprocess.Popen([sys.executable, str(script), workload, "--seconds", "1.5",
                             "--max-seconds", "60"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        deadline = time.monotonic() + 3 * TIMEOUT
        while b"ready" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None

        async def scenario() -> set[str]:
            cap = await asyncio.to_thread(ScreenCapture, 1)
            encs: set[str] = set()
            try:
                async with watched_share(server, "worker", "eye2") as w:
                    assert proc.stdin is not None
                    proc.stdin.write(b"go\n")
                    proc.stdin.flush()
                    still_from = time.monotonic() + 1.6
                    async with asyncio.timeout(3 * TIMEOUT):
                        while True:
                            with contextlib.suppress(TimeoutError):
                                msg = await w.screen.next_frame(timeout=0.2)
                                rects = frame_rects(msg)
                                encs |= {r[4] for r in rects}
                                w.canvas.apply(msg["w"], msg["h"], msg["key"], rects)
                            if time.monotonic() < still_from:
                                continue
                            want = (await asyncio.to_thread(cap.grab))[..., 2::-1]
                            seen = composite(w.canvas.pixels,
                                             w.screen.cursors.get(w.share["id"]))
                            if np.array_equal(seen, want):
                                break
                    assert w.stats.damage and w.stats.frames > 20
            finally:
                cap.close()
            return encs

        encs = run(scenario())
        if workload == "scrolling":
            assert "copy" in encs and "jpeg" not in encs
    finally:
        proc.kill()
        proc.wait()


def test_gui_composer_applies_copies_like_the_canvas() -> None:
    """The GUI's full-resolution picture (no Tk needed) after a key frame and scroll updates
    equals the Canvas's."""
    from PIL import Image as PILImage

    from chatscreen.gui.render import Composer, patch_of
    from chatscreen.screen.scroll import Move

    enc = ScreenEncoder()
    canvas, composer = Canvas(W, H), Composer()
    composer.set_box(W, H)
    for n in range(4):
        u = enc.encode(document(n * 2), now=n / 30)
        assert u is not None
        rects = [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in u.regions]
        canvas.apply(W, H, u.key, rects)
        patches = [patch_of(*r, size=(W, H)) for r in rects]
        assert n == 0 or isinstance(patches[0], Move)
        composer.apply(W, H, u.key, patches)
    assert composer.full is not None
    assert np.array_equal(np.asarray(composer.full.convert("RGB")), canvas.pixels)
    assert isinstance(composer.full, PILImage.Image)


def _document(w: int, h: int, line: int, cycle: int) -> np.ndarray:
    """A tall BGR document: numbered lines of ``lorem ipsum`` repeated 1 to ``cycle`` times
    (the right part blank)."""
    tall = Image.new("RGB", (w, h), (252, 252, 250))
    d = ImageDraw.Draw(tall)
    for n in range(h // line):
        d.text((4, n * line), f"{n:5d} " + "lorem ipsum " * (1 + n % cycle), fill=(0, 0, 0),
               font=_FONT)
    return np.asarray(tall)[..., ::-1]


def test_a_long_scroll_keeps_the_copy_chain_short_without_key_frames() -> None:
    """300 steps of continuous scrolling: the sharer sends a band of the copy as pixels now
    and then, so the relay's chains of copies stay far below MAX_COPY_DEPTH (no key frame
    asked for), and the relay's live pieces still replay to the exact picture."""
    from chatscreen.screen.encoders import COPY_REFRESH_DEPTH

    w, h, line = 640, 480, 12
    doc = _document(w, h + 320 * line, line, 5)
    enc = ScreenEncoder()
    store = TileStore(w, h, first_id=1)
    truth = Canvas(w, h)
    pid = 0
    for step in range(301):
        img = np.empty((h, w, 4), np.uint8)
        img[..., :3] = doc[step * line : step * line + h]
        img[..., 3] = 255
        u = enc.encode(img, now=step / 30)
        assert u is not None and u.key == (step == 0)
        for r in u.regions:
            pid += 1
            store.add(Piece(pid, step, {"x": r.x, "y": r.y, "w": r.w, "h": r.h, "enc": r.enc,
                                        "len": len(r.data)}, r.data))
        truth.apply(w, h, u.key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in u.regions])
        assert np.array_equal(truth.pixels, np.ascontiguousarray(img[..., 2::-1])), step
    assert not store.overflow and store.max_depth <= 1.5 * COPY_REFRESH_DEPTH < MAX_COPY_DEPTH
    late = Canvas(w, h)
    late.apply(w, h, True, replay(store.newer_than(0)))
    assert np.array_equal(late.pixels, truth.pixels)


def test_capture_bucket_allows_a_burst_then_about_fps() -> None:
    from chatscreen.screen.sharing import CAPTURE_BURST, CAPTURE_SLACK, CaptureBucket

    b = CaptureBucket(30.0)
    t0 = b.at
    assert CAPTURE_BURST == 2.0
    assert b.take(t0) == 0.0 and b.take(t0) == 0.0  # a burst of two at once
    wait = b.take(t0)
    assert wait == pytest.approx(1 / (30 * CAPTURE_SLACK))  # then one per token
    # changes at exactly 30/s after a pause: never a wait, even after an extra capture
    b = CaptureBucket(30.0)
    t = b.at + 1.0
    waits = []
    for n in range(300):
        waits.append(b.take(t + n / 30))
        if n == 100:
            waits.append(b.take(t + n / 30 + 0.001))  # the same change captured twice
    assert max(waits[:101]) == 0.0 and max(waits[103:]) == 0.0


def wide_document(left: int) -> np.ndarray:
    """BGRA: a wide table scrolled sideways to column ``left`` (one column = 10 pixels)."""
    im = Image.new("RGB", (W + 2000, TEXT_H), (250, 250, 248))
    d = ImageDraw.Draw(im)
    for k in range(TEXT_H // LINE):
        d.text((4, k * LINE), " | ".join(f"r{k}c{c:03d}" for c in range(k % 3, 400, 3)),
               fill=(20, 20, 30), font=_FONT)
    out = np.zeros((H, W, 4), np.uint8)
    out[:TEXT_H, :, :3] = np.asarray(im)[:, left * 10 : left * 10 + W, ::-1]
    out[..., 3] = 255
    return out


def test_detect_move_finds_a_horizontal_scroll() -> None:
    prev, cur = wide_document(5), wide_document(9)
    move = detect_move(prev, cur, change_map(prev, cur))
    assert move is not None and move.sy == move.y and move.sx - move.x == 40
    assert move.h >= TEXT_H - 64 and move.w >= W - 40 - 64
    fixed = prev.copy()
    apply_move(fixed, move)
    assert change_map(fixed, cur).sum() < 0.2 * change_map(prev, cur).sum()


def test_encoder_sends_horizontal_scrolls_as_copies_bit_exact() -> None:
    enc = ScreenEncoder()
    canvas = Canvas(W, H)
    sizes = []
    for n, left in enumerate([0, 2, 5, 4, 4, 9, 20]):
        img = wide_document(left)
        u = enc.encode(img, now=n / 30)
        if u is None:
            continue
        apply_update(canvas, u.regions, u.key)
        assert np.array_equal(canvas.pixels, rgb(img)), n
        if n:
            assert u.regions[0].enc == "copy"
            sizes.append(u.size)
    first = enc.encode(wide_document(20), now=1.0, key=True)
    assert first is not None and max(sizes) < first.size / 4


def test_a_scroll_above_a_still_status_bar_leaves_no_partial_pieces_at_the_relay() -> None:
    """The document ends inside a tile row, above a status bar that never changes, and its
    right part is blank: a copy covering part of those tiles every step left a partial piece
    on each at the relay until it asked for a key frame (MAX_PARTIAL); the sharer copies
    whole tiles only, and sends the edge row's changed tiles whole."""
    w, h, line, doc_h = 640, 480, 12, 440  # 440 = 6 tiles + 56 rows; 40 rows of status bar
    doc = _document(w, doc_h + 120 * line, line, 4)
    enc = ScreenEncoder()
    store = TileStore(w, h, first_id=1)
    truth = Canvas(w, h)
    moves = 0
    for step in range(101):
        img = np.full((h, w, 4), 255, np.uint8)
        img[:doc_h, :, :3] = doc[step * line : step * line + doc_h]
        img[doc_h:, :, :3] = (40, 40, 200)
        # damage as a toolkit reports it: the whole window, blank right part included
        hint = None if step == 0 else np.ones(grid(w, h), bool)
        u = enc.encode(img, now=step / 30, hint=hint)
        assert u is not None
        moves += u.move is not None
        for i, r in enumerate(u.regions):
            store.add(Piece(step * 100 + i + 1, step, {"x": r.x, "y": r.y, "w": r.w, "h": r.h,
                                                       "enc": r.enc, "len": len(r.data)},
                            r.data))
            if r.enc == "copy":
                assert r.y % TILE == 0 and (r.h % TILE == 0 or r.y + r.h == h)
        truth.apply(w, h, u.key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in u.regions])
        assert np.array_equal(truth.pixels, np.ascontiguousarray(img[..., 2::-1])), step
    assert moves >= 90 and not store.overflow
