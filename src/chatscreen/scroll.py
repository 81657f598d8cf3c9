"""Scroll detection: which part of the screen moved up or down since the previous capture.

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
Horizontal moves are not looked for (rare on desktops; they fall back to changed tiles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from chatscreen.tiles import BGRA, TILE, Mask, words

MIN_TILES = 16  # fewer changed tiles than this: not worth looking for a move
MIN_ROWS = 32  # a move shorter than this many rows is not used
MIN_VOTES = 0.02  # share of the region's segments that must agree on the offset
ROW_MATCH = 0.85  # share of a row's segments that must have moved for the row to be copied
VOTE_COLUMNS = 8  # segment columns that vote (spread over the region); all are checked later
_RNG = np.random.default_rng(0x5C0011)
_WEIGHTS = (_RNG.integers(1, 2**63, TILE // 2, dtype=np.uint64) | np.uint64(1))


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
    out: npt.NDArray[np.uint64] = pairs @ weights  # wraps mod 2**64; no temporary array
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
        self._known: tuple[Box4, Hashes] | None = None  # hashes of prev over a box
        self._pending: tuple[Box4, Hashes] | None = None  # hashes of the last cur

    def find(self, prev: BGRA, cur: BGRA, region: Mask) -> Move | None:
        known, self._known, self._pending = self._known, None, None

        def hashes(img: BGRA, box: Box4) -> Hashes:
            if img is prev and known is not None and known[0] == box:
                return known[1]
            out = segment_hashes(img, *box)
            if img is cur:
                self._pending = (box, out)
            return out

        return detect_move(prev, cur, region, self.tile, hashes)

    def keep(self, same: Mask | None) -> None:
        """The previous picture now equals the last one on the tiles set in ``same`` (None:
        everywhere): keep the last picture's hashes if they lie within."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        (x0, x1, y0, y1), _ = pending
        t = self.tile
        if same is None or bool(same[y0 // t : -(-y1 // t), x0 // t : -(-x1 // t)].all()):
            self._known = pending

    def forget(self) -> None:
        self._known = self._pending = None


def detect_move(prev: BGRA, cur: BGRA, dirty: Mask, tile: int = TILE,
                hashes: Callable[[BGRA, Box4], Hashes] | None = None) -> Move | None:
    """A vertical move of part of the changed region from ``prev`` to ``cur``, or None.
    ``hashes(img, (x0, x1, y0, y1))``: :func:`segment_hashes`, maybe remembered."""
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
    hp = hashes(prev, (x0, x1, y0, y1))
    hc = hashes(cur, (x0, x1, y0, y1))
    nrows, ncols = hc.shape
    dy, votes = _vote_rows(hp, hc)
    if dy == 0 or votes < max(8, MIN_VOTES * nrows):
        dy, votes = _vote_columns(hp, hc)
        if dy == 0 or votes < max(8, MIN_VOTES * nrows * min(ncols, VOTE_COLUMNS)):
            return None
    # dest rows i (region-relative) read prev rows i + dy
    i0, i1 = max(0, -dy), min(nrows, nrows - dy)
    if i1 - i0 < MIN_ROWS:
        return None
    match = hc[i0:i1] == hp[i0 + dy : i1 + dy]  # (dest rows, segment columns)
    ra, rb = _longest_run(match.mean(axis=1) >= 0.5)  # rows where most of it moved
    c0, c1 = _longest_run(match[ra:rb].mean(axis=0) >= 0.9)  # columns that moved there
    if c1 - c0 == 0:
        return None
    # a row belongs to the copy when nearly all of the span moved (a pointer drawn into the
    # capture, or a caret, leaves a few segments that the tile diff then sends as pixels)
    rows_ok = match[:, c0:c1].mean(axis=1) >= ROW_MATCH
    r0, r1 = _longest_run(rows_ok)
    if r1 - r0 < MIN_ROWS:
        return None
    y = y0 + i0 + r0
    xs, xe = x0 + c0 * TILE, x0 + c1 * TILE
    if c1 == ncols:  # the last, partial segment (screen edge) goes along when it matches
        tail = x1 - (x0 + ncols * TILE)
        if tail and np.array_equal(cur[y : y + r1 - r0, xe:x1], prev[y + dy : y + dy + r1 - r0,
                                                                     xe:x1]):
            xe = x1
    return Move(xs, y, xe - xs, r1 - r0, xs, y + dy)


def _longest_run(flags: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """[start, end) of the longest run of True in ``flags`` ((0, 0) if none)."""
    if not flags.any():
        return 0, 0
    padded = np.concatenate(([False], flags, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[::2], edges[1::2]
    k = int((ends - starts).argmax())
    return int(starts[k]), int(ends[k])


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


def move_tiles(move: Move, shape: tuple[int, int], tile: int = TILE) -> Mask:
    """The tiles (rows, cols) the destination of ``move`` touches."""
    out: Mask = np.zeros(shape, np.bool_)
    out[move.y // tile : -(-(move.y + move.h) // tile),
        move.x // tile : -(-(move.x + move.w) // tile)] = True
    return out
