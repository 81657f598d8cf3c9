"""Scroll detection: which part of the screen moved up or down (or sideways) since the
previous capture.

When a document scrolls, most of a window's pixels are the same as before, only shifted. VNC's
CopyRect (and every good remote desktop since) sends that as "copy this rectangle from there"
with no pixels, plus the newly exposed strip. :func:`detect_move` finds such a vertical move
between the picture the viewers hold (``prev``) and the new capture (``cur``) in the region
where tiles changed:

1. Every row of the region is cut into 64-pixel segments and each segment hashed (a weighted
   sum of its pixels taken two at a time as 64-bit words, wrapping: ~1 ms for a 1080p frame).
2. Each row of ``cur`` whose hash (over the region's width) occurs exactly once in ``prev``
   votes for the offset between the two rows; blank rows (hashes seen many times) do not
   vote. The most voted offset wins if enough rows agree. If none does (something beside the
   move changes on every row), segments of a few columns vote the same way, column by column.
3. For that offset, in the longest run of rows where most segments match, the columns where
   90 % of them match form the copied span; the longest run of rows where 85 % of that span
   matches gives the rectangle (what did not move in it, such as the pointer drawn into the
   capture, is left to the tile diff).

The hashes only *propose* a move: the encoder applies the copy to its reference picture and
compares tiles exactly afterwards, so a wrong guess costs bytes, never correctness.
When no row offset wins, the same is done with columns (hashes of 64-row segments of every
column) for a horizontal move. A diagonal move (a window dragged) is not found: it goes as
changed tiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chatscreen.screen.tiles import BGRA, TILE, Mask, words

HORIZONTAL_BACKOFF = 8
MIN_TILES = 16  # fewer changed tiles than this: not worth looking for a move
MIN_ROWS = 32  # a move shorter than this many rows is not used
MIN_VOTES = 0.02  # share of the region's segments that must agree on the offset
ROW_MATCH = 0.85  # share of a row's segments that must have moved for the row to be copied
VOTE_COLUMNS = 8  # segment columns that vote (spread over the region); all are checked later
_RNG = np.random.default_rng(0x5C0011)
_WEIGHTS = (_RNG.integers(1, 2**63, TILE // 2, dtype=np.uint64) | np.uint64(1))
_WEIGHTS_64 = (_RNG.integers(1, 2**63, TILE, dtype=np.uint64) | np.uint64(1))


@dataclass(frozen=True, slots=True)
class Move:
    """Copy the ``w`` x ``h`` rectangle at (``sx``, ``sy``) of the previous picture to
    (``x``, ``y``): content that moved by ``y - sy`` rows."""

    x: int
    y: int
    w: int
    h: int
    sx: int
    sy: int


def segment_hashes(img: BGRA, x0: int, x1: int, y0: int, y1: int,
                   seg: int = TILE) -> npt.NDArray[np.uint64]:
    """Rows ``y0:y1`` x segments of ``seg`` pixels from ``x0`` (even) to ``x1``: one hash per
    row and segment, (rows, (x1 - x0) // seg); a last partial segment is left out."""
    n = (x1 - x0) // seg
    if n == 0 or y1 <= y0:
        return np.zeros((max(y1 - y0, 0), 0), np.uint64)
    px = words(img)
    if px.shape[1] % 2:  # an odd width: 64-bit words need the rows copied out
        px = np.ascontiguousarray(px[:, : n * seg + x0])
    pairs = px.view(np.uint64)[y0:y1, x0 // 2 : (x0 + n * seg) // 2].reshape(y1 - y0, n, seg // 2)
    weights = _WEIGHTS if seg == TILE else _RNG.integers(1, 2**63, seg // 2, dtype=np.uint64)
    # wraps mod 2**64; no temporary array; einsum's loop is ~1.5x faster than matmul's here
    out: npt.NDArray[np.uint64] = np.einsum("rns,s->rn", pairs, weights)
    return out


def _vote_rows(hp: npt.NDArray[np.uint64], hc: npt.NDArray[np.uint64]) -> tuple[int, int]:
    """The row offset most whole rows agree on (``cur[i] == prev[i + dy]``), and its votes:
    cheap (one key per row), enough unless something beside the move changes on every row."""
    tag = np.arange(1, hp.shape[1] + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return _vote(hp @ tag, hc @ tag, 1)


def _vote_columns(hp: npt.NDArray[np.uint64],
                  hc: npt.NDArray[np.uint64]) -> tuple[int, int]:
    """The row offset most segments (of up to VOTE_COLUMNS columns) agree on, and its votes."""
    cols = hp.shape[1]
    pick = np.unique(np.linspace(0, cols - 1, min(cols, VOTE_COLUMNS)).round().astype(np.intp))
    # one key per (column, hash): the column in the top bits keeps columns apart
    tag = (pick.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))[None, :]
    return _vote((hp[:, pick] ^ tag).ravel(), (hc[:, pick] ^ tag).ravel(), len(pick))


def _vote(kp: npt.NDArray[np.uint64], kc: npt.NDArray[np.uint64],
          per_row: int) -> tuple[int, int]:
    """Keys of prev and cur, ``per_row`` keys a row: each key of cur found exactly once in
    prev votes for the offset between their rows."""
    rows = len(kp) // per_row
    order = np.argsort(kp)
    sp = kp[order]
    left = np.searchsorted(sp, kc, "left")
    right = np.searchsorted(sp, kc, "right")
    unique = (right - left) == 1
    if not unique.any():
        return 0, 0
    i = np.flatnonzero(unique) // per_row  # row in cur
    j = order[left[unique]] // per_row  # row in prev
    dy = j - i
    dy = dy[dy != 0]
    if len(dy) == 0:
        return 0, 0
    counts = np.bincount(dy + rows)
    best = int(counts.argmax())
    return best - rows, int(counts[best])


Box4 = tuple[int, int, int, int]  # x0, x1, y0, y1
Hashes = npt.NDArray[np.uint64]


class MoveFinder:
    """:func:`detect_move` that reuses, as the previous picture's hashes, those it took of
    the last picture when the caller says the previous picture now equals it there."""

    def __init__(self, tile: int = TILE) -> None:
        self.tile = tile
        # by kind (row or column hashes): the box, and the hashes of prev there
        self._known: dict[str, tuple[Box4, Hashes]] = {}
        self._pending: dict[str, tuple[Box4, Hashes]] = {}  # those of the last cur
        self._misses = 0  # looks in a row that found no horizontal move

    def find(self, prev: BGRA, cur: BGRA, region: Mask) -> Move | None:
        known, self._known, self._pending = self._known, {}, {}

        def remembered(kind: str, fn: Callable[..., Hashes]) -> Callable[[BGRA, Box4], Hashes]:
            def hashes(img: BGRA, box: Box4) -> Hashes:
                old = known.get(kind)
                if img is prev and old is not None and old[0] == box:
                    return old[1]
                out = fn(img, *box)
                if img is cur:
                    self._pending[kind] = (box, out)
                return out

            return hashes

        # a region where no horizontal move was found lately (a video, say) is looked at
        # sideways only every HORIZONTAL_BACKOFF-th time: it costs ~2 ms a frame
        sideways = self._misses < 2 or self._misses % HORIZONTAL_BACKOFF == 0
        move = detect_move(prev, cur, region, self.tile, remembered("rows", segment_hashes),
                           remembered("columns", column_hashes), sideways=sideways)
        if move is not None and move.sx != move.x:
            self._misses = 0
        elif move is None:
            self._misses += 1
        return move

    def keep(self, same: Mask | None) -> None:
        """The previous picture now equals the last one on the tiles set in ``same`` (None:
        everywhere): keep the last picture's hashes that lie within."""
        pending, self._pending = self._pending, {}
        t = self.tile
        for kind, ((x0, x1, y0, y1), hashes) in pending.items():
            if same is None or bool(same[y0 // t : -(-y1 // t), x0 // t : -(-x1 // t)].all()):
                self._known[kind] = ((x0, x1, y0, y1), hashes)

    def forget(self) -> None:
        self._known, self._pending = {}, {}


def detect_move(prev: BGRA, cur: BGRA, dirty: Mask, tile: int = TILE,
                hashes: Callable[[BGRA, Box4], Hashes] | None = None,
                column_hashes_: Callable[[BGRA, Box4], Hashes] | None = None,
                sideways: bool = True) -> Move | None:
    """A vertical, else (``sideways``) horizontal, move of part of the changed region from
    ``prev`` to ``cur``, or None. ``hashes(img, (x0, x1, y0, y1))``: :func:`segment_hashes`
    (and ``column_hashes_``: :func:`column_hashes`), maybe remembered."""
    if int(dirty.sum()) < MIN_TILES:
        return None
    h, w = cur.shape[:2]
    rows = np.flatnonzero(dirty.any(axis=1))
    cols = np.flatnonzero(dirty.any(axis=0))
    y0, y1 = int(rows[0]) * tile, min(int(rows[-1] + 1) * tile, h)
    x0, x1 = int(cols[0]) * tile, min(int(cols[-1] + 1) * tile, w)
    if y1 - y0 < 2 * MIN_ROWS or x1 - x0 < TILE:
        return None
    if hashes is None:
        hashes = lambda img, box: segment_hashes(img, *box)  # noqa: E731
    box = (x0, x1, y0, y1)
    found = _shift(hashes(prev, box), hashes(cur, box))
    if found is not None:  # lines are rows, segments 64-pixel columns
        d, l0, l1, s0, s1 = found
        y, n = y0 + l0, l1 - l0
        xs, xe = x0 + s0 * TILE, x0 + s1 * TILE
        # the last, partial segment (the screen's edge) goes along if it moved too
        if xe < x1 < xe + TILE and np.array_equal(cur[y : y + n, xe:x1],
                                                  prev[y + d : y + d + n, xe:x1]):
            xe = x1
        return Move(xs, y, xe - xs, n, xs, y + d)
    if not sideways or y1 - y0 < TILE or x1 - x0 < 2 * MIN_ROWS:
        return None
    if column_hashes_ is None:
        column_hashes_ = lambda img, box: column_hashes(img, *box)  # noqa: E731
    found = _shift(column_hashes_(prev, box), column_hashes_(cur, box))
    if found is None:  # lines are columns, segments 64-pixel rows
        return None
    d, l0, l1, s0, s1 = found
    x, n = x0 + l0, l1 - l0
    ys, ye = y0 + s0 * TILE, y0 + s1 * TILE
    if ye < y1 < ye + TILE and np.array_equal(cur[ye:y1, x : x + n],
                                              prev[ye:y1, x + d : x + d + n]):
        ye = y1
    return Move(x, ys, n, ye - ys, x + d, ys)


def column_hashes(img: BGRA, x0: int, x1: int, y0: int, y1: int,
                  seg: int = TILE) -> npt.NDArray[np.uint64]:
    """Columns ``x0:x1`` x segments of ``seg`` rows from ``y0``: one hash per column and
    segment, (columns, (y1 - y0) // seg); a last partial segment is left out."""
    n = (y1 - y0) // seg
    if n == 0 or x1 <= x0:
        return np.zeros((max(x1 - x0, 0), 0), np.uint64)
    block = words(img)[y0 : y0 + n * seg, x0:x1].reshape(n, seg, x1 - x0)
    weights = _WEIGHTS_64 if seg == TILE else _RNG.integers(1, 2**63, seg, dtype=np.uint64)
    out: npt.NDArray[np.uint64] = np.einsum("sbc,b->cs", block, weights)
    return out


def _shift(hp: Hashes, hc: Hashes) -> tuple[int, int, int, int, int] | None:
    """From the hashes of prev and cur (lines x segments): the line offset ``d`` (line
    ``i`` of cur shows line ``i + d`` of prev), the run of lines [l0, l1) of cur that moved
    and the span of segments [s0, s1) they moved in; None when nothing moved."""
    nlines, nsegs = hc.shape
    if nsegs == 0:
        return None
    d, votes = _vote_rows(hp, hc)
    if d == 0 or votes < max(8, MIN_VOTES * nlines):
        d, votes = _vote_columns(hp, hc)
        if d == 0 or votes < max(8, MIN_VOTES * nlines * min(nsegs, VOTE_COLUMNS)):
            return None
    # dest lines i read prev lines i + d
    i0, i1 = max(0, -d), min(nlines, nlines - d)
    if i1 - i0 < MIN_ROWS:
        return None
    match = hc[i0:i1] == hp[i0 + d : i1 + d]  # (dest lines, segments)
    ra, rb = _longest_run(match.mean(axis=1) >= 0.5)  # lines where most of it moved
    s0, s1 = _longest_run(match[ra:rb].mean(axis=0) >= 0.9)  # segments that moved there
    if s1 - s0 == 0:
        return None
    # a line belongs to the copy when nearly all of the span moved (a pointer drawn into
    # the capture, or a caret, leaves a few segments that the tile diff then sends as pixels)
    r0, r1 = _longest_run(match[:, s0:s1].mean(axis=1) >= ROW_MATCH)
    if r1 - r0 < MIN_ROWS:
        return None
    return d, i0 + r0, i0 + r1, s0, s1


def _longest_run(flags: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """[start, end) of the longest run of True in ``flags`` ((0, 0) if none)."""
    if not flags.any():
        return 0, 0
    padded = np.concatenate(([False], flags, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[::2], edges[1::2]
    k = int((ends - starts).argmax())
    return int(starts[k]), int(ends[k])


def tile_aligned(move: Move, w: int, h: int, tile: int = TILE) -> Move | None:
    """``move`` cut to the whole tiles it covers (a tile at the screen's edge is whole up to
    the edge), or None when too little is left. A copy that covers part of a tile leaves a
    partial piece on it at the relay; a tile that a scroll's copy keeps covering in part
    but never changes (blank lines, a status bar under the document) gathered such pieces
    until the relay asked for a key frame (about every 32 steps: ~160 kB and ~70 ms a
    second while scrolling). Cut, the tiles of the edge rows are compared as they are and
    sent whole when they changed."""
    x0, y0 = -(-move.x // tile) * tile, -(-move.y // tile) * tile
    x1 = w if move.x + move.w == w else (move.x + move.w) // tile * tile
    y1 = h if move.y + move.h == h else (move.y + move.h) // tile * tile
    if y1 - y0 < MIN_ROWS or x1 - x0 < MIN_ROWS:
        return None
    dx, dy = move.sx - move.x, move.sy - move.y
    return Move(x0, y0, x1 - x0, y1 - y0, x0 + dx, y0 + dy)


def apply_move(img: BGRA, move: Move) -> None:
    """Do the copy on ``img`` in place, as a viewer does (source read before writing)."""
    copy_rows(img, move.x, move.y, move.w, move.h, move.sx, move.sy)


def copy_rows(img: npt.NDArray[np.uint8], x: int, y: int, w: int, h: int, sx: int,
              sy: int) -> None:
    """Copy the w x h rectangle at (sx, sy) of ``img`` to (x, y), in place, as if the source
    were read first. A vertical move is done in bands of ``|dy|`` rows, in the order that
    never overwrites a row before it is read: one pass over memory instead of two."""
    dy = sy - y
    if sx != x or abs(dy) < 8 or abs(dy) >= h:
        img[y : y + h, x : x + w] = img[sy : sy + h, sx : sx + w].copy()
        return
    step = abs(dy)
    starts = range(0, h, step) if dy > 0 else reversed(range(0, h, step))
    for r in starts:  # content moving up: top band first; moving down: bottom band first
        n = min(step, h - r)
        img[y + r : y + r + n, x : x + w] = img[sy + r : sy + r + n, x : x + w]


def from_source(per_tile: npt.NDArray[Any], move: Move, tile: int = TILE) -> npt.NDArray[Any]:
    """For every tile the destination of ``move`` touches (rows x cols of
    :func:`move_tiles`' box), the largest value of ``per_tile`` over the tiles its pixels
    come from (a bool array: whether any of them is set)."""
    t = tile
    dy, dx = move.sy - move.y, move.sx - move.x
    r0, r1 = move.y // t, -(-(move.y + move.h) // t)
    c0, c1 = move.x // t, -(-(move.x + move.w) // t)
    rows = []
    for r in range(r0, r1):
        a = max(r * t, move.y) + dy
        b = min((r + 1) * t, move.y + move.h) + dy
        rows.append(per_tile[a // t : -(-b // t)].max(axis=0))
    by_row = np.stack(rows)
    cols = []
    for c in range(c0, c1):
        e = max(c * t, move.x) + dx
        f = min((c + 1) * t, move.x + move.w) + dx
        cols.append(by_row[:, e // t : -(-f // t)].max(axis=1))
    out: npt.NDArray[Any] = np.stack(cols, axis=1)
    return out


def whole_tiles(move: Move, tile: int = TILE) -> Mask:
    """Of the tiles :func:`from_source` covers, those the destination covers entirely (a
    partial tile at the screen's edge counts as partly covered: the conservative side)."""
    t = tile
    r0, r1 = move.y // t, -(-(move.y + move.h) // t)
    c0, c1 = move.x // t, -(-(move.x + move.w) // t)
    rows = np.array([move.y <= r * t and (r + 1) * t <= move.y + move.h for r in range(r0, r1)])
    cols = np.array([move.x <= c * t and (c + 1) * t <= move.x + move.w for c in range(c0, c1)])
    out: Mask = rows[:, None] & cols[None, :]
    return out


def move_tiles(move: Move, shape: tuple[int, int], tile: int = TILE) -> Mask:
    """The tiles (rows, cols) the destination of ``move`` touches."""
    out: Mask = np.zeros(shape, np.bool_)
    out[move.y // tile : -(-(move.y + move.h) // tile),
        move.x // tile : -(-(move.x + move.w) // tile)] = True
    return out
