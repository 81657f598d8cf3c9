"""Change maps, rect merging, the sharer's region encoder and the relay's tile store (pure)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatscreen.client.screen import merge_frames
from chatscreen.protocol import Message
from chatscreen.protocol.schema import Rect
from chatscreen.screen.codec import Canvas, DecodeError, decode_rect, encode_palette, encode_zlib
from chatscreen.screen.encoders import PRESETS, Preset, ScreenEncoder, Update
from chatscreen.screen.sharing import partial_boxes
from chatscreen.screen.tiles import TILE, change_map, grid, largest_group, merge_tiles, tile_colours
from chatscreen.server.screen import Piece, TileStore
from tests.helpers.display import render_test_picture


def bgra(rgb: np.ndarray) -> np.ndarray:
    out = np.empty((*rgb.shape[:2], 4), np.uint8)
    out[..., :3] = rgb[..., ::-1]
    out[..., 3] = 255
    return out


DESKTOP = np.asarray(render_test_picture(1000, 600).convert("RGB"))  # not a multiple of 64


# -- change map and merging ----------------------------------------------------------------


def test_change_map_finds_single_pixel_changes_at_the_edges() -> None:
    a = bgra(DESKTOP)
    assert not change_map(a, a.copy()).any()
    b = a.copy()
    b[599, 999, 0] ^= 1  # the last pixel, in the partial last tile
    b[0, 64, 2] ^= 0x80  # the first pixel of the second tile
    m = change_map(a, b)
    assert m.shape == grid(1000, 600) == (10, 16)
    assert sorted(zip(*np.nonzero(m), strict=True)) == [(0, 1), (9, 15)]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.integers(1, 12), st.data())
def test_merged_rects_cover_exactly_the_changed_tiles(rows: int, cols: int,
                                                      data: st.DataObject) -> None:
    bits = data.draw(st.lists(st.booleans(), min_size=rows * cols, max_size=rows * cols))
    mask = np.array(bits, bool).reshape(rows, cols)
    w, h = cols * TILE - 13, rows * TILE - 7  # ragged last row and column
    cover = np.zeros((h, w), np.int32)
    boxes = merge_tiles(mask, w, h)
    for b in boxes:
        assert b.w > 0 and b.h > 0 and b.x + b.w <= w and b.y + b.h <= h
        cover[b.y : b.y + b.h, b.x : b.x + b.w] += 1
    want = np.repeat(np.repeat(mask, TILE, 0), TILE, 1)[:h, :w]
    assert np.array_equal(cover, want.astype(np.int32))  # each changed pixel once, no other
    assert len(boxes) <= mask.sum()


def test_largest_group_keeps_the_biggest_connected_tiles_only() -> None:
    # typing: a line across the screen and the marker in the corner, far apart
    mask = np.zeros((17, 30), bool)
    mask[5:7, :] = True
    mask[16, 24:] = True
    group = largest_group(mask)
    assert group.sum() == 60 and group[5:7].all()
    # a scrolled area and a strip touching it are one group: all of it
    mask[7:16, :] = True
    assert np.array_equal(largest_group(mask), mask)
    # diagonal neighbours are not connected
    small = np.zeros((5, 5), bool)
    small[0, 0] = small[1, 1] = True
    small[2:5, 2:5] = True
    assert largest_group(small).sum() == 9 and not largest_group(small)[:2].any()


def test_partial_capture_takes_a_box_per_group_of_damaged_tiles() -> None:
    mask = np.zeros((17, 30), bool)
    mask[5:7, :] = True
    mask[16, 24:] = True
    boxes = partial_boxes(mask, 1920, 1080, TILE)
    assert boxes is not None
    assert sorted((b.x, b.y, b.w, b.h) for b in boxes) == [(0, 320, 1920, 128),
                                                           (1536, 1024, 384, 56)]
    near = np.zeros((17, 30), bool)  # two tiles side by side with a gap: one box
    near[3, 3] = near[3, 5] = True
    boxes = partial_boxes(near, 1920, 1080, TILE)
    assert boxes is not None and [(b.x, b.w) for b in boxes] == [(192, 192)]
    assert partial_boxes(np.ones((17, 30), bool), 1920, 1080, TILE) is None  # too much


def test_a_changed_block_is_one_rect() -> None:
    mask = np.zeros((17, 30), bool)
    mask[3:9, 4:11] = True
    assert [(b.x, b.y, b.w, b.h) for b in merge_tiles(mask, 1920, 1080)] == [(256, 192, 448, 384)]


def test_tile_colours() -> None:
    img = np.zeros((128, 130, 4), np.uint8)
    img[:64, :64, 0] = np.arange(64, dtype=np.uint8)[None, :]  # 64 colours
    img[64:, 128:, 1] = 7  # 1 colour in the narrow last column's lower tile
    mask = np.ones(grid(130, 128), bool)
    assert tile_colours(img, mask).tolist() == [64, 1, 1, 1, 1, 1]
    assert tile_colours(img, mask, cap=10).tolist() == [10, 1, 1, 1, 1, 1]


# -- encodings -------------------------------------------------------------------------------


@pytest.mark.parametrize("enc", ["palette", "zlib", "webp"])
def test_lossless_encodings_are_bit_exact(enc: str) -> None:
    from chatscreen.screen.codec import encode_webp

    rng = np.random.default_rng(7)
    few = (rng.integers(0, 6, (61, 77, 3)) * 51).astype(np.uint8)  # 216 possible colours
    for rgb in (few, DESKTOP[:200, :300]):
        img = bgra(rgb)
        if enc == "palette":
            data = encode_palette(img)
            if rgb is DESKTOP or len(np.unique(rgb.reshape(-1, 3), axis=0)) > 256:
                continue
            assert data is not None
        elif enc == "zlib":
            data = encode_zlib(img)
        else:
            data = encode_webp(img, lossless=True)
        h, w = rgb.shape[:2]
        assert np.array_equal(decode_rect(enc, data, w, h), rgb)


def test_palette_refuses_many_colours_and_bad_data_is_a_clean_error() -> None:
    assert encode_palette(bgra(DESKTOP)) is None
    one = encode_palette(bgra(np.zeros((4, 4, 3), np.uint8)))
    assert one is not None and decode_rect("palette", one, 4, 4).sum() == 0
    import zlib

    bad = [
        ("palette", b""),
        ("palette", b"\x01\x00\x00"),  # 2 colours announced, 1 given
        ("palette", b"\x00\x00\x00\x00" + zlib.compress(b"\x01" * 16)),  # index 1 of 1 colour
        ("palette", b"\x00\x00\x00\x00" + zlib.compress(b"\x00" * 17)),  # one pixel too many
        ("zlib", zlib.compress(b"\x00" * 47)),
        ("zlib", b"garbage"),
        ("webp", b"RIFF....WEBPVP8L"),
    ]
    for enc, data in bad:
        with pytest.raises(DecodeError):
            decode_rect(enc, data, 4, 4)


# -- the sharer's encoder ------------------------------------------------------------------


def apply(canvas: Canvas, update: Update, w: int, h: int) -> None:
    canvas.apply(w, h, update.key,
                 [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in update.regions])


def test_encoder_sends_changed_regions_by_content_and_refreshes_lossy_ones() -> None:
    h, w = DESKTOP.shape[:2]
    enc = ScreenEncoder("balanced")
    enc.moves = False  # the photo's shift below would go as a copy (tests/test_scroll.py)
    canvas = Canvas(w, h)
    first = enc.encode(bgra(DESKTOP), now=0.0)
    assert first is not None and first.key
    apply(canvas, first, w, h)
    assert {r.enc for r in first.regions} <= {"palette", "webp"}  # a key frame: lossless
    assert np.array_equal(canvas.pixels, DESKTOP)
    assert enc.encode(bgra(DESKTOP), now=0.05) is None  # idle: nothing at all

    # the photo moves: its tiles go as JPEG, the unchanged rest is not sent
    moved = DESKTOP.copy()
    moved[330:560, 640:960] = np.roll(DESKTOP[330:560, 640:960], 3, axis=1)
    up = enc.encode(bgra(moved), now=0.06)
    assert up is not None and {r.enc for r in up.regions} == {"jpeg"}
    assert all(r.x >= 576 and r.y >= 320 for r in up.regions)
    apply(canvas, up, w, h)

    # typing: one small change goes losslessly and alone, cut to the changed pixels
    typed = moved.copy()
    typed[40:52, 30:38] = 255
    up = enc.encode(bgra(typed), now=0.1)
    assert up is not None and not up.key
    assert [(r.x, r.y, r.w, r.h, r.enc) for r in up.regions] == [(30, 40, 8, 12, "packed")]
    apply(canvas, up, w, h)

    # once nothing changes for refresh_after, the lossy tiles are refreshed losslessly
    assert enc.encode(bgra(typed), now=0.2) is None
    refresh = enc.encode(bgra(typed), now=0.11 + PRESETS["balanced"].refresh_after)
    assert refresh is not None and refresh.refreshed > 0
    assert {r.enc for r in refresh.regions} <= {"palette", "webp"}
    apply(canvas, refresh, w, h)
    assert np.array_equal(canvas.pixels, typed)  # pixel-exact once still
    assert enc.encode(bgra(typed), now=5.0) is None and not enc.pending_refresh()


def test_a_big_change_goes_lossy_then_is_refreshed() -> None:
    h, w = DESKTOP.shape[:2]
    text = Preset("t", 80, "444", 256, 0.2)
    enc = ScreenEncoder(text)
    canvas = Canvas(w, h)
    flat = np.full_like(DESKTOP, 250)
    first = enc.encode(bgra(flat), now=0.0)
    assert first is not None
    apply(canvas, first, w, h)
    scrolled = np.roll(DESKTOP, 5, axis=0)  # most of the screen changes at once
    up = enc.encode(bgra(scrolled), now=0.1)
    assert up is not None and {r.enc for r in up.regions} == {"jpeg"}
    apply(canvas, up, w, h)
    last = enc.encode(bgra(scrolled), now=0.35)
    assert last is not None
    apply(canvas, last, w, h)
    assert np.array_equal(canvas.pixels, scrolled)


def test_encoder_key_frame_on_request_and_on_resize() -> None:
    enc = ScreenEncoder()
    assert enc.encode(bgra(DESKTOP), now=0).key  # type: ignore[union-attr]
    again = enc.encode(bgra(DESKTOP), key=True, now=1)
    assert again is not None and again.key
    small = enc.encode(bgra(DESKTOP[:300, :500]), now=2)
    assert small is not None and small.key and enc.size == (500, 300)


# -- the relay's tile store ------------------------------------------------------------------


def raw_piece(pid: int, x: int, y: int, w: int, h: int, value: int) -> Piece:
    data = bytes([value % 256]) * (w * h * 3)
    return Piece(pid, pid, {"x": x, "y": y, "w": w, "h": h, "enc": "raw", "len": len(data)},
                 data)


def test_tile_store_keeps_only_the_newest_piece_of_each_tile() -> None:
    store = TileStore(200, 100, first_id=1)
    store.add(raw_piece(1, 0, 0, 200, 100, 1))  # the whole screen
    store.add(raw_piece(2, 0, 0, 64, 64, 2))  # tile 0 again
    store.add(raw_piece(3, 10, 10, 5, 5, 3))  # a part of tile 0
    assert list(store.live) == [1, 2, 3]
    store.add(raw_piece(4, 0, 0, 128, 100, 4))  # tiles 0,1 and 4,5 (row 2 is 36 high)
    assert list(store.live) == [1, 4]
    store.add(raw_piece(5, 128, 0, 72, 100, 5))  # the rest: piece 1 is needed no more
    assert list(store.live) == [4, 5]
    assert [p.id for p in store.newer_than(4)] == [5]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 199), st.integers(0, 99), st.integers(1, 120),
                          st.integers(1, 80), st.booleans()), min_size=1, max_size=40),
       st.sets(st.integers(0, 40)))
def test_catching_up_from_any_point_gives_the_current_picture(
        updates: list[tuple[int, int, int, int, bool]], catch_points: set[int]) -> None:
    """A viewer that took the store's newer pieces at arbitrary moments ends with the same
    picture as one that applied every rectangle."""
    w, h = 200, 100
    store = TileStore(w, h, first_id=1)
    truth, viewer = Canvas(w, h), Canvas(w, h)
    store.add(raw_piece(1, 0, 0, w, h, 1))
    truth.apply(w, h, True, [(0, 0, w, h, "raw", bytes([1]) * (w * h * 3))])
    sent = 0
    for n, (x, y, rw, rh, aligned) in enumerate(updates, start=2):
        if aligned:  # tile-aligned like the reference sharer, else arbitrary
            x, y = x // TILE * TILE, y // TILE * TILE
            rw, rh = min(rw // TILE * TILE + TILE, w - x), min(rh // TILE * TILE + TILE, h - y)
        rw, rh = min(rw, w - x), min(rh, h - y)
        piece = raw_piece(n, x, y, rw, rh, n * 37)
        store.add(piece)
        truth.apply(w, h, False, [(x, y, rw, rh, "raw", piece.data)])
        if n in catch_points:
            pieces = store.newer_than(sent)
            viewer.apply(w, h, sent < store.key_id, [
                (p.rect["x"], p.rect["y"], p.rect["w"], p.rect["h"], "raw", p.data)
                for p in pieces])
            sent = store.last_id
    pieces = store.newer_than(sent)
    viewer.apply(w, h, sent < store.key_id, [
        (p.rect["x"], p.rect["y"], p.rect["w"], p.rect["h"], "raw", p.data) for p in pieces])
    assert viewer.complete and np.array_equal(viewer.pixels, truth.pixels)
    assert len(store.live) <= grid(w, h)[0] * grid(w, h)[1] * 33


def test_client_merges_queued_deltas_without_losing_changes() -> None:
    def msg(seq: int, rects: list[tuple[int, int, int, int, int]]) -> Message:
        rs = tuple(Rect(x, y, w_, h_, "raw", w_ * h_ * 3) for x, y, w_, h_, _ in rects)
        payload = b"".join(bytes([v]) * (w_ * h_ * 3) for _, _, w_, h_, v in rects)
        return Message("frame", {"share": 1, "seq": seq, "w": 8, "h": 8, "key": False,
                                 "rects": rs}, payload)

    a = msg(1, [(0, 0, 4, 4, 10), (4, 4, 4, 4, 20)])
    b = msg(2, [(0, 0, 8, 4, 30)])  # covers the first rect of a entirely
    merged = merge_frames(a, b)
    assert merged["seq"] == 2 and [r.y for r in merged["rects"]] == [4, 0]
    one, two = Canvas(8, 8), Canvas(8, 8)
    for m in (a, b):
        one.apply(8, 8, False, _rects(m))
    two.apply(8, 8, False, _rects(merged))
    assert np.array_equal(one.pixels, two.pixels)


def _rects(m: Message) -> list[tuple[int, int, int, int, str, bytes]]:
    from chatscreen.screen.sharing import frame_rects

    return frame_rects(m)
