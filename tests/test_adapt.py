"""The relay's per-viewer layer decision (server/adapt.py), pure: time is a parameter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chatscreen.screen.codec import Canvas
from chatscreen.server.adapt import (
    FULL,
    HOLD,
    LOW,
    MAX_RATE,
    MIN_RATE,
    PROBE_FAIL,
    WINDOW,
    LinkMeter,
    Rate,
    low_rate,
)
from chatscreen.server.screen import Piece, TileStore


def feed(m: LinkMeter, start: float, seconds: float, every: int, fps: float = 30.0) -> float:
    """Frames arrive at ``fps``; one in ``every`` is delivered (newest wins merged the rest).
    Returns the time at the end."""
    t = start
    for i in range(int(seconds * fps)):
        t = start + i / fps
        m.arrived(t)
        if i % every == 0:
            m.delivered(t)
    return t


def test_a_viewer_that_gets_every_frame_stays_on_full() -> None:
    m = LinkMeter(0.0)
    t = feed(m, 0.0, 5.0, every=1)
    assert m.ratio(t) == 1.0
    assert m.decide(t, 900_000, can_low=True) == FULL


def test_too_few_frames_are_no_verdict() -> None:
    m = LinkMeter(0.0)
    for t in (0.0, 0.5, 1.0):
        m.arrived(t)
    assert m.ratio(1.0) is None
    assert m.decide(1.0, None, can_low=True) == FULL


def test_a_viewer_that_skips_most_frames_goes_down_if_the_sharer_can() -> None:
    m = LinkMeter(0.0)
    t = feed(m, 0.0, 3.0, every=3)  # a third delivered
    assert m.ratio(t) is not None and m.ratio(t) < 0.5  # type: ignore[operator]
    assert m.decide(t, 900_000, can_low=False) == FULL  # an old sharer: newest wins only
    assert m.decide(t, 900_000, can_low=True) == LOW


def test_capacity_is_the_drain_rate_averaged() -> None:
    m = LinkMeter(0.0)
    m.drained(384_000, 1.28)  # 300 kB/s
    assert m.capacity == 300_000
    m.drained(384_000, 0.64)  # 600 kB/s
    assert m.capacity == 450_000
    m.drained(0, 1.0)  # nothing drained: no sample
    m.drained(1000, 0.0)
    assert m.capacity == 450_000


def test_on_low_it_goes_up_at_once_when_the_full_layer_fits_its_link() -> None:
    m = LinkMeter(0.0)
    m.drained(300_000, 1.0)
    m.switched(0.0, LOW)
    t = feed(m, 0.0, WINDOW, every=1)
    assert m.decide(t, 900_000, can_low=True) == LOW  # the video still plays
    assert m.decide(t, 200_000, can_low=True) == FULL  # it stopped: 200 kB/s fits
    m.switched(t, FULL)
    t = feed(m, t, WINDOW, every=4)  # it did not fit after all
    assert m.decide(t, 900_000, can_low=True) == LOW
    m.switched(t, LOW)
    t = feed(m, t, WINDOW, every=1)
    assert m.decide(t, 200_000, can_low=True) == LOW  # not at once again: a probe, later


def test_on_low_it_probes_after_hold_and_backs_off_when_the_probe_fails() -> None:
    m = LinkMeter(0.0)
    m.drained(300_000, 1.0)
    m.switched(0.0, LOW)
    t = feed(m, 0.0, HOLD - 0.5, every=1)
    assert m.decide(t, 900_000, can_low=True) == LOW
    t = feed(m, t, 1.0, every=1)
    assert m.decide(t, 900_000, can_low=True) == FULL  # a probe
    m.switched(t, FULL)
    t = feed(m, t, 2.0, every=4)  # it does not carry it
    assert m.decide(t, 900_000, can_low=True) == LOW
    m.switched(t, LOW)
    assert m.hold == 2 * HOLD  # the next probe waits twice as long
    t2 = feed(m, t, HOLD + 0.5, every=1)
    assert m.decide(t2, 900_000, can_low=True) == LOW
    t2 = feed(m, t2, HOLD, every=1)
    assert m.decide(t2, 900_000, can_low=True) == FULL


def test_a_probe_that_holds_resets_the_wait() -> None:
    m = LinkMeter(0.0)
    m.switched(0.0, LOW)
    m.hold = 4 * HOLD
    m.switched(1.0, FULL)
    t = feed(m, 1.0, PROBE_FAIL + 1.0, every=1)
    assert m.decide(t, 900_000, can_low=True) == FULL
    assert m.hold == HOLD and m.probed_at is None


def test_a_viewer_that_hardly_carries_the_low_layer_does_not_probe() -> None:
    m = LinkMeter(0.0)
    m.switched(0.0, LOW)
    t = feed(m, 0.0, 10 * HOLD, every=2)
    assert m.decide(t, 900_000, can_low=True) == LOW


def test_low_viewers_go_up_when_the_sharer_cannot_send_the_low_layer() -> None:
    m = LinkMeter(0.0)
    m.switched(0.0, LOW)
    assert m.decide(0.5, None, can_low=False) == FULL


def test_rate_and_low_rate() -> None:
    r = Rate()
    for i in range(60):
        r.add(i / 30, 10_000)
    assert 290_000 <= r.per_second(59 / 30) <= 310_000  # 30 x 10 kB a second
    assert r.per_second(100.0) == 0
    assert low_rate([300_000, 1_000_000], None) == 180_000  # the slowest decides
    assert low_rate([300_000], 190_000) == 190_000  # a small change: kept
    assert low_rate([], None) == MAX_RATE // 4
    assert low_rate([1000], None) == MIN_RATE
    assert low_rate([1e9], None) == MAX_RATE


def test_a_cloned_store_is_the_same_picture_and_then_goes_its_own_way() -> None:
    store = TileStore(256, 128, first_id=1)
    rect = {"x": 0, "y": 0, "w": 256, "h": 128, "enc": "raw", "len": 3}
    store.add(Piece(1, 1, rect, b"key"))
    part = {"x": 0, "y": 0, "w": 32, "h": 32, "enc": "raw", "len": 1}
    store.add(Piece(2, 2, part, b"a"))
    copy = {"x": 64, "y": 0, "w": 64, "h": 64, "enc": "copy", "len": 8}
    store.add(Piece(3, 3, copy, (0).to_bytes(4, "big") * 2))
    low = store.clone()
    assert [(p.id, p.data, p.refs) for p in low.newer_than(0)] == \
        [(p.id, p.data, p.refs) for p in store.newer_than(0)]
    assert low.live[3].deps == (low.live[1], low.live[2])  # its own pieces, not the original's
    # a piece added to one store does not touch the other
    tile = {"x": 0, "y": 0, "w": 64, "h": 64, "enc": "jpeg", "len": 1}
    low.add(Piece(4, 4, tile, b"L"))
    assert 4 not in store.live
    assert (store.live[2].refs, low.live[2].refs) == (2, 1)  # covered in low only


# -- a viewer changing layer gets only what differs, and ends on the same picture -----------

SW, SH = 256, 192


def _raw(rng: Any, x: int, y: int, w: int, h: int, pid: int, layer: str | None) -> Piece:
    colour = bytes(rng.integers(0, 256, 3, dtype=np.uint8))
    rect = {"x": x, "y": y, "w": w, "h": h, "enc": "raw", "len": w * h * 3}
    return Piece(pid, pid, rect, colour * (w * h), pure=layer is None)


def _apply(canvas: Canvas, pieces: list[Piece], key: bool = False) -> None:
    canvas.apply(SW, SH, key, [(p.rect["x"], p.rect["y"], p.rect["w"], p.rect["h"],
                                p.rect["enc"], p.data) for p in pieces])


@pytest.mark.parametrize("seed", range(40))
def test_switching_layers_replays_only_what_differs_and_ends_exact(seed: int) -> None:
    """Random frames of common rects, full/low pairs and copies into two stores (as the
    relay routes them); a viewer follows the full one, switches to the low one (and back):
    its picture is then exactly what a key frame of that layer gives."""
    rng = np.random.default_rng(seed)
    full = TileStore(SW, SH, first_id=1)
    key = _raw(rng, 0, 0, SW, SH, 1, None)
    full.add(key)
    low = full.clone()
    ids = iter(range(2, 10_000))
    viewer = Canvas(SW, SH)
    sent = 0

    def follow() -> None:
        nonlocal sent
        _apply(viewer, full.newer_than(sent))
        sent = full.last_id

    for _ in range(int(rng.integers(5, 40))):
        kind = rng.choice(["common", "pair", "copy", "tile-pair"])
        w, h = int(rng.integers(1, SW // 2)), int(rng.integers(1, SH // 2))
        x, y = int(rng.integers(0, SW - w + 1)), int(rng.integers(0, SH - h + 1))
        if kind == "tile-pair":
            x, y, w, h = 64 * int(rng.integers(0, 4)), 64 * int(rng.integers(0, 3)), 64, 64
        if kind == "common":
            pid = next(ids)
            for st in (full, low):
                st.add(_raw(np.random.default_rng(pid), x, y, w, h, pid, None))
        elif kind in ("pair", "tile-pair"):
            full.add(_raw(rng, x, y, w, h, next(ids), "full"))
            low.add(_raw(rng, x, y, w, h, next(ids), "low"))
        else:
            sx, sy = int(rng.integers(0, SW - w + 1)), int(rng.integers(0, SH - h + 1))
            pid = next(ids)
            data = sx.to_bytes(4, "big") + sy.to_bytes(4, "big")
            for st in (full, low):
                st.add(Piece(pid, pid, {"x": x, "y": y, "w": w, "h": h, "enc": "copy",
                                        "len": 8}, data))
        if rng.random() < 0.5:
            follow()
    for src, dst in ((full, low), (low, full)):
        if rng.random() < 0.5 and src is full:
            follow()
        pieces = dst.switch_from(src, sent)
        _apply(viewer, pieces)
        want = Canvas(SW, SH)
        _apply(want, dst.newer_than(0), key=True)
        assert np.array_equal(viewer.pixels, want.pixels)
        assert len(pieces) <= len(dst.live)
        sent = dst.last_id


def test_switching_layers_skips_what_both_layers_share() -> None:
    """A still desktop (the key frame) and a moving region: the switch sends the region's
    pieces, not the desktop again."""
    rng = np.random.default_rng(1)
    full = TileStore(SW, SH, first_id=1)
    for i, (x, y) in enumerate((x, y) for y in range(0, SH, 64) for x in range(0, SW, 64)):
        full.add(_raw(rng, x, y, 64, 64, i + 1, None))  # the key frame, tile by tile
    low = full.clone()
    full.add(_raw(rng, 64, 64, 128, 64, 100, "full"))
    low.add(_raw(rng, 64, 64, 128, 64, 101, "low"))
    assert [p.id for p in low.switch_from(full, 100)] == [101]
    assert [p.id for p in full.switch_from(low, 101)] == [100]
    # tiles the viewer does not have yet come too (8 to 12: it was sent up to 5)
    assert [p.id for p in low.switch_from(full, 5)] == [8, 9, 10, 11, 12, 101]
