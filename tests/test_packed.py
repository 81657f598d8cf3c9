"""Typed text as rects cut to the changed pixels, in the ``packed`` encoding: the codec (round
trips, strict decoding), the sharer's cutting and its bound on partial pieces per tile, and
the relay with real server processes (no key frame asked, viewers pixel-exact)."""

from __future__ import annotations

import asyncio
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatscreen.client import Client, OutRect, ScreenChannel
from chatscreen.screen import encoders
from chatscreen.screen.codec import (
    Canvas,
    DecodeError,
    decode_rect,
    distinct,
    encode_packed,
    encode_palette,
    packed_bits,
)
from chatscreen.screen.encoders import PARTIAL_LIMIT, ScreenEncoder, Update
from chatscreen.screen.sharing import frame_rects
from chatscreen.server.screen import MAX_PARTIAL, Piece, TileStore
from tests.helpers.server import TIMEOUT, ServerProcess, run

# -- the codec ---------------------------------------------------------------------------------


@st.composite
def pictures(draw: st.DrawFn) -> np.ndarray:
    """A BGRA picture of 1-256 colours, 1x1 to 64x64 or a wide strip, noisy or in runs."""
    n = draw(st.integers(1, 256))
    if draw(st.booleans()):
        w, h = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    else:
        w, h = draw(st.integers(65, 1200)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pal = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    if draw(st.booleans()):
        index = rng.integers(0, n, (h, w))
    else:  # runs, as text and UI have
        index = np.repeat(rng.integers(0, n, (h, -(-w // 7))), 7, axis=1)[:, :w]
    return pal[index]


@settings(max_examples=300, deadline=None)
@given(pictures())
def test_packed_round_trip_is_pixel_exact_and_small(img: np.ndarray) -> None:
    h, w = img.shape[:2]
    data = encode_packed(img)
    assert data is not None
    got = decode_rect("packed", data, w, h)
    assert np.array_equal(got, img[..., 2::-1])
    n = data[0] + 1
    assert n == len(np.unique(img[..., :3].reshape(-1, 3), axis=0))
    if n == 1:
        assert len(data) == 4  # a solid fill: its colour only
    else:  # never more than the indices stored at their bit width
        assert len(data) <= 2 + 3 * n + h * -(-w * packed_bits(n) // 8)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300), st.integers(1, 6))
def test_distinct_is_numpy_s_unique(values: list[int], spread: int) -> None:
    px = np.asarray([v >> (8 * spread % 32) for v in values], np.uint32)
    assert distinct(px).tolist() == np.unique(px).tolist()


def test_packed_is_much_smaller_than_palette_for_a_glyph() -> None:
    img = page()
    glyph(img, 0, 0, np.random.default_rng(0))
    data, pal = encode_packed(img[:13, :7]), encode_palette(img[:13, :7])
    assert data is not None and pal is not None and len(data) < len(pal) - 8


def test_many_colours_are_not_packed() -> None:
    img = np.arange(300 * 4, dtype=np.uint32).view(np.uint8).reshape(20, 15, 16)[..., :4]
    assert encode_packed(np.ascontiguousarray(img)) is None


def packed(n: int, mode: int, body: bytes) -> bytes:
    return bytes([n - 1]) + bytes(3 * n) + bytes([mode]) + body


BAD = [
    (b"", 1, 1),  # nothing
    (b"\x02\x00\x00\x00", 1, 1),  # 3 colours announced, 1 given
    (b"\x00\x01\x02\x03\x00", 1, 1),  # a solid fill with a byte after it
    (bytes([1]) + bytes(6), 2, 2),  # 2 colours, no kind byte, no indices
    (packed(2, 0, b"\x00"), 2, 2),  # stored: 1 byte of 2 rows
    (packed(2, 0, b"\x00\x00\x00"), 2, 2),  # stored: a byte too many
    (packed(2, 2, b"\x00\x00"), 2, 2),  # unknown kind
    (packed(3, 0, b"\xc0"), 1, 1),  # index 3 of 3 colours (2 bits)
    (packed(17, 0, b"\x11"), 1, 1),  # index 17 of 17 colours (8 bits)
    (packed(2, 0, b"\x81"), 3, 1),  # a padding bit set after the 3 pixels of a row
    (packed(2, 1, zlib.compress(b"\x00") + b"x"), 2, 1),  # bytes after the zlib stream
    (packed(2, 1, zlib.compress(b"\x00")[:-2]), 2, 1),  # a truncated zlib stream
    (packed(2, 1, b"not zlib"), 2, 1),
    (packed(16, 1, zlib.compress(bytes(64 << 20))), 64, 64),  # a bomb: stops at 2 kB
]


@pytest.mark.parametrize(("data", "w", "h"), BAD)
def test_bad_packed_data_is_a_clean_error(data: bytes, w: int, h: int) -> None:
    with pytest.raises(DecodeError):
        decode_rect("packed", data, w, h)
    canvas = Canvas(8, 8)
    with pytest.raises(DecodeError):
        canvas.apply(8, 8, False, [(0, 0, min(w, 8), min(h, 8), "packed", data)])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 40), st.integers(1, 40))
def test_any_bytes_decode_to_the_rect_or_a_decode_error(data: bytes, w: int, h: int) -> None:
    try:
        got = decode_rect("packed", data, w, h)
    except DecodeError:
        return
    assert got.shape == (h, w, 3)


@settings(max_examples=200, deadline=None)
@given(pictures(), st.data())
def test_damaged_packed_data_decodes_to_the_rect_or_a_decode_error(img: np.ndarray,
                                                                   data: st.DataObject) -> None:
    h, w = img.shape[:2]
    good = encode_packed(img)
    assert good is not None
    at = data.draw(st.integers(0, len(good)))
    how = data.draw(st.sampled_from(["flip", "cut", "add"]))
    if how == "flip" and at < len(good):
        bad = good[:at] + bytes([good[at] ^ data.draw(st.integers(1, 255))]) + good[at + 1 :]
    elif how == "add":
        bad = good[:at] + b"\x00" + good[at:]
    else:
        bad = good[:at]
    try:
        got = decode_rect("packed", bad, w, h)
    except DecodeError:
        return
    assert got.shape == (h, w, 3)


def test_packed_layout_is_as_documented() -> None:
    """docs/protocol.md's example: 2 colours, 3x2, MSB first, rows on byte boundaries."""
    img = np.zeros((2, 3, 4), np.uint8)
    img[0, 0, :3] = img[1, 2, :3] = (0x33, 0x22, 0x11)  # BGR: the colour RGB 11 22 33
    data = encode_packed(img)
    assert data == b"\x01" + b"\x00\x00\x00" + b"\x11\x22\x33" + b"\x00" + bytes([0x80, 0x20])


# -- the sharer: rects cut to the changed pixels -----------------------------------------------

W, H = 640, 384
PAGE = (253, 253, 253, 255)


def page() -> np.ndarray:
    img = np.empty((H, W, 4), np.uint8)
    img[:] = PAGE
    return img


def glyph(img: np.ndarray, x: int, y: int, rng: np.random.Generator, w: int = 7,
          h: int = 13) -> None:
    """Draw an anti-aliased-looking glyph: a few greys on the page."""
    greys = np.array([30, 90, 150, 200], np.uint8)
    block = greys[rng.integers(0, 4, (h, w))]
    img[y : y + h, x : x + w, :3] = block[..., None]


def apply(canvas: Canvas, up: Update) -> None:
    canvas.apply(W, H, up.key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in up.regions])


def test_a_typed_glyph_goes_as_its_box_only() -> None:
    rng = np.random.default_rng(1)
    enc = ScreenEncoder()
    canvas = Canvas(W, H)
    img = page()
    glyph(img, 10, 10, rng)
    apply(canvas, enc.encode(img, now=0.0))  # type: ignore[arg-type]
    typed = img.copy()
    glyph(typed, 20, 30, rng)  # inside tile (0, 0)
    up = enc.encode(typed.copy(), now=0.1)
    assert up is not None
    assert [(r.x, r.y, r.w, r.h, r.enc) for r in up.regions] == [(20, 30, 7, 13, "packed")]
    whole = encode_palette(typed[:64, :64])
    assert whole is not None and len(up.regions[0].data) * 4 < len(whole)
    apply(canvas, up)
    assert np.array_equal(canvas.pixels, typed[..., 2::-1])

    # a glyph across the edge of two tiles: one rect, its box (not two, nor two tiles)
    across = typed.copy()
    glyph(across, 60, 100, rng)
    up = enc.encode(across.copy(), now=0.2)
    assert up is not None
    assert [(r.x, r.y, r.w, r.h, r.enc) for r in up.regions] == [(60, 100, 7, 13, "packed")]
    apply(canvas, up)
    # two glyphs far apart: a rect each, no bigger than the changed pixels' box per tile
    two = across.copy()
    glyph(two, 5, 5, rng, 3, 4)
    glyph(two, 250, 150, rng, 5, 9)
    up = enc.encode(two.copy(), now=0.3)
    assert up is not None
    assert sorted((r.x, r.y, r.w, r.h) for r in up.regions) == [(5, 5, 3, 4), (250, 150, 5, 9)]
    apply(canvas, up)
    assert np.array_equal(canvas.pixels, two[..., 2::-1])


def test_one_changed_pixel_is_a_4_byte_rect() -> None:
    enc = ScreenEncoder()
    img = page()
    glyph(img, 0, 0, np.random.default_rng(3))
    assert enc.encode(img.copy(), now=0.0) is not None
    img[5, 3, :3] = (1, 2, 3)
    up = enc.encode(img.copy(), now=1.0)
    assert up is not None
    assert [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in up.regions] == [
        (3, 5, 1, 1, "packed", b"\x00\x03\x02\x01")]


def test_a_tile_viewers_hold_lossy_is_sent_whole() -> None:
    rng = np.random.default_rng(2)
    enc = ScreenEncoder()
    canvas = Canvas(W, H)
    img = page()
    apply(canvas, enc.encode(img.copy(), now=0.0))  # type: ignore[arg-type]
    photo = img.copy()
    photo[64:128, 64:128] = rng.integers(0, 256, (64, 64, 4), np.uint8)
    up = enc.encode(photo.copy(), now=0.1)
    assert up is not None and [r.enc for r in up.regions] == ["jpeg"]
    apply(canvas, up)
    flat = photo.copy()
    flat[64:128, 64:128] = PAGE  # now few colours: the whole tile, losslessly
    glyph(flat, 70, 70, rng)
    up = enc.encode(flat.copy(), now=0.2)
    assert up is not None and [(r.x, r.y, r.w, r.h) for r in up.regions] == [(64, 64, 64, 64)]
    apply(canvas, up)
    assert np.array_equal(canvas.pixels, flat[..., 2::-1]) and not enc.pending_refresh()


def typing(n: int, seed: int, *, scroll_every: int = 0, line: int = H - 48
           ) -> list[np.ndarray]:
    """A page of text and n captures of typing, one character each (glyphs of varying sizes
    at jittered places, so that few cover an older one entirely): into a 128x64 region
    across three tiles, over and over; or, with ``scroll_every``, along the ``line`` (by
    default the bottom one), the text above the bottom line scrolling up by a line (a copy)
    every ``scroll_every`` characters."""
    rng = np.random.default_rng(seed)
    img = page()
    for y in range(0, H - 64, 16):
        for x in range(0, int(rng.integers(64, W - 8)), 8):
            glyph(img, x, y + 1, rng, 6, 13)
    out = [img]
    bottom, col = H - 48, 0
    for i in range(n):
        img = img.copy()
        if not scroll_every:
            x = 32 + (i % 16) * 8 + int(rng.integers(0, 3))
            y = (i // 16 % 4) * 16 + int(rng.integers(0, 3))
        else:
            if i % scroll_every == scroll_every - 1:
                img[:bottom] = img[16 : bottom + 16]
                img[bottom : bottom + 16] = PAGE
                if line != bottom:  # the document's next line comes in at the bottom
                    for x in range(0, int(rng.integers(64, W - 8)), 8):
                        glyph(img, x, bottom + 1, rng, 6, 13)
                col = 0
            x, y, col = col * 8 % (W - 8), line + 1, col + 1
        glyph(img, x, y, rng, int(rng.integers(3, 8)), int(rng.integers(5, 14)))
        out.append(img)
    return out  # the page first


def relay(store: TileStore, up: Update, pid: int) -> int:
    for r in up.regions:
        pid += 1
        store.add(Piece(pid, pid, {"x": r.x, "y": r.y, "w": r.w, "h": r.h, "enc": r.enc,
                                   "len": len(r.data)}, r.data))
    return pid


def replay(store: TileStore) -> np.ndarray:
    late = Canvas(W, H)
    late.apply(W, H, True, [(p.rect["x"], p.rect["y"], p.rect["w"], p.rect["h"],
                             p.rect["enc"], p.data) for p in store.newer_than(0)])
    return late.pixels


@pytest.mark.parametrize(("scroll_every", "line"), [(0, 0), (40, H - 48), (40, 200), (4, 200)])
def test_typing_for_long_never_makes_the_relay_ask_for_a_key_frame(scroll_every: int,
                                                                   line: int) -> None:
    """1000 characters into one region, or along a line with scroll bursts (on the bottom
    line, or on one that the copies move: its tiles hold a copy's pixels when typed in):
    every viewer, live or late, is pixel-exact after each update, the relay's store never
    overflows, and most rects are cut (``packed``)."""
    enc = ScreenEncoder()
    canvas = Canvas(W, H)
    base, *frames = typing(1000, 3, scroll_every=scroll_every, line=line)
    first = enc.encode(base.copy(), now=0.0)
    assert first is not None
    store = TileStore(W, H, first_id=1)
    pid = relay(store, first, 0)
    apply(canvas, first)
    encs: list[str] = []
    moves = 0
    for i, img in enumerate(frames):
        up = enc.encode(img.copy(), now=0.05 * (i + 1))
        assert up is not None
        pid = relay(store, up, pid)
        apply(canvas, up)
        encs += [r.enc for r in up.regions]
        if not enc.pending_refresh():  # (a scroll here goes as JPEG, then refreshed)
            assert np.array_equal(canvas.pixels, img[..., 2::-1]), i
        assert not store.overflow, i
        assert max(len(p) for p in store.partial) <= encoders.PARTIAL_MAX
        moves += up.move is not None
        # the sharer never thinks a row's chains of copies shorter than the relay's are (it
        # bounds them by row: one copy rect a row of tiles)
        chains = np.array([0 if o is None else o.depth for o in store.owner])
        assert (enc._depth.max(axis=1) >= chains.reshape(enc._depth.shape).max(axis=1)).all()
    last = enc.encode(frames[-1].copy(), now=60.0)  # still: the refresh, if one is due
    if last is not None:
        relay(store, last, pid)
        apply(canvas, last)
    assert np.array_equal(canvas.pixels, frames[-1][..., 2::-1])
    assert np.array_equal(replay(store), canvas.pixels)
    assert encs.count("packed") > 0.8 * len(frames)
    assert moves == (len(frames) // scroll_every if scroll_every else 0)  # copies, not pixels
    assert store.max_depth <= 1.5 * encoders.COPY_REFRESH_DEPTH  # the sharer's bound


def test_without_the_bound_typing_would_overflow_the_relay(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The bound is what keeps the relay quiet: without it the same typing overflows."""
    monkeypatch.setattr(encoders, "PARTIAL_LIMIT", 10**6)
    monkeypatch.setattr(encoders, "PARTIAL_MAX", 10**6)
    enc = ScreenEncoder()
    store = TileStore(W, H, first_id=1)
    base, *frames = typing(300, 3)
    pid = relay(store, enc.encode(base.copy(), now=0.0), 0)  # type: ignore[arg-type]
    for i, img in enumerate(frames):
        pid = relay(store, enc.encode(img.copy(), now=0.05 * (i + 1)), pid)  # type: ignore[arg-type]
    assert store.overflow


def test_the_sharer_bound_is_well_under_the_relay_s() -> None:
    assert PARTIAL_LIMIT < encoders.PARTIAL_MAX < MAX_PARTIAL


# -- end to end: real server processes -------------------------------------------------------


async def sharer_of(server: ServerProcess, name: str) -> tuple[Client, ScreenChannel]:
    c = await Client("127.0.0.1", name, chat_port=server.chat_port,
                     screen_port=server.screen_port, timeout=TIMEOUT).connect()
    screen = await c.open_screen()
    await screen.share(W, H)
    return c, screen


async def watcher_of(server: ServerProcess, name: str, sharer: str
                     ) -> tuple[Client, ScreenChannel]:
    c = await Client("127.0.0.1", name, chat_port=server.chat_port,
                     screen_port=server.screen_port, timeout=TIMEOUT).connect()
    async with asyncio.timeout(TIMEOUT):
        while c.share_of(sharer) is None:
            await c.next_event()
    share = c.share_of(sharer)
    assert share is not None
    screen = await c.open_screen()
    await screen.watch(share["id"])
    return c, screen


async def follow(screen: ScreenChannel, canvas: Canvas, want: np.ndarray) -> None:
    """Apply frames until the canvas shows ``want`` (bounded by the caller)."""
    while not (canvas.complete and np.array_equal(canvas.pixels, want)):
        msg = await screen.next_frame()
        canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))


def test_a_sharer_typing_1000_characters_gets_no_need_key_and_viewers_end_exact(
        server: ServerProcess) -> None:
    base, *frames = typing(1000, 4, scroll_every=100)

    async def scenario() -> None:
        sharer, out = await sharer_of(server, "typist")
        enc = ScreenEncoder()
        first = enc.encode(base.copy(), now=0.0)
        assert first is not None
        await out.send_frame(W, H, first.regions, key=True)
        viewer, screen = await watcher_of(server, "reader", "typist")
        canvas = Canvas(W, H)
        async with asyncio.timeout(3 * TIMEOUT):
            await follow(screen, canvas, base[..., 2::-1])
        out.key_requested.clear()
        sent = 0
        start = asyncio.get_running_loop().time()
        for i, img in enumerate(frames):
            up = enc.encode(img.copy(), now=0.05 * (i + 1))
            assert up is not None
            sent += up.size
            await out.send_frame(W, H, up.regions, key=False)
            # paced under the screen port's frame rate limit (240/s)
            await asyncio.sleep(max(0.0, start + (i + 1) / 200 - asyncio.get_running_loop()
                                    .time()))
        last = enc.encode(frames[-1].copy(), now=60.0)  # still: the refresh, if one is due
        if last is not None:
            await out.send_frame(W, H, last.regions, key=False)
        want = frames[-1][..., 2::-1]
        async with asyncio.timeout(3 * TIMEOUT):
            await follow(screen, canvas, want)
        late, late_screen = await watcher_of(server, "latecomer", "typist")
        late_canvas = Canvas(W, H)
        async with asyncio.timeout(3 * TIMEOUT):
            await follow(late_screen, late_canvas, want)
        assert not out.key_requested.is_set()
        assert not out.errors()
        assert sent < 1000 * 200  # ~100 bytes a character, not tiles
        for c in (late, viewer, sharer):
            await c.close()

    run(scenario())


def test_rect_header_is_what_the_docs_say() -> None:
    """The solid fill (n = 1) is 4 bytes: ``00`` and the colour."""
    img = np.empty((5, 9, 4), np.uint8)
    img[:] = (3, 2, 1, 0)
    assert encode_packed(img) == struct.pack("4B", 0, 1, 2, 3)
    assert np.array_equal(decode_rect("packed", b"\x00\x01\x02\x03", 9, 5),
                          np.broadcast_to(np.array([1, 2, 3], np.uint8), (5, 9, 3)))


def test_the_server_accepts_packed_rects(server: ServerProcess) -> None:
    async def scenario() -> None:
        sharer, out = await sharer_of(server, "packer")
        await out.send_frame(W, H, [OutRect(0, 0, W, H, "packed", b"\x00\x01\x02\x03")],
                             key=True)
        viewer, screen = await watcher_of(server, "unpacker", "packer")
        canvas = Canvas(W, H)
        want = np.broadcast_to(np.array([1, 2, 3], np.uint8), (H, W, 3))
        async with asyncio.timeout(3 * TIMEOUT):
            await follow(screen, canvas, want)
        assert not out.errors()
        for c in (viewer, sharer):
            await c.close()

    run(scenario())
