"""The sharer's encoder: changed regions only, each encoded by its content.

:class:`ScreenEncoder` keeps the previous capture and, per tile, whether the viewers hold a
lossy version of it and when it last changed. For each new capture it sends:

* the tiles that changed, merged into few rectangles; tiles of few colours (text, UI: up to
  ``Preset.lossless_colours``) losslessly (``palette``, else ``zlib``), the others
  as JPEG. Lossless encoding costs ~40 ns a pixel here against ~5 for JPEG, so when more
  than ``LOSSLESS_BUDGET`` of the screen changes at once (a window dragged) all
  of it goes as JPEG, and the refresh below makes it exact once it stops moving;
* the **lossless refresh**: tiles sent lossy that have not changed for ``refresh_after``
  seconds, again losslessly, so that a still picture ends pixel-exact on every viewer;
* first, when part of the screen moved up, down or sideways (a scroll,
  :mod:`chatscreen.screen.scroll`),
  ``copy`` rects for it, one per tile row, applied to the reference picture as the viewers
  will apply them: the tiles above then only have to cover what still differs (the exposed
  lines), usually few enough to go losslessly. Each tile remembers how many copies deep its
  content is; a row deeper than ``COPY_REFRESH_DEPTH`` goes as pixels instead, so that the
  relay, which keeps every piece a copy reads, never holds long chains;
* nothing at all when nothing changed and nothing waits for a refresh.

A key frame (the first, after ``need_key``, or a new size) covers the whole screen, all of it
lossless: for a desktop, lossless WebP is smaller than JPEG q80 (262 vs 351 kB for the test
desktop) at ~50 ms more, once; then there is nothing to refresh.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from chatscreen.client.screen import OutRect
from chatscreen.screen.codec import (
    COPY,
    DEFAULT_QUALITY,
    encode_jpeg,
    encode_packed,
    encode_palette,
    encode_webp,
    encode_zlib,
)
from chatscreen.screen.scroll import (
    Move,
    MoveFinder,
    apply_move,
    from_source,
    move_tiles,
    tile_aligned,
    whole_tiles,
)
from chatscreen.screen.tiles import (
    BGRA,
    TILE,
    Box,
    Mask,
    change_map,
    full_map,
    grid,
    groups,
    largest_group,
    merge_tiles,
    tile_colours,
    tile_diff,
    words,
)
from chatscreen.screen.video import H264Encoder


@dataclass(frozen=True, slots=True)
class Preset:
    """How the sharer trades picture for bandwidth and CPU."""

    name: str
    quality: int  # JPEG quality of photographic regions
    subsampling: str  # JPEG chroma subsampling
    lossless_colours: int  # a tile with at most this many colours is sent losslessly
    refresh_after: float  # seconds a lossy tile must stay still before its lossless refresh


PRESETS = {
    # everything with few colours lossless, JPEG 4:4:4 q90 otherwise, quick refresh
    "text": Preset("text", 90, "444", 256, 0.15),
    # the default: lossless text/UI, JPEG q80 4:4:4 for photos, refresh after 0.3 s still
    "balanced": Preset("balanced", DEFAULT_QUALITY, "444", 256, 0.3),
    # moving pictures: lossless only for very flat tiles, JPEG q70 4:2:0, later refresh
    "motion": Preset("motion", 70, "420", 16, 0.5),
}
DEFAULT_PRESET = "balanced"
ENCODING_MODES = ("auto", "h264", "lossless", "jpeg")  # share --encoding
COPY_REFRESH_DEPTH = 48  # a band of a copy deeper than this in copies is sent as pixels
PARTIAL_LIMIT = 16  # rects cut to the changed pixels that may touch a tile before it is sent
#                     whole again; the relay asks for a key frame past 32 on one (MAX_PARTIAL)
PARTIAL_MAX = 24  # ... and merged rects never take a tile past this many
MERGE_SLACK = 192  # pixels: what a rect costs beside its pixels (header, palette), about
LOSSLESS_BUDGET = 0.25  # share of the screen's tiles an update (not a key frame) may
#                         encode losslessly; a bigger change goes lossy, refreshed once still


Region = OutRect  # one encoded rectangle of a frame, as ScreenChannel.send_frame takes it


@dataclass
class Update:
    key: bool
    regions: list[Region]
    refreshed: int = 0  # tiles sent as lossless refresh
    move: Move | None = None  # a scroll sent as a copy (the first region)

    @property
    def size(self) -> int:
        return sum(len(r.data) for r in self.regions)


def encode_lossless(img: BGRA, text: bool = False) -> tuple[str, bytes]:
    """``palette`` when the region has at most 256 colours, else lossless ``webp``, or
    with ``text`` (every tile of it has at most 256 colours: anti-aliased text, UI)
    ``zlib`` level 1: 2.5x faster than WebP for a strip of text (0.4 vs 1.0 ms for
    704x56), 1.6x its bytes (no match for WebP on photographic pictures)."""
    data = encode_palette(img)
    if data is not None:
        return "palette", data
    if text:
        return "zlib", encode_zlib(img, 1)
    return "webp", encode_webp(img, lossless=True)


class ScreenEncoder:
    """Turns successive BGRA captures into updates; lives on the capture thread."""

    def __init__(self, preset: str | Preset = DEFAULT_PRESET, *, quality: int | None = None,
                 tile: int = TILE, encoding: str = "auto") -> None:
        p = PRESETS[preset] if isinstance(preset, str) else preset
        if quality is not None:
            p = Preset(p.name, quality, p.subsampling, p.lossless_colours, p.refresh_after)
        self.preset = p
        self.tile = tile
        self._prev: BGRA | None = None
        self._lossy: Mask | None = None  # tiles whose viewers' copy is lossy
        self._changed_at: np.ndarray | None = None  # per tile, time of its last change
        if encoding not in ENCODING_MODES:
            raise ValueError(f"encoding must be one of {', '.join(ENCODING_MODES)}")
        self.encoding = encoding
        self.video = VideoRegion(encoding, self.preset, tile) if encoding in ("auto", "h264") \
            else None
        self.moves = True  # look for scrolls and send them as copies
        self._last_move: Move | None = None  # see _diff_streaming
        self._finder = MoveFinder(tile)
        # per tile, how many copies deep its content is (the relay keeps every piece of
        # such a chain alive); see _age_copies
        self._depth: npt.NDArray[np.int32] = np.zeros((0, 0), np.int32)
        # per tile, the rects cut to changed pixels that the relay keeps on it (those that
        # touched it since it was last sent whole, less those a newer one covers), and
        # their number per tile; see _cut
        self._pieces: dict[tuple[int, int], list[XYXY]] = {}
        self._partial: npt.NDArray[np.int32] = np.zeros((0, 0), np.int32)

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self._prev is None else (self._prev.shape[1], self._prev.shape[0])

    def encode(self, img: BGRA, *, key: bool = False, now: float | None = None,
               hint: Mask | None = None, damage: list[Box] | None = None) -> Update | None:
        """The update that brings the viewers from the previous capture to ``img`` (which the
        encoder keeps, and may later write into: pass a new array each time), or None when
        there is nothing to send. ``key``: cover the whole screen.

        ``hint``: the tiles that may have changed (from X DAMAGE); only those are compared.
        The tile diff stays the truth (except inside a running H.264 stream: see
        :meth:`_diff_streaming`): a hinted tile that did not change is not sent, and
        the encoder's reference picture takes the new pixels of the hinted (and refreshed)
        tiles only, so it keeps what the viewers hold and a change the hint missed is still
        found by the next full comparison (``hint=None``).

        ``damage`` (with ``hint``, whose tiles it lies in): the only pixels where ``img``
        may differ from the previous capture (the sharer captured just those into a copy
        of the screen): only they are compared, once, and the boxes of changed pixels
        per tile come from that one comparison (see :func:`damage_changes`); typing
        damages a line 19 pixels high, whose tiles are 64 or 128."""
        now = time.monotonic() if now is None else now
        h, w = img.shape[:2]
        prev = self._prev
        if prev is None or prev.shape != img.shape:
            key = True
        move: Move | None = None
        changes: dict[tuple[int, int], XYXY] | None = None  # see damage_changes
        if key:
            dirty = full_map(w, h, self.tile)
            self._lossy = np.zeros_like(dirty)
            self._changed_at = np.full(dirty.shape, now)
            self._depth = np.zeros(dirty.shape, np.int32)
            self._partial = np.zeros(dirty.shape, np.int32)
            self._pieces = {}
        elif hint is not None:
            assert prev is not None
            if hint.shape != grid(w, h, self.tile):
                raise ValueError(f"hint is {hint.shape}, the screen {grid(w, h, self.tile)}")
            # a scroll is looked for in the damaged region itself (no exact diff needed to
            # look), and the exact diff is taken once, after the copy; only in its largest
            # connected group of tiles (typing damages a line and a clock far apart: their
            # bounding box, ~70 % of the screen, took 4.5 ms a capture to search)
            streamed = self.stream_tiles(hint.shape)
            if streamed.any():
                self.prefetch(img, hint)  # x264 runs while the rest is compared
                dirty = self._diff_streaming(prev, img, hint, streamed, now)
                move = self._last_move
                look = hint if move is None else hint | move_tiles(move, hint.shape, self.tile)
            else:
                move = self._find_move(prev, img, largest_group(hint), now) if self.moves \
                    else None
                look = hint if move is None else hint | move_tiles(move, hint.shape, self.tile)
                if move is None and damage is not None:
                    changes = damage_changes(words(prev), words(img), damage, self.tile)
                    dirty = np.zeros_like(hint)
                    if changes:
                        r, c = zip(*changes, strict=True)
                        dirty[r, c] = True
                else:
                    dirty = hinted_change_map(prev, img, look, self.tile)
        else:
            assert prev is not None
            dirty = change_map(prev, img, self.tile)
            move = self._find_move(prev, img, dirty & ~self.stream_tiles(dirty.shape), now) \
                if self.moves else None
            if move is not None:
                dirty = hinted_change_map(prev, img, dirty | move_tiles(move, dirty.shape,
                                                                        self.tile), self.tile)
        assert self._lossy is not None and self._changed_at is not None
        depth = self._depth  # (a cut tile keeps its chain of copies: see below)
        copies: list[Region] = []
        if move is not None:
            forced = self._age_copies(move, dirty)
            dirty |= forced
            copies = band_copies(move, forced, self.tile)
        changed = None
        if not key and prev is not None and self.video is not None \
                and self.video.box is not None:
            dirty, changed = self._around_stream(prev, img, dirty)
        self._changed_at[dirty] = now
        refresh = self._lossy & ~dirty & (now - self._changed_at >= self.preset.refresh_after)
        video: list[Region] = []
        vmask = np.zeros_like(dirty)
        if self.video is not None:  # a region that changes every frame goes as H.264
            video, vmask = self.video.step(img, dirty, refresh, key=key, prev=prev,
                                           changed=changed)
            if video:
                dirty = dirty & ~self.video.interior(w, h)  # what it draws over entirely
                self._lossy[vmask] = True  # refreshed losslessly once the motion stops
                self._changed_at[vmask] = now
            else:
                vmask = np.zeros_like(dirty)
        few = np.zeros_like(dirty)
        if key or self.encoding == "lossless":
            few[:] = True
        elif self.encoding == "jpeg":
            pass  # every change lossy, refreshed losslessly once still
        elif dirty.any():
            counts = tile_colours(img, dirty, self.tile, cap=self.preset.lossless_colours + 1)
            few[dirty] = counts <= self.preset.lossless_colours
            if few.sum() > LOSSLESS_BUDGET * few.size:
                few[:] = False
        lossless = (dirty & few) | refresh
        lossy = dirty & ~few
        cut: list[Box] = []
        text = dirty & few
        partly = np.zeros_like(dirty)  # tiles sent as rects cut to their changed pixels
        if not key and self.encoding != "lossless" and prev is not None and text.any():
            cuttable = text & ~self._lossy & (self._partial < PARTIAL_LIMIT)
            if move is not None:
                cuttable &= ~move_tiles(move, dirty.shape, self.tile)
            if cuttable.any() and self.tile == TILE:
                cut, whole = self._cut(prev, img, cuttable, changes)
                text = text & ~cuttable | whole
                partly = cuttable & ~whole
        self._sent_whole((dirty | refresh) & ~partly)
        # sent as pixels: no copy chain behind them, unless cut (the rest is still a copy's)
        self._depth[(dirty & ~partly) | refresh | vmask] = 0
        if partly.any() and depth is not self._depth:  # (_age_copies reset its dirty tiles)
            self._depth[partly] = depth[partly]
        if key or hint is None or prev is None:
            self._prev = img if img.flags.writeable else img.copy()
            if key:
                self._finder.forget()
            else:
                self._finder.keep(None)
        else:  # keep the reference = what the viewers hold: take only the tiles looked at
            # (a compared tile that did not change already holds the same pixels)
            for box in merge_tiles(refresh | dirty | vmask, w, h, self.tile):
                ys, xs = slice(box.y, box.y + box.h), slice(box.x, box.x + box.w)
                prev[ys, xs] = img[ys, xs]
            self._finder.keep(look)  # the compared tiles now hold img's pixels
        if not dirty.any() and not refresh.any() and move is None and not video:
            return None
        regions = copies
        if key or self.encoding == "lossless":  # few is not "few colours" there
            regions += [self._region(img, box, True) for box in merge_tiles(lossless, w, h,
                                                                            self.tile)]
        else:  # changed tiles of few colours each (text), apart from the refresh (photos)
            regions += [self._region(img, box, True, text=True)
                        for box in merge_tiles(text, w, h, self.tile)]
            regions += [packed_region(img, box) for box in cut]
            regions += [self._region(img, box, True)
                        for box in merge_tiles(refresh, w, h, self.tile)]
        regions += [self._region(img, box, False) for box in merge_tiles(lossy, w, h, self.tile)]
        if self.video is not None:
            video = self.video.finish(video)  # the tiles were encoded while x264 worked
        regions += video
        self._lossy[lossless] = False
        self._lossy[lossy] = True
        return Update(key, regions, int(refresh.sum()), move)

    def _diff_streaming(self, prev: BGRA, img: BGRA, hint: Mask, streamed: Mask,
                        now: float) -> Mask:
        """The changed tiles of a hinted capture while an H.264 stream runs (its tiles set in
        ``streamed``); the move found, if any, in ``_last_move``. Inside the stream, damage
        is taken as change without comparing: the whole rectangle goes as one picture
        anyway (an unchanged one costs x264 a few bytes; the comparison ~2 ms a picture).
        Outside, the tiles are compared first and a scroll is looked for only among those
        that changed: the X server often reports the bounding box of the stream and of a
        small change far from it (a clock, a cursor), and looking for a scroll in all of it
        cost as much as the H.264 encoding itself."""
        outside = hinted_change_map(prev, img, hint & ~streamed, self.tile)
        move = self._find_move(prev, img, outside, now) if self.moves else None
        if move is not None:
            outside = hinted_change_map(prev, img, outside | move_tiles(move, hint.shape,
                                                                         self.tile), self.tile)
        self._last_move = move
        dirty: Mask = outside | (hint & streamed)
        return dirty

    def stream_area(self) -> Box | None:
        """The rectangle of the running H.264 stream's tiles (its picture's rectangle is
        fitted inside), if any."""
        return None if self.video is None else self.video.area

    def _around_stream(self, prev: BGRA, img: BGRA, dirty: Mask) -> tuple[Mask, bool]:
        """``dirty`` with the running stream's edge tiles (those its fitted rectangle covers
        in part) set only where they changed **outside** the rectangle, and whether the
        stream's tiles changed at all: a change around the rectangle goes as tiles, and the
        stream grows over its whole tiles."""
        assert self.video is not None and self.video.box is not None
        tiles = self.stream_tiles(dirty.shape)
        changed = bool((dirty & tiles).any())
        h, w = img.shape[:2]
        edge = dirty & tiles & ~self.video.interior(w, h)
        if edge.any():
            assert self.video.area is not None
            dirty = dirty & ~edge | (edge & around(prev, img, self.video.box, self.video.area,
                                                   dirty.shape, self.tile))
        return dirty, changed

    def stream_tiles(self, shape: tuple[int, ...]) -> Mask:
        """The tiles of the running H.264 stream (none when there is none): no scroll is
        looked for there (it cost as much as the H.264 encoding itself; motion inside the
        stream is H.264's business)."""
        if self.video is None or self.video.area is None:
            return np.zeros(shape, np.bool_)
        return self.video.tiles(self.video.area, shape)

    def _find_move(self, prev: BGRA, img: BGRA, region: Mask, now: float) -> Move | None:
        """Look for a scroll in the ``region`` tiles (changed or damaged); when found, apply
        it to the reference picture, as the viewers will: the caller then compares the
        region and the copy's tiles."""
        if not region.any():
            return None
        move = self._finder.find(prev, img, region)
        if move is not None:
            move = tile_aligned(move, img.shape[1], img.shape[0], self.tile)
        if move is None:
            return None
        assert self._lossy is not None and self._changed_at is not None
        dest = move_tiles(move, region.shape, self.tile)
        # the moved tiles carry the lossiness of the tiles they come from
        t = self.tile
        r0, r1 = move.y // t, -(-(move.y + move.h) // t)
        c0, c1 = move.x // t, -(-(move.x + move.w) // t)
        self._lossy[r0:r1, c0:c1] |= from_source(self._lossy, move, t)
        self._changed_at[dest] = now
        apply_move(prev, move)
        return move

    def _age_copies(self, move: Move, dirty: Mask) -> Mask:
        """Track how deep the chain of copies behind each tile is, and bound it: the tiles
        of one band (tile row) of the copy to send as pixels instead (lossless when few
        colours), else none.

        The copy goes as one ``copy`` rect per band, so that a band sent as pixels ends the
        chains through it. Content keeps coming from the side it moves away from (below,
        for a scroll down a document), so resetting the deepest band does not help (it
        copies from its deep neighbour again at the next step): when a band is deeper than
        ``COPY_REFRESH_DEPTH``, the one of those nearest that side is sent. A long scroll
        then stays under ~1.3 x that depth, sending a band in about a third of its steps,
        instead of the relay asking for a key frame (``MAX_COPY_DEPTH``)."""
        t, d = self.tile, self._depth
        new = d.copy()
        r0, r1 = move.y // t, -(-(move.y + move.h) // t)
        c0, c1 = move.x // t, -(-(move.x + move.w) // t)
        rows = list(range(r0, r1))
        src = from_source(d, move, t) + 1
        new[r0:r1, c0:c1] = np.where(whole_tiles(move, t), src,
                                     np.maximum(new[r0:r1, c0:c1], src))
        new[dirty] = 0
        forced: Mask = np.zeros_like(dirty)
        deep = [r for r in rows if int(new[r, c0:c1].max()) > COPY_REFRESH_DEPTH]
        if deep:
            r = max(deep) if move.sy > move.y else min(deep)
            forced[r, c0:c1] = True
            new[r, c0:c1] = 0
        self._depth = new
        return forced

    def _cut(self, prev: BGRA, img: BGRA, tiles: Mask,
             changes: dict[tuple[int, int], XYXY] | None = None) -> tuple[list[Box], Mask]:
        """The rects that bring the set ``tiles`` from ``prev`` to ``img``: per tile, the box
        of its pixels that differ, merged with its neighbours' where the merged box is
        hardly bigger (a glyph across a tile edge, a word), and the tiles whose box covers
        most of the tile (sent whole instead). Keeps what the relay keeps of them per tile
        (``_pieces``: every piece covering part of a tile, until a newer one covers it
        entirely, or the tile is sent whole) and their number (``_partial``): with
        ``PARTIAL_LIMIT`` of them a tile is sent whole (see :meth:`encode`), and merged
        rects never leave more than ``PARTIAL_MAX`` on one, under the relay's 32.
        ``changes``: the boxes of changed pixels per tile, already known
        (:func:`damage_changes`)."""
        t = self.tile
        h, w = img.shape[:2]
        if changes is None:
            pw, cw = words(prev), words(img)
            found = [(r, c, box) for rect in merge_tiles(tiles, w, h, t)
                     for r, c, box in changed_boxes(pw, cw, rect, t)]
        else:
            found = [(r, c, box) for (r, c), box in changes.items() if tiles[r, c]]
        boxes: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        whole: Mask = np.zeros_like(tiles)
        for r, c, box in found:
            tw, th = min(t, w - c * t), min(t, h - r * t)
            if _area(box) * 4 >= tw * th * 3:
                whole[r, c] = True
            else:
                boxes[r, c] = box
        merged = merge_boxes(boxes)
        kept = self._kept(merged)
        if max(map(len, kept.values()), default=0) > PARTIAL_MAX:  # merged ones overlap
            merged = list(boxes.values())  # apart, each adds one piece to its own tile only
            kept = self._kept(merged)
        for k, pieces in kept.items():
            self._pieces[k] = pieces
            self._partial[k] = len(pieces)
        return [Box(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in merged], whole

    def _kept(self, boxes: list[XYXY]) -> dict[tuple[int, int], list[XYXY]]:
        """What the relay keeps on each tile ``boxes`` touch once they are added in order
        (as it does: a partial piece goes when a newer one covers it entirely)."""
        t = self.tile
        out: dict[tuple[int, int], list[XYXY]] = {}
        for b in boxes:
            for r in range(b[1] // t, (b[3] - 1) // t + 1):
                for c in range(b[0] // t, (b[2] - 1) // t + 1):
                    old = out.get((r, c))
                    if old is None:
                        old = self._pieces.get((r, c), [])
                    out[r, c] = [p for p in old if not _inside(p, b)] + [b]
        return out

    def _sent_whole(self, tiles: Mask) -> None:
        """The set ``tiles`` went whole: the relay keeps no partial piece on them."""
        if self._pieces and tiles.any():
            for k in [k for k in self._pieces if tiles[k]]:
                del self._pieces[k]
        self._partial[tiles] = 0

    def _region(self, img: BGRA, box: Box, lossless: bool, *, text: bool = False) -> Region:
        part = img[box.y : box.y + box.h, box.x : box.x + box.w]
        if lossless:
            enc, data = encode_lossless(part, text)
        else:
            enc, data = "jpeg", encode_jpeg(part, self.preset.quality, self.preset.subsampling)
        return Region(box.x, box.y, box.w, box.h, enc, data)

    def request_idr(self) -> None:
        """The relay asked (``need_idr``): the next H.264 picture is a keyframe."""
        if self.video is not None:
            self.video.request_idr()

    def prefetch(self, img: BGRA, hint: Mask) -> bool:
        """Start the H.264 picture of ``img`` for the coming :meth:`encode` with ``hint``
        now, on its own thread, if the hint touches the running stream (see
        :meth:`VideoRegion.prefetch`): the caller may then capture the rest of the screen into
        ``img``, outside the stream's rectangle, while x264 works. True if started."""
        if self.video is None or self.video.box is None:
            return False
        if not (hint & self.stream_tiles(hint.shape)).any():
            return False
        self.video.prefetch(img)
        return True

    def close(self) -> None:
        """End the H.264 stream and its thread, if any."""
        if self.video is not None:
            self.video.close()

    def pending_refresh(self) -> bool:
        """Are lossy tiles waiting for their lossless refresh?"""
        return self._lossy is not None and bool(self._lossy.any())

    def refresh_due(self) -> float | None:
        """When (``time.monotonic()``) the earliest pending lossless refresh is due, or None
        when no tile waits for one: a sharer that captures only on damage must capture
        then, even if nothing changes."""
        if self._lossy is None or self._changed_at is None or not self._lossy.any():
            return None
        return float(self._changed_at[self._lossy].min()) + self.preset.refresh_after


def copy_region(move: Move) -> Region:
    """A ``copy`` rect: the destination, and the source's top left as 2 x uint32 BE."""
    return Region(move.x, move.y, move.w, move.h, "copy", COPY.pack(move.sx, move.sy))


def band_copies(move: Move, skip: Mask, tile: int = TILE) -> list[Region]:
    """``move`` as one copy rect per tile row it covers, less the rows set in ``skip``
    (sent as pixels), ordered so that none overwrites what a later one reads: top first
    when the content moves up (it reads below), bottom first when it moves down."""
    dy = move.sy - move.y
    out = []
    c = move.x // tile
    for r in range(move.y // tile, -(-(move.y + move.h) // tile)):
        if skip[r, c]:
            continue
        y0, y1 = max(r * tile, move.y), min((r + 1) * tile, move.y + move.h)
        out.append(copy_region(Move(move.x, y0, move.w, y1 - y0, move.sx, y0 + dy)))
    return out if dy > 0 else out[::-1]


def packed_region(img: BGRA, box: Box) -> Region:
    """A small rect of few colours as ``packed`` (else as :func:`encode_lossless` would)."""
    part = img[box.y : box.y + box.h, box.x : box.x + box.w]
    data = encode_packed(part)
    if data is None:
        enc, data = encode_lossless(part, text=True)
        return Region(box.x, box.y, box.w, box.h, enc, data)
    return Region(box.x, box.y, box.w, box.h, "packed", data)


XYXY = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def changed_boxes(a: npt.NDArray[np.uint32], b: npt.NDArray[np.uint32], box: Box,
                  tile: int = TILE) -> list[tuple[int, int, XYXY]]:
    """Per tile of ``box`` (whose top left is on the tile grid), the bounding box of the
    pixels where the word pictures ``a`` and ``b`` differ, as (row, col, box); tiles where
    none differs are left out. One comparison of the rect, then any() along rows and
    columns per tile: no per-pixel Python."""
    diff = a[box.y : box.y + box.h, box.x : box.x + box.w] \
        != b[box.y : box.y + box.h, box.x : box.x + box.w]
    rows, cols = -(-box.h // tile), -(-box.w // tile)
    if diff.shape != (rows * tile, cols * tile):
        diff = np.pad(diff, ((0, rows * tile - box.h), (0, cols * tile - box.w)))
    d = diff.reshape(rows, tile, cols, tile)
    ys = d.any(axis=3)  # rows, tile, cols: which lines of each tile differ
    xs = d.any(axis=1)  # rows, cols, tile: which columns
    y0, y1 = ys.argmax(axis=1), tile - ys[:, ::-1, :].argmax(axis=1)
    x0, x1 = xs.argmax(axis=2), tile - xs[:, :, ::-1].argmax(axis=2)
    out = []
    r0, c0 = box.y // tile, box.x // tile
    for r, c in zip(*np.nonzero(ys.any(axis=1)), strict=True):
        px, py = box.x + int(c) * tile, box.y + int(r) * tile
        out.append((r0 + int(r), c0 + int(c), (px + int(x0[r, c]), py + int(y0[r, c]),
                                               px + int(x1[r, c]), py + int(y1[r, c]))))
    return out


def damage_changes(a: npt.NDArray[np.uint32], b: npt.NDArray[np.uint32], boxes: list[Box],
                   tile: int = TILE) -> dict[tuple[int, int], XYXY]:
    """Per tile (row, col), the bounding box of the pixels of ``boxes`` (anywhere on the
    word pictures ``a`` and ``b``) where they differ; tiles where none differs are left
    out. Only the pixels of the boxes are compared, once: a damaged line of text 1918x19 is
    36 k pixels, its tiles 123-246 k. The boxes found in one tile (boxes may share tiles)
    are joined."""
    out: dict[tuple[int, int], XYXY] = {}
    for box in boxes:
        x0, y0 = box.x, box.y
        d = a[y0 : y0 + box.h, x0 : x0 + box.w] != b[y0 : y0 + box.h, x0 : x0 + box.w]
        if not d.any():
            continue
        # the box's columns split at the tile grid: [starts[i], ends[i]) each
        starts = np.array([0, *range(tile - x0 % tile, box.w, tile)], np.intp)
        ends = [*starts[1:].tolist(), box.w]
        for ty in range(y0 // tile, (y0 + box.h - 1) // tile + 1):
            ry0 = max(ty * tile, y0) - y0
            part = d[ry0 : min((ty + 1) * tile, y0 + box.h) - y0]
            cols = part.any(axis=0)
            for i in np.flatnonzero(np.logical_or.reduceat(cols, starts)).tolist():
                cs, ce = int(starts[i]), ends[i]
                seg = cols[cs:ce]
                rows = part[:, cs:ce].any(axis=1)
                found = (x0 + cs + int(seg.argmax()), y0 + ry0 + int(rows.argmax()),
                         x0 + ce - int(seg[::-1].argmax()),
                         y0 + ry0 + len(rows) - int(rows[::-1].argmax()))
                key = (ty, (x0 + cs) // tile)
                old = out.get(key)
                out[key] = found if old is None else (
                    min(old[0], found[0]), min(old[1], found[1]),
                    max(old[2], found[2]), max(old[3], found[3]))
    return out


def _area(b: XYXY) -> int:
    return (b[2] - b[0]) * (b[3] - b[1])


def merge_boxes(boxes: dict[tuple[int, int], XYXY]) -> list[XYXY]:
    """Join the boxes of neighbouring tiles (keyed by row, col) while the joined box is no
    bigger than the two apart plus ``MERGE_SLACK`` pixels (what a rect costs beside its
    pixels: its header, its palette) and every tile it touches has a box of its own (a
    merged box never lays a partial piece on a tile that is not counted as cut)."""
    group = {k: k for k in boxes}
    box = dict(boxes)

    def root(k: tuple[int, int]) -> tuple[int, int]:
        while group[k] != k:
            k = group[k]
        return k

    for k in sorted(boxes):
        for nb in ((k[0], k[1] + 1), (k[0] + 1, k[1])):
            if nb not in boxes:
                continue
            a, b = root(k), root(nb)
            if a == b:
                continue
            p, q = box[a], box[b]
            u = (min(p[0], q[0]), min(p[1], q[1]), max(p[2], q[2]), max(p[3], q[3]))
            if _area(u) > _area(p) + _area(q) + MERGE_SLACK:
                continue
            t = TILE
            if all((r, c) in boxes for r in range(u[1] // t, (u[3] - 1) // t + 1)
                   for c in range(u[0] // t, (u[2] - 1) // t + 1)):
                group[b] = a
                box[a] = u
                del box[b]
    return list(box.values())


def _inside(a: XYXY, b: XYXY) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def hinted_change_map(prev: BGRA, cur: BGRA, hint: Mask, tile: int = TILE) -> Mask:
    """:func:`~chatscreen.screen.tiles.change_map` restricted to the set tiles of ``hint`` (others
    are reported unchanged), comparing only the pixels of the hinted tiles."""
    h, w = cur.shape[:2]
    out: Mask = np.zeros_like(hint)
    if not hint.any():
        return out
    pw, cw = words(prev), words(cur)
    for box in merge_tiles(hint, w, h, tile):
        ys, xs = slice(box.y, box.y + box.h), slice(box.x, box.x + box.w)
        part = tile_diff(pw[ys, xs], cw[ys, xs], tile)
        r0, c0 = box.y // tile, box.x // tile
        out[r0 : r0 + part.shape[0], c0 : c0 + part.shape[1]] = part
    return out


HISTORY = 10  # captures remembered per tile to find motion
HOT_AUTO = 8  # auto: a tile changed in this many of the last HISTORY captures is "moving"
HOT_FORCED = 3  # --encoding h264: a lower bar
MIN_TILES_AUTO = 12  # auto: a moving region smaller than this stays on tiles (a cursor, a clock)
RECHECK_AFTER = 1.0  # seconds before a region found not photographic is looked at again


class VideoRegion:
    """Finds the region that changes every frame and sends it as one H.264 stream.

    Per tile, how many of the last ``HISTORY`` captures changed it. ``auto``: the largest
    4-connected group of tiles changed in at least ``HOT_AUTO`` of them, at least
    ``MIN_TILES_AUTO`` tiles, with mostly many-colour tiles (a photo, a video, not scrolling
    text: that stays lossless) becomes the stream's rectangle (its bounding box). ``h264``
    (forced): the bounding box of every tile changed in ``HOT_FORCED`` of them. While the
    stream runs, every capture that changed a tile in it sends the whole rectangle as one
    H.264 picture. The stream ends (and the lossless refresh makes the rectangle exact) when
    it has been still for the preset's ``refresh_after``, when little of it still moves, on a
    key frame or a new size; motion outside it makes a new stream over both (a new IDR).
    One stream at a time."""

    def __init__(self, mode: str, preset: Preset, tile: int = TILE) -> None:
        self.mode = mode
        self.preset = preset
        self.tile = tile
        self.box: Box | None = None  # the stream's rectangle, in pixels
        self.area: Box | None = None  # its tiles' rectangle (box is fitted inside it)
        self.encoder: H264Encoder | None = None
        self._counts: np.ndarray | None = None
        self._history: list[Mask] = []
        self._rejected: dict[Box, float] = {}  # regions found not photographic, and when
        self.streams = 0  # streams started (for tests and stats)
        self._pool: ThreadPoolExecutor | None = None  # the thread that runs x264 (prefetch)
        self._pending: Future[bytes] | None = None  # the picture prefetch started

    def request_idr(self) -> None:
        if self.encoder is not None:
            self.encoder.idr_next = True

    def prefetch(self, img: BGRA) -> None:
        """Start encoding the running stream's picture of ``img`` on the stream's own thread,
        for a capture known (from damage) to change the stream: x264 (which releases the GIL,
        and is most of a picture's cost) then runs while the caller compares and encodes the
        rest of the screen. :meth:`step` takes the picture, and sends it even if the tiles
        turn out unchanged (x264 has coded it: the viewers' decoders need it next); a stream
        that ends instead waits for it, and drops it with the encoder."""
        if self.encoder is None or self.box is None or self._pending is not None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="x264")
        b = self.box
        self._pending = self._pool.submit(self.encoder.encode,
                                          img[b.y : b.y + b.h, b.x : b.x + b.w])

    def _prefetched(self) -> bytes | None:
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

    def stop(self) -> None:
        self._prefetched()  # the encoder is not closed under its thread
        self.box = self.area = None
        if self.encoder is not None:
            self.encoder.close()
            self.encoder = None

    def close(self) -> None:
        self.stop()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _remember(self, dirty: Mask) -> Mask:
        if self._counts is None or self._counts.shape != dirty.shape:
            self._counts = np.zeros(dirty.shape, np.int16)
            self._history = []
        self._history.append(dirty)
        self._counts += dirty
        if len(self._history) > HISTORY:
            self._counts -= self._history.pop(0)
        hot: Mask = self._counts >= (HOT_AUTO if self.mode == "auto" else HOT_FORCED)
        return hot

    def tiles(self, box: Box, shape: tuple[int, ...]) -> Mask:
        t = self.tile
        m: Mask = np.zeros(shape, np.bool_)
        m[box.y // t : -(-(box.y + box.h) // t), box.x // t : -(-(box.x + box.w) // t)] = True
        return m

    def interior(self, w: int, h: int) -> Mask:
        """The tiles of a ``w`` x ``h`` screen that the stream's picture covers entirely
        (all of its tiles but the edge ones a fitted rectangle covers in part)."""
        t = self.tile
        m: Mask = np.zeros(grid(w, h, t), np.bool_)
        b = self.box
        if b is None:
            return m
        c0, r0 = -(-b.x // t), -(-b.y // t)
        # a tile is covered when the box reaches its far side, or the screen's edge
        c1 = w // t + 1 if b.x + b.w >= w else (b.x + b.w) // t
        r1 = h // t + 1 if b.y + b.h >= h else (b.y + b.h) // t
        m[r0:r1, c0:c1] = True
        return m

    def step(self, img: BGRA, dirty: Mask, refresh: Mask, *, key: bool,
             prev: BGRA | None = None, changed: bool | None = None
             ) -> tuple[list[Region], Mask]:
        """This capture's H.264 region (or none) and the tiles it touches. ``prev``: the
        reference picture before this capture (to fit a new stream's rectangle to what
        moves); ``changed``: whether the running stream's picture changed (default: any of
        its tiles in ``dirty``), its edge tiles in ``dirty`` then meaning a change around
        the fitted rectangle (see :meth:`ScreenEncoder._around_stream`)."""
        h, w = img.shape[:2]
        if key:
            self.stop()  # a key frame is lossless; the relay forgets streams with it
            return [], dirty
        hot = self._remember(dirty)
        if self._counts is None:  # just forgotten: nothing moves
            hot = np.zeros_like(dirty)
        grow: Box | None = None
        if self.box is not None and self.area is not None:
            inside = self.tiles(self.area, dirty.shape)
            if changed is None:
                changed = bool((dirty & inside).any())
            if (refresh & inside).any() or (self.area.x + self.area.w > w
                                            or self.area.y + self.area.h > h):
                self.stop()  # still long enough for the lossless refresh: motion over
                self._counts = None  # and what moved before is history
                hot = np.zeros_like(dirty)
            elif len(self._history) >= HISTORY and (hot & inside).sum() < inside.sum() / 4:
                self.stop()  # little of it moves any more (a cursor in a stopped video)
            elif (dirty & inside & ~self.interior(w, h)).any():
                grow = self.area  # motion around the fitted rectangle: a new stream over
                self.stop()  # all of its tiles
        want = grow
        if want is None and (self.area is None
                             or (hot & ~self.tiles(self.area, dirty.shape)).any()):
            want = self._candidate(img, hot, w, h)  # (none needed while all motion is inside)
        if want is not None and self.area is not None and not _within(want, self.area):
            want = _union(want, self.area) if _overlap(want, self.area) else want
            self.stop()
        if self.box is None and want is not None:
            self.area = want
            self.box = fit_motion(prev, img, want) if grow is None and prev is not None \
                else want
            self.encoder = H264Encoder(self.box.w, self.box.h)
            self.streams += 1
            changed = bool((dirty & self.tiles(want, dirty.shape)).any())
        if self.box is None or self.encoder is None or self.area is None:
            return [], dirty
        inside = self.tiles(self.area, dirty.shape)
        b = self.box
        if self._pending is not None:  # x264 is at it: its bytes come in finish()
            return [Region(b.x, b.y, b.w, b.h, "h264", b"")], inside
        if not (changed if changed is not None else (dirty & inside).any()):
            return [], inside
        data = self.encoder.encode(img[b.y : b.y + b.h, b.x : b.x + b.w])
        return [Region(b.x, b.y, b.w, b.h, "h264", data)], inside

    def finish(self, video: list[Region]) -> list[Region]:
        """:meth:`step`'s regions with the prefetched picture's bytes in: the caller encodes
        the capture's tiles between the two, while x264 may still be working."""
        data = self._prefetched()
        if data is None:
            return video
        return [replace(r, data=data) if r.enc == "h264" and not r.data else r for r in video]

    def _candidate(self, img: BGRA, hot: Mask, w: int, h: int) -> Box | None:
        if not hot.any() or (self.mode == "auto" and np.count_nonzero(hot) < MIN_TILES_AUTO):
            return None  # (no group of hot tiles can be big enough: typing's few)
        if self.mode != "auto":
            rows, cols = np.nonzero(hot)
            return _box(int(cols.min()), int(cols.max()) + 1, int(rows.min()),
                        int(rows.max()) + 1, w, h, self.tile)
        best: Box | None = None
        best_n = 0
        for n, (c0, c1, r0, r1) in groups(hot):
            if n >= MIN_TILES_AUTO and n > best_n and n >= (c1 - c0) * (r1 - r0) / 2:
                best, best_n = _box(c0, c1, r0, r1, w, h, self.tile), n
        if best is None or (self.area is not None and _within(best, self.area)):
            return best
        now = time.monotonic()
        if now - self._rejected.get(best, -RECHECK_AFTER) < RECHECK_AFTER:
            return None
        region = self.tiles(best, hot.shape) & hot
        counts = tile_colours(img, region, self.tile, cap=self.preset.lossless_colours + 1)
        if (counts > self.preset.lossless_colours).sum() * 2 < len(counts):
            self._rejected = {b: t for b, t in self._rejected.items()
                              if now - t < RECHECK_AFTER}
            self._rejected[best] = now  # few colours: text, UI: tiles keep it sharp
            return None
        return best


def around(prev: BGRA, img: BGRA, box: Box, area: Box, shape: tuple[int, ...],
           tile: int) -> Mask:
    """The tiles of ``area`` (``box`` grown to whole tiles: less than a tile on each side)
    where ``prev`` and ``img`` differ outside ``box``: the four strips between them are
    compared, each within one row or column of tiles."""
    out: Mask = np.zeros(shape, np.bool_)
    pw, cw = words(prev), words(img)
    x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
    ax0, ay0, ax1, ay1 = area.x, area.y, area.x + area.w, area.y + area.h
    for ys, row in ((slice(ay0, y0), ay0 // tile), (slice(y1, ay1), (ay1 - 1) // tile)):
        if ys.start < ys.stop:  # above and below: changed columns, on one tile row
            cols = np.flatnonzero((pw[ys, ax0:ax1] != cw[ys, ax0:ax1]).any(axis=0))
            out[row, np.unique((cols + ax0) // tile)] = True
    for xs, col in ((slice(ax0, x0), ax0 // tile), (slice(x1, ax1), (ax1 - 1) // tile)):
        if xs.start < xs.stop:  # left and right: changed rows, on one tile column
            rows = np.flatnonzero((pw[y0:y1, xs] != cw[y0:y1, xs]).any(axis=1))
            out[np.unique((rows + y0) // tile), col] = True
    return out


def fit_motion(prev: BGRA, img: BGRA, box: Box) -> Box:
    """The bounding box of the pixels that differ between ``prev`` and ``img`` inside
    ``box`` (a stream's tiles): the stream then covers the video, not the tiles around it
    (the bench's 1040x600 inside 1088x704: 19 % fewer pixels to encode and decode). ``box``
    when that is less than half of it (little moved in this capture: no telling)."""
    if prev.shape != img.shape:
        return box
    ys, xs = slice(box.y, box.y + box.h), slice(box.x, box.x + box.w)
    diff = words(prev)[ys, xs] != words(img)[ys, xs]
    rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
    if not len(rows):
        return box
    fit = Box(box.x + int(cols[0]), box.y + int(rows[0]), int(cols[-1] - cols[0]) + 1,
              int(rows[-1] - rows[0]) + 1)
    return fit if 2 * fit.area >= box.area else box


def _box(c0: int, c1: int, r0: int, r1: int, w: int, h: int, tile: int) -> Box:
    x, y = c0 * tile, r0 * tile
    return Box(x, y, min(c1 * tile, w) - x, min(r1 * tile, h) - y)


def _within(a: Box, b: Box) -> bool:
    return b.x <= a.x and b.y <= a.y and a.x + a.w <= b.x + b.w and a.y + a.h <= b.y + b.h


def _overlap(a: Box, b: Box) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def _union(a: Box, b: Box) -> Box:
    x, y = min(a.x, b.x), min(a.y, b.y)
    return Box(x, y, max(a.x + a.w, b.x + b.w) - x, max(a.y + a.h, b.y + b.h) - y)
