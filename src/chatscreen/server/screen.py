"""The screen relay: shares, viewers and newest-wins fan-out, VNC-style.

A sharer's frame is validated and cut into its rectangles ("pieces"), kept as the bytes the
sharer sent; the relay never decodes a picture. Per share, a :class:`TileStore` keeps the
**newest piece of every 64x64 tile** of the screen: a piece that fully covers a tile replaces
what the tile held, one that covers it in part replaces there the pieces it draws over
entirely (the previous picture of an ``h264`` stream not aligned on tiles), and a piece no
tile needs any more is dropped. Pieces are numbered in
arrival order, so the store's live pieces, applied in that order, give the current picture.

Per viewer, the relay remembers only the number of the last piece it sent (``sent``): the
viewer's dirty tiles are those whose pieces are newer. When the viewer's connection can take
more (at once, or when it drains after ``pause_writing``), it gets one frame with the live
pieces newer than ``sent``, oldest first: the newest version of every dirty region, never a
backlog (a long catch-up goes in frames of about ``FRAME_BYTES``, the next ones only when its
connection drains again). A viewer who starts watching has ``sent = 0`` and so gets the
current picture of every region at once, as a key frame. Nothing here ever waits for a
viewer; the sharer is asked for a key frame (``need_key``) only when the relay has no picture
to apply a delta to.

A ``copy`` piece (a scroll: "copy this rectangle from there", no pixels) reads pixels the
viewer must already have. So that replaying the live pieces in order still gives the current
picture, the copy **pins** the pieces that made up its source when it arrived (they stay live,
with their ids, until the copy itself is dropped), and those may be copies pinning their own
sources. A chain of copies deeper than ``MAX_COPY_DEPTH`` makes the relay ask for a key frame,
which starts a new store; past ``HARD_COPY_DEPTH`` (a sharer that ignores ``need_key``) it
drops the picture until that key frame comes.

**Quality layers (simulcast).** A sharer that announced ``layers: 2`` can be asked
(``low_layer``) to send its lossy pieces (``jpeg``, ``h264``) a second time at a lower quality,
marked ``layer: "low"`` (its full-quality ones then ``layer: "full"``). The share then keeps a
second store, ``low``: the same common pieces (same ids, same bytes), the low pieces instead
of the full ones. Each viewer has a :class:`Seat`: its layer, what it was sent from that
layer's store, and a :class:`~chatscreen.server.adapt.LinkMeter` that decides, from how many
arrivals newest wins had to merge and how fast its connection drains, when it moves to the
low layer and back. A viewer who changes layer gets one frame from the other store with the
pieces of every tile where the two differ (:meth:`TileStore.switch_from`: each ``h264`` chain
among them from its IDR, what copies among them read), so it ends on that layer's complete,
current picture without the whole screen again; the relay asks for the low layer when
the first viewer needs it (starting the low store as a copy of the full one) and stops it
when nobody has needed it for a while. At most one extra layer: the sharer's work does not
grow with the number of viewers.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatscreen.errors import ErrorCode, RemoteProtocolError, RequestError
from chatscreen.protocol import Message, binform, encode_frame
from chatscreen.protocol.annexb import is_idr
from chatscreen.protocol.deflate import DEFLATE_VERSION, LOSSLESS
from chatscreen.protocol.schema import MAX_RECTS, max_frame_tiles
from chatscreen.server.adapt import (
    FULL,
    LINGER,
    LOW,
    RATE_INTERVAL,
    LinkMeter,
    Rate,
    backlog,
    low_rate,
)
from chatscreen.server.files import FILE_REQUESTS
from chatscreen.server.limits import TokenBucket
from chatscreen.server.metrics import Counters

if TYPE_CHECKING:
    from chatscreen.server.chat import ChatService
    from chatscreen.server.files import FileService
    from chatscreen.server.peer import Peer
    from chatscreen.server.session import Guest, Session

log = logging.getLogger("chatscreen.screen")

TILE = 64  # the relay's tile grid (the reference sharer's tiles are the same size)
MAX_PARTIAL = 32  # pieces only partly covering one tile before the relay asks for a key frame
MAX_COPY_DEPTH = 150  # copies reading from copies (5 s of scrolling at 30/s) before it asks
#                       for a key frame, so that a late viewer's catch-up stays short
HARD_COPY_DEPTH = 4 * MAX_COPY_DEPTH  # a sharer ignoring need_key: the picture is dropped
HARD_PARTIAL = 2 * MAX_PARTIAL  # ... and so past this many partial pieces on one tile (each
#                                 piece added scans those of its tiles: bounded work)
NEED_KEY_INTERVAL = 0.5  # seconds between key frame requests to one sharer
NEED_IDR_INTERVAL = 1.0  # seconds between h264 IDR requests to one sharer
CHAIN_IDR_AFTER = 60  # h264 pictures since the last IDR before the relay asks for a new one
CHAIN_IDR_BYTES = 2 << 20  # ... or this many bytes
CHAIN_MAX = 1800  # a stream whose chain grows past this (need_idr ignored) is forgotten
CHAIN_MAX_BYTES = 32 << 20
# A share's memory bound, by the area of its picture whatever is sent: this many bytes a pixel
# (both quality layers of an uncompressed picture, counted apart even where they share bytes)
# plus SLACK_BYTES (h264 chains, pinned copies, pieces smaller than their objects). Past it
# the sharer is cut off (share_over_budget) and the share's pictures freed at once.
BYTES_PER_PIXEL = 8
SLACK_BYTES = 16 << 20
PIECE_OVERHEAD = 512  # bytes a piece costs beside its data: its objects and entries
MAX_SHARE_PIXELS = 7680 * 4320  # 8K; the server's max_share_pixels
MAX_MEMORY = 1 << 30  # all shares' pictures together; the server's max_screen_memory
FRAME_BYTES = 8 << 20  # a catch-up frame the relay sends holds about this many bytes at most:
#                       a viewer whose connection is full gets the rest when it drains
# Deflated frames (protocol.deflate): a binary frame whose rects are all of these lossless,
# not yet compressed encodings, and at most DEFLATE_MAX bytes, is deflated per viewer that
# agreed on it, at the last step (its compressor's context is the viewer's own); the others
# (jpeg, png, webp, h264, zlib: compressed already) go as they are, encoded once for all.
# DEFLATE_MAX bounds the event loop's work per viewer and frame: ~0.5 ms for 8 KiB of noisy
# two-colour pixels (the worst seen), 3-50 us for a typed character's frame (bench_deflate).
# DEFLATE_RATE bounds it per second: each viewer connection may have that many bytes a second
# deflated (saved up to DEFLATE_BURST); past it frames go as they are (the protocol lets
# them mix), so a sharer sending noise cannot make the relay deflate for every viewer at
# ~40 us a KiB (typing needs ~6 kB/s a viewer, a whole tile ~1.5 kB).
DEFLATABLE = LOSSLESS
DEFLATE_MAX = 8 << 10
DEFLATE_RATE = 64 << 10
DEFLATE_BURST = 64 << 10
KEY_DEADLINE = 2.0  # s after need_key: a sharer still sending deltas only, ...
KEY_DEADLINE_FRAMES = 8  # ... this many since, is cut off (need_key_ignored)


#: An encoded frame for viewers: its bytes, the id of its last piece, and whether it may be
#: deflated (binary, DEFLATABLE rects only, at most DEFLATE_MAX bytes)
Out = tuple[bytes, int, bool]


@dataclass(eq=False, slots=True)
class Piece:
    """One rectangle of a sharer's frame: where it goes, and its encoded bytes."""

    id: int
    seq: int
    rect: dict[str, Any]  # {"x","y","w","h","enc","len"}, as relayed
    data: bytes
    refs: int = 0  # tiles that need it, and copies that read from it (pins)
    deps: tuple[Piece, ...] = ()  # a copy: the pieces it reads from, pinned while it lives
    depth: int = 0  # a copy: 1 + the deepest copy among its deps (the chain's length)
    pure: bool = True  # the same in every quality layer (not a layer's own, nor reading one)
    cost: int = 0  # bytes it counts for in its store's ``bytes`` while it is live
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 (set when it is added)
    head: bytes | None = None  # its rect in the binary form, once a binary viewer needed it


class TileStore:
    """The newest piece of every tile of one share's screen."""

    def __init__(self, w: int, h: int, first_id: int, tile: int = TILE) -> None:
        self.w, self.h, self.tile = w, h, tile
        self.cols = -(-w // tile)
        rows = -(-h // tile)
        self.owner: list[Piece | None] = [None] * (rows * self.cols)  # newest full cover
        self.partial: list[list[Piece]] = [[] for _ in range(rows * self.cols)]  # newer, partial
        self.live: dict[int, Piece] = {}  # id -> piece, in id order
        self.key_id = first_id  # pieces before this one are not part of the picture
        self.overflow = False  # too many partial pieces on one tile: a key frame would help
        self.broken = False  # far too many (HARD_PARTIAL, HARD_COPY_DEPTH): drop the picture
        # h264 streams (by rectangle): their pieces since the stream's last IDR, each held
        # alive by the chain (one extra ref) so that any viewer can decode the newest one
        self.chains: dict[tuple[int, int, int, int], Chain] = {}
        self.max_depth = 0  # the longest chain of copies among the pieces added
        self.bytes = 0  # what the live pieces take, data and objects (Piece.cost)

    @property
    def last_id(self) -> int:
        return next(reversed(self.live)) if self.live else self.key_id - 1

    def clone(self) -> TileStore:
        """A store holding the same picture, made of copies of this one's pieces (same ids,
        same bytes): the start of a share's low layer."""
        new = TileStore(self.w, self.h, self.key_id, self.tile)
        same: dict[int, Piece] = {}
        for pid, p in self.live.items():  # in id order: a copy's deps come before it
            same[pid] = new.live[pid] = Piece(p.id, p.seq, p.rect, p.data, p.refs,
                                               tuple(same[d.id] for d in p.deps), p.depth,
                                               p.pure, p.cost, p.box)
        new.owner = [None if o is None else same[o.id] for o in self.owner]
        new.partial = [[same[p.id] for p in ps] for ps in self.partial]
        new.chains = {k: Chain([same[p.id] for p in c.pieces], c.bytes)
                      for k, c in self.chains.items()}
        new.max_depth = self.max_depth
        new.bytes = self.bytes
        return new

    def _release(self, piece: Piece) -> None:
        stack = [piece]
        while stack:  # a copy dropped unpins what it read from, and so on down its chain
            p = stack.pop()
            p.refs -= 1
            if p.refs == 0:
                del self.live[p.id]
                self.bytes -= p.cost
                stack.extend(p.deps)

    def _pin_sources(self, piece: Piece) -> None:
        """A copy reads pixels the viewers already have: keep alive (pin) every piece that
        makes up its source as it is now, so that whoever replays the live pieces in order
        (a viewer joining late, or catching up) has them when it applies the copy."""
        r, t = piece.rect, self.tile
        sx, sy = int.from_bytes(piece.data[:4], "big"), int.from_bytes(piece.data[4:8], "big")
        deps: dict[int, Piece] = {}
        for row in range(sy // t, (sy + r["h"] - 1) // t + 1):
            for col in range(sx // t, (sx + r["w"] - 1) // t + 1):
                i = row * self.cols + col
                owner = self.owner[i]
                if owner is not None:
                    deps[owner.id] = owner
                for p in self.partial[i]:
                    deps[p.id] = p
        piece.deps = tuple(deps.values())
        piece.pure = piece.pure and all(p.pure for p in piece.deps)
        for p in piece.deps:
            p.refs += 1
        piece.depth = 1 + max((p.depth for p in piece.deps), default=0)
        self.max_depth = max(self.max_depth, piece.depth)
        if piece.depth > MAX_COPY_DEPTH:
            self.overflow = True  # a key frame ends the chain
            self.broken = piece.depth > HARD_COPY_DEPTH

    def add(self, piece: Piece) -> None:
        r, t = piece.rect, self.tile
        x0, y0, x1, y1 = piece.box = r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]
        if r["enc"] == "copy":
            self._pin_sources(piece)
        tiles = ((x1 - 1) // t - x0 // t + 1) * ((y1 - 1) // t - y0 // t + 1)
        piece.cost = len(piece.data) + PIECE_OVERHEAD + 8 * (tiles + len(piece.deps))
        self.bytes += piece.cost
        self.live[piece.id] = piece
        for row in range(y0 // t, (y1 - 1) // t + 1):
            ty0, ty1 = row * t, min((row + 1) * t, self.h)
            full_rows = y0 <= ty0 and y1 >= ty1
            for col in range(x0 // t, (x1 - 1) // t + 1):
                i = row * self.cols + col
                piece.refs += 1
                if full_rows and x0 <= col * t and x1 >= min((col + 1) * t, self.w):
                    old = self.owner[i]
                    self.owner[i] = piece
                    if old is not None:
                        old.refs -= 1  # (the common case inline: a frame may cover 8160)
                        if old.refs == 0:
                            old.refs = 1
                            self._release(old)
                    parts = self.partial[i]
                    if parts:
                        self.partial[i] = []
                        for p in parts:
                            self._release(p)
                else:
                    parts = self.partial[i]
                    if parts:  # what this piece draws over entirely is no longer needed
                        gone = [p for p in parts if x0 <= (b := p.box)[0] and y0 <= b[1]
                                and b[2] <= x1 and b[3] <= y1]
                        if gone:
                            self.partial[i] = parts = [p for p in parts if p not in gone]
                            for p in gone:
                                self._release(p)
                    parts.append(piece)
                    if len(parts) > MAX_PARTIAL:
                        self.overflow = True
                        self.broken = self.broken or len(parts) > HARD_PARTIAL
        if piece.refs == 0:  # cannot happen for a rect inside the screen; be safe
            piece.refs = 1
            self._release(piece)

    def add_h264(self, piece: Piece) -> bool:
        """Add an ``h264`` piece; True when the sharer should be asked for an IDR (the chain
        since the last one is long, or this P-frame has none the relay knows of)."""
        r = piece.rect
        key = (r["x"], r["y"], r["w"], r["h"])
        self.add(piece)
        chain = self.chains.get(key)
        if is_idr(piece.data):
            if chain is not None:
                self._drop_chain(key)
            chain = self.chains[key] = Chain()
        elif chain is None:
            return True  # a P-frame nobody joining now could decode
        chain.pieces.append(piece)
        chain.bytes += len(piece.data)
        piece.refs += 1
        if len(chain.pieces) > CHAIN_MAX or chain.bytes > CHAIN_MAX_BYTES:
            self._drop_chain(key)  # the sharer ignores need_idr: bound the memory
            return True
        return len(chain.pieces) > CHAIN_IDR_AFTER or chain.bytes > CHAIN_IDR_BYTES

    def _drop_chain(self, key: tuple[int, int, int, int]) -> None:
        for p in self.chains.pop(key).pieces:
            self._release(p)

    def forget_hidden_chains(self, piece: Piece) -> None:
        """After a non-h264 ``piece``: drop the chains of streams that it and newer pieces
        now hide entirely (every tile of the stream owned by a piece newer than its last
        picture), e.g. the lossless refresh after the motion stopped."""
        r, t = piece.rect, self.tile
        for key, chain in list(self.chains.items()):
            x, y, w, h = key
            if not (r["x"] < x + w and x < r["x"] + r["w"] and r["y"] < y + h
                    and y < r["y"] + r["h"]):
                continue
            last = chain.pieces[-1].id
            if all((o := self.owner[row * self.cols + col]) is not None and o.id > last
                   for row in range(y // t, (y + h - 1) // t + 1)
                   for col in range(x // t, (x + w - 1) // t + 1)):
                self._drop_chain(key)

    def _tiles(self, r: dict[str, Any]) -> Iterator[int]:
        t = self.tile
        for row in range(r["y"] // t, (r["y"] + r["h"] - 1) // t + 1):
            for col in range(r["x"] // t, (r["x"] + r["w"] - 1) // t + 1):
                yield row * self.cols + col

    def switch_from(self, other: TileStore, sent: int) -> list[Piece]:
        """The pieces, oldest first, that bring a viewer who got ``other``'s pieces up to
        ``sent`` (the other quality layer of the same share) to this store's current
        picture, without what it already has: replaying them gives what a key frame would.

        A tile is **clean** when both stores' newest full cover of it is the same piece,
        pure (no layer's own pixels in it), already sent, with nothing partial on top in
        either: the viewer shows exactly this store's pixels there. The pieces that make up
        every other tile (its full cover and what lies on top) are replayed, in id order, with
        what replaying them needs: the sources a replayed copy reads (its deps), the whole
        chain of a replayed h264 picture (from its IDR: the viewer's decoder of that stream
        holds the other layer's pictures), and, where a replayed piece draws over a clean
        tile, that tile's newer pieces again."""
        clean = [mine is not None and theirs is not None and mine.id == theirs.id
                 and mine.id <= sent and mine.pure and theirs.pure
                 and not self.partial[i] and not other.partial[i]
                 for i, (mine, theirs) in enumerate(zip(self.owner, other.owner, strict=True))]
        stack: list[Piece] = []
        for i, is_clean in enumerate(clean):
            if not is_clean:
                owner = self.owner[i]
                if owner is not None:
                    stack.append(owner)
                stack.extend(self.partial[i])
        want: dict[int, Piece] = {}
        while stack:
            p = stack.pop()
            if p.id in want:
                continue
            want[p.id] = p
            stack.extend(p.deps)
            r = p.rect
            if r["enc"] == "h264":
                chain = self.chains.get((r["x"], r["y"], r["w"], r["h"]))
                if chain is not None and p in chain.pieces:
                    stack.extend(chain.pieces)
            for i in self._tiles(r):
                owner = self.owner[i]
                if owner is not None and owner.id > p.id:
                    stack.append(owner)
                stack.extend(q for q in self.partial[i] if q.id > p.id)
        return [want[k] for k in sorted(want)]

    def newer_than(self, sent: int) -> list[Piece]:
        """The live pieces after ``sent``, oldest first."""
        out: list[Piece] = []
        for pid in reversed(self.live):
            if pid <= sent:
                break
            out.append(self.live[pid])
        out.reverse()
        return out


@dataclass(eq=False, slots=True)
class Chain:
    """An h264 stream's pieces since its last IDR, oldest first."""

    pieces: list[Piece] = field(default_factory=list)
    bytes: int = 0


@dataclass(eq=False, slots=True)
class Seat:
    """One viewer of a share: its layer, the last piece it was sent from that layer's store,
    and what its link carries."""

    link: LinkMeter
    sent: int = 0
    came_from: int | None = None  # moved from this layer; ``sent`` is still that layer's

    @property
    def layer(self) -> int:
        return self.link.layer


@dataclass(eq=False)
class Share:
    id: int
    sharer: Peer
    w: int
    h: int
    store: TileStore | None = None  # None until the first key frame
    viewers: dict[Peer, Seat] = field(default_factory=dict)
    allowed: frozenset[str] | None = None  # casefolded names who may watch (None: anyone)
    bound: dict[str, Guest] = field(default_factory=dict)  # a guest's name: that guest
    room: str | None = None  # only members of this room may watch
    frames_in: int = 0
    last_need_key: float = 0.0
    last_need_idr: float = 0.0
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # encoded catch-up frames (and the last piece in each) by the "sent" they start from,
    # the layer and the form (binary or not); valid until the next frame in; at most
    # ``budget`` bytes of them
    cache: dict[tuple[int, int, bool], list[Out]] = field(default_factory=dict)
    cached: int = 0  # bytes in the cache
    cursor: PointerState = field(default_factory=lambda: PointerState())
    layers: int = 1  # quality layers the sharer can send (2: it can send a low layer)
    low: TileStore | None = None  # the low layer's picture, while the sharer sends it
    low_on: bool = False  # the sharer was asked for the low layer
    low_rate: int | None = None  # the byte rate asked of it
    low_used: float = 0.0  # when a viewer was last on the low layer
    rate_asked: float = 0.0  # when the rate was last asked
    full_rate: Rate = field(default_factory=Rate)  # bytes/s into the full layer
    key_asked: float | None = None  # when need_key was sent, unanswered so far
    deltas_since_ask: int = 0  # delta frames since then

    @property
    def budget(self) -> int:
        """The most its pictures may take (both layers): by area, whatever is sent."""
        return BYTES_PER_PIXEL * self.w * self.h + SLACK_BYTES

    @property
    def stored(self) -> int:
        """What its pictures take now (both layers' live pieces)."""
        return ((self.store.bytes if self.store is not None else 0)
                + (self.low.bytes if self.low is not None else 0))

    @property
    def user(self) -> str:
        assert self.sharer.session is not None
        return self.sharer.session.name

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "user": self.user, "w": self.w, "h": self.h}
        if self.room is not None:  # (listed to its members only: it tells nobody else)
            out["room"] = self.room
        return out

    def admits(self, session: Session[Peer]) -> bool:
        """Is ``session`` among those the share is for (``allowed``)? An account by its name;
        a name held by a guest stands for the first guest seen holding it while the share
        runs (at the share request, when it logs in or asks to watch), and the account it
        registered: another guest taking the name later is someone else."""
        if self.allowed is None:
            return True
        if session.key not in self.allowed:
            return False
        bound = self.bound.get(session.key)
        if bound is None and session.role is None and session.guest is not None:
            bound = self.bound[session.key] = session.guest
        return (bound is None or bound is session.guest
                or (bound.registered and session.role is not None))

    def layer_store(self, layer: int) -> TileStore | None:
        return self.low if layer == LOW else self.store

    def clear_cache(self) -> None:
        self.cache.clear()
        self.cached = 0

    def catch_up(self, sent: int, layer: int = FULL,
                 binary: bool = False) -> tuple[list[Out], int]:
        """The frames (each with the id of the last piece in it) that bring a viewer of
        ``layer`` who has everything up to piece ``sent`` to the current picture, and the id
        of the newest piece in them; in the binary form if ``binary``."""
        store = self.layer_store(layer)
        if store is None or store.last_id <= sent:
            return [], sent
        cache_key = (sent, layer, binary)
        frames = self.cache.get(cache_key)
        if frames is None:
            frames = self._encode(store, store.newer_than(sent), sent < store.key_id, binary)
            size = sum(len(data) for data, _, _ in frames)
            if self.cached + size <= self.budget:  # viewers at many points: bounded
                self.cache[cache_key] = frames
                self.cached += size
        return frames, store.last_id

    def switch(self, seat: Seat, binary: bool = False) -> tuple[list[Out], int]:
        """A viewer that changed layer: the frames that bring it from what it has of the old
        layer to the current picture of the new one (only where they differ), and the id of
        the newest piece of the new one; a key frame if there is no telling."""
        came_from, seat.came_from = seat.came_from, None
        old, new = self.layer_store(came_from or FULL), self.layer_store(seat.layer)
        if came_from == seat.layer:  # back before it was told: nothing to undo
            return self.catch_up(seat.sent, seat.layer, binary)
        if new is None:
            return [], 0
        if old is None or seat.sent < old.key_id or seat.sent < new.key_id:
            return self.catch_up(0, seat.layer, binary)
        pieces = new.switch_from(old, seat.sent)
        return (self._encode(new, pieces, False, binary) if pieces else []), new.last_id

    def _encode(self, store: TileStore, pieces: list[Piece], key: bool,
                binary: bool) -> list[Out]:
        """The pieces as frames of at most MAX_RECTS rects and about FRAME_BYTES bytes, the
        first one a key frame if ``key``; each with the id of its last piece.

        In the binary form a frame says its size only when it is a key frame: a viewer's
        first frame of a share is one, and so is the first after the size changed (a new
        store), so the viewer always has the size of the frames that leave it out."""
        frames = []
        start, size = 0, 0
        for n, p in enumerate(pieces, 1):
            size += len(p.data)
            if n - start == MAX_RECTS or size >= FRAME_BYTES or n == len(pieces):
                chunk = pieces[start:n]
                is_key = start == 0 and key
                deflatable = False
                if binary:
                    data = binform.frame_bytes(
                        chunk[-1].seq, is_key, (store.w, store.h) if is_key else None,
                        [p.head or _head(p) for p in chunk], [p.data for p in chunk], self.id)
                    deflatable = len(data) <= DEFLATE_MAX and all(
                        p.rect["enc"] in DEFLATABLE for p in chunk)
                else:
                    header = {"type": "frame", "share": self.id, "seq": chunk[-1].seq,
                              "w": store.w, "h": store.h, "key": is_key,
                              "rects": [p.rect for p in chunk]}
                    data = encode_frame(header, b"".join(p.data for p in chunk))
                frames.append((data, chunk[-1].id, deflatable))
                start, size = n, 0
        return frames


def _head(piece: Piece) -> bytes:
    """The piece's rect in the binary form, made once (the piece is sent to many viewers)."""
    r = piece.rect
    piece.head = binform.rect_head(r["x"], r["y"], r["w"], r["h"], r["enc"], r["len"])
    return piece.head


@dataclass(eq=False)
class PointerState:
    """A share's mouse pointer, newest wins: its place, its picture, and per viewer which
    versions of them it was sent."""

    x: int = 0
    y: int = 0
    shape: tuple[int, int, bytes] | None = None  # w, h, the picture as the sharer sent it
    moved: int = 0  # version of the place
    drawn: int = 0  # version of the picture
    sent: dict[Peer, tuple[int, int]] = field(default_factory=dict)

    def due(self, share_id: int, viewer: Peer) -> bytes | None:
        """The ``cursor`` message the viewer lacks (the picture only if it changed since
        it was last sent one), or None."""
        if self.shape is None:
            return None
        moved, drawn = self.sent.get(viewer, (0, 0))
        if moved == self.moved and drawn == self.drawn:
            return None
        self.sent[viewer] = (self.moved, self.drawn)
        if drawn == self.drawn and viewer.conn.binary:
            return binform.cursor_bytes(self.x, self.y, share_id)
        header: dict[str, Any] = {"type": "cursor", "share": share_id, "x": self.x,
                                  "y": self.y}
        if drawn == self.drawn:
            return encode_frame(header)
        w, h, data = self.shape
        return encode_frame({**header, "w": w, "h": h}, data)


class ScreenRelay:
    def __init__(self, chat: ChatService, max_pixels: int = MAX_SHARE_PIXELS,
                 max_memory: int = MAX_MEMORY) -> None:
        self.chat = chat
        self.max_pixels = max_pixels  # a share's width x height at most
        self.max_memory = max_memory  # all shares' pictures (Share.stored) at most
        self.released = 0  # bytes of pictures dropped since the server last trimmed its heap
        self.shares: dict[int, Share] = {}
        self._by_sharer: dict[Peer, Share] = {}
        self._watching: dict[Peer, set[Share]] = {}
        self._ids = itertools.count(1)
        self.counters = Counters()
        self.files: FileService | None = None  # file requests go there (server.files)
        chat.audience_changed = self.recheck

    def stored_bytes(self) -> int:
        """What every share's pictures take (O(shares))."""
        return sum(share.stored for share in self.shares.values())

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, peer: Peer, msg: Message) -> None:
        if msg.type == "hello":
            self._hello(peer, msg)
        elif msg.type == "frame":
            self._frame(peer, msg)
        elif msg.type == "share":
            self._share(peer, msg)
        elif msg.type == "cursor":
            self._cursor(peer, msg)
        elif msg.type == "unshare":
            self._unshare(peer)
        elif msg.type == "watch":
            self._watch(peer, msg)
        elif msg.type == "unwatch":
            self._unwatch(peer, msg["share"])
        elif msg.type in FILE_REQUESTS and self.files is not None:
            self.files.handle(peer, msg)
        else:
            raise RemoteProtocolError(ErrorCode.UNEXPECTED, f"{msg.type} is not a screen request")

    def _hello(self, peer: Peer, msg: Message) -> None:
        session = self.chat.tokens.get(msg.get("token") or "")
        if session is None:
            peer.fail(ErrorCode.BAD_TOKEN, "log in on the chat port first and present its token")
            return
        peer.session = session
        session.screens.add(peer)
        binary = {"bin": binform.BIN_VERSION} if msg.get("bin") == binform.BIN_VERSION else {}
        if binary and msg.get("deflate") == DEFLATE_VERSION:
            binary["deflate"] = DEFLATE_VERSION
        peer.accept(user=session.name, token=session.token, room="general",
                    heartbeat=self.chat.heartbeat, **binary,
                    limits={"max_frame": peer.conn.limits.max_frame, **self.chat.file_limits})

    def on_lost(self, peer: Peer) -> None:
        if self.files is not None:
            self.files.on_lost(peer)
        if peer.session is not None:
            peer.session.screens.discard(peer)
        self._unshare(peer, quiet=True)
        for share in self._watching.pop(peer, set()):
            share.viewers.pop(peer, None)
            share.cursor.sent.pop(peer, None)
            if share.id in self.shares:
                self._tell_sharer(share)

    # -- sharing -----------------------------------------------------------------------

    def _share(self, peer: Peer, msg: Message) -> None:
        if peer.session is not None and not self.chat.may_share(peer.session):
            peer.error(ErrorCode.FORBIDDEN, "you may not share your screen on this server",
                       re="share")
            return
        if not self._size_ok(peer, msg, "share"):
            return
        share = self._by_sharer.get(peer)
        if share is None:
            share = Share(next(self._ids), peer, msg["w"], msg["h"])
            self.shares[share.id] = share
            self._by_sharer[peer] = share
            log.info("%s started sharing %dx%d as share %d", share.user, share.w, share.h, share.id)
        else:
            share.w, share.h = msg["w"], msg["h"]
        share.layers = msg.get("layers", 1)
        if share.layers < 2 and share.low_on:  # it can no longer: everybody on full
            self._stop_low(share)
        viewers = msg.get("viewers")
        share.allowed = frozenset(v.casefold() for v in viewers) if viewers is not None else None
        share.bound = {k: g for k, g in share.bound.items() if k in (share.allowed or ())}
        share.room = msg.get("room")
        for viewer in [v for v in share.viewers if not self._may_watch(v, share)]:
            self._show_out(viewer, share)  # no longer among those it shares with
        peer.send("shared", share=share.id)
        self._announce()

    def _size_ok(self, peer: Peer, msg: Message, re: str) -> bool:
        """Is the share size in ``msg`` within max_pixels? If not, refuse the request."""
        w, h = msg["w"], msg["h"]
        if w * h <= self.max_pixels:
            return True
        peer.error(ErrorCode.SHARE_TOO_LARGE, f"{w}x{h} is too large to share here: at most "
                   f"{self.max_pixels} pixels (7680x4320 is {7680 * 4320})", re=re)
        return False

    def _cut_off(self, share: Share, code: ErrorCode, message: str) -> None:
        """Disconnect a misbehaving sharer with a reason; its pictures are freed now."""
        log.warning("%s: share %d cut off: %s", share.sharer, share.id, message)
        self._unshare(share.sharer, quiet=True)
        share.store = share.low = None
        share.clear_cache()
        share.sharer.fail(code, message)

    def _unshare(self, peer: Peer, *, quiet: bool = False) -> None:
        share = self._by_sharer.pop(peer, None)
        if share is None:
            if not quiet:
                peer.error(ErrorCode.NOT_SHARING, "you are not sharing", re="unshare")
            return
        del self.shares[share.id]
        self.released += share.stored
        data = encode_frame({"type": "unshared", "share": share.id})
        for viewer in share.viewers:
            self._watching.get(viewer, set()).discard(share)
            viewer.send_bytes(data)
        log.info("%s stopped sharing (share %d)", share.user, share.id)
        self._announce()

    def _announce(self) -> None:
        shares = [s.describe() for s in self.shares.values()]
        if all(s.allowed is None and s.room is None for s in self.shares.values()):
            self.chat.announce_shares(shares)  # the same list for all: encoded once
        else:
            self.chat.announce_shares(shares, self._visible_to)

    def _visible_to(self, session: Session[Peer]) -> list[dict[str, Any]]:
        """The shares this user may watch: the others are not even listed to them."""
        return [s.describe() for s in self.shares.values() if self._may_see(session, s)]

    def _frame(self, peer: Peer, msg: Message) -> None:
        share = self._by_sharer.get(peer)
        if share is None:
            raise RequestError(ErrorCode.NOT_SHARING, "send share before frames", "frame", {})
        key = msg["key"]
        now = time.monotonic()
        if (msg["w"], msg["h"]) != (share.w, share.h):
            if not key:
                raise RequestError(ErrorCode.BAD_MESSAGE, "a new size needs a key frame", "frame",
                                   {})
            if not self._size_ok(peer, msg, "frame"):
                return
            share.w, share.h = msg["w"], msg["h"]
            self._announce()
        if key:
            share.key_asked = None
        elif share.key_asked is not None:
            share.deltas_since_ask += 1
            if (share.deltas_since_ask > KEY_DEADLINE_FRAMES
                    and now - share.key_asked > KEY_DEADLINE):
                self._cut_off(share, ErrorCode.NEED_KEY_IGNORED, "the server asked for a key "
                              f"frame (need_key) {now - share.key_asked:.1f} s and "
                              f"{share.deltas_since_ask} frames ago")
                return
        if not key and share.store is None:
            self._ask_key(share)  # nothing to apply a delta to
            return
        if key and any(r.enc == "copy" for r in msg["rects"]):
            raise RequestError(ErrorCode.BAD_MESSAGE, "a key frame cannot hold copy rects",
                               "frame", {})
        if msg["tiles"] > (most := max_frame_tiles(share.w, share.h)):
            raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"a frame's rects touch {most} "
                                      f"tiles at most, not {msg['tiles']}: send several frames")
        share.frames_in += 1
        self.counters.screen_frames_in += 1
        self.counters.screen_bytes_in += len(msg.payload)
        if key:
            self.released += share.stored
            share.store = TileStore(share.w, share.h, first_id=0)
            if share.low_on:
                share.low = TileStore(share.w, share.h, first_id=0)
        store = share.store
        assert store is not None
        low = share.low
        payload = memoryview(msg.payload)
        offset = 0
        seq = msg["seq"]
        # what this share's pictures may grow to: its own bound, and what the others leave
        limit = min(share.budget, self.max_memory - (self.stored_bytes() - share.stored))
        added = [False, False]  # pieces added to the full, the low layer
        full_bytes = 0
        for i, r in enumerate(msg["rects"]):
            pid = next(share.ids)
            rect = {"x": r.x, "y": r.y, "w": r.w, "h": r.h, "enc": r.enc, "len": r.len}
            data = bytes(payload[offset : offset + r.len])
            offset += r.len
            if r.layer != "low":  # a piece of both layers, or of the full one only
                full_bytes += r.len
                added[FULL] = True
                self._add(share, store, Piece(pid, seq, rect, data, pure=r.layer is None),
                          key and i == 0)
            if r.layer != "full" and low is not None:  # both layers, or the low one only
                added[LOW] = True
                self._add(share, low, Piece(pid, seq, rect, data, pure=r.layer is None),
                          key and i == 0)
            if store.bytes + (low.bytes if low is not None else 0) > limit:
                self._over_budget(share)
                return
            if store.broken or (low is not None and low.broken):
                self._drop_picture(share)  # bounded work and memory whatever the sharer does
                return
        share.clear_cache()
        share.full_rate.add(now, full_bytes)
        for st in (store, low):
            if st is None:
                continue
            if st.overflow:
                st.overflow = False
                self._ask_key(share)
        for viewer, seat in share.viewers.items():
            if added[seat.layer]:
                seat.link.arrived(now)
            if viewer.writable:
                self._flush(viewer)
        if share.layers >= 2:
            self._adapt(share, now)

    def _over_budget(self, share: Share) -> None:
        if share.stored > share.budget:
            why = (f"your share took more than {share.budget >> 20} MiB of the server's "
                   f"memory, the most a {share.w}x{share.h} picture may: send key frames")
        else:
            why = (f"the server's memory for shared screens ({self.max_memory >> 20} MiB) is "
                   "full")
        self._cut_off(share, ErrorCode.SHARE_OVER_BUDGET, why)

    def _drop_picture(self, share: Share) -> None:
        """Forget the share's picture until the key frame asked for comes."""
        self.released += share.stored
        share.store = share.low = None
        share.clear_cache()
        self._ask_key(share)

    def _add(self, share: Share, store: TileStore, piece: Piece, first: bool) -> None:
        """Add a piece to one layer's store (``first``: the first of a key frame)."""
        if first:
            store.key_id = piece.id
        if piece.rect["enc"] == "h264":
            if store.add_h264(piece):
                self._ask_idr(share)
        else:
            store.add(piece)
            if store.chains:
                store.forget_hidden_chains(piece)

    # -- quality layers ----------------------------------------------------------------

    def _adapt(self, share: Share, now: float) -> None:
        """Move each viewer to the layer its link carries; start, retune or stop the
        sharer's low layer accordingly."""
        full_rate = share.full_rate.per_second(now)
        for viewer, seat in share.viewers.items():
            layer = seat.link.decide(now, full_rate, can_low=True)
            if layer != seat.layer:
                self._switch(share, viewer, seat, layer, now)
        lows = [seat for seat in share.viewers.values() if seat.layer == LOW]
        if lows:
            share.low_used = now
        if not share.low_on:
            return
        if not lows and now - share.low_used >= LINGER:
            self._stop_low(share)
            return
        rate = low_rate([s.link.capacity for s in lows if s.link.capacity is not None],
                        share.low_rate)
        if rate != share.low_rate and now - share.rate_asked >= RATE_INTERVAL:
            share.low_rate, share.rate_asked = rate, now
            share.sharer.send("low_layer", on=True, rate=rate)

    def _switch(self, share: Share, viewer: Peer, seat: Seat, layer: int, now: float) -> None:
        """The viewer gets ``layer`` from now on, starting (when it can take more) with what
        turns its picture into that layer's (:meth:`Share.switch`)."""
        if seat.link.capacity is None and (drain := viewer.pause_drain()) is not None:
            seat.link.drained(*drain)  # paused since before it was judged: its rate so far
        if layer == LOW and not share.low_on:
            self._start_low(share, now, seat.link.capacity)
        log.info("%s: %s's view of share %d goes to the %s layer (link %s kB/s)",
                 viewer, share.user, share.id, "low" if layer == LOW else "full",
                 "?" if seat.link.capacity is None else f"{seat.link.capacity / 1000:.0f}")
        self.counters.screen_layer_switches += 1
        if seat.came_from is None:
            seat.came_from = seat.layer  # what it has: pieces of that layer up to seat.sent
        seat.link.switched(now, layer)
        store = share.layer_store(layer)
        if store is not None and any(len(c.pieces) > 1 for c in store.chains.values()):
            self._ask_idr(share)
        if viewer.writable:
            self._flush(viewer)

    def _start_low(self, share: Share, now: float, capacity: float | None) -> None:
        share.low_on, share.low_used, share.rate_asked = True, now, now
        share.low = share.store.clone() if share.store is not None else None
        share.low_rate = low_rate([capacity] if capacity is not None else [], None)
        share.sharer.send("low_layer", on=True, rate=share.low_rate)

    def _stop_low(self, share: Share) -> None:
        share.low_on, share.low, share.low_rate = False, None, None
        for viewer, seat in share.viewers.items():
            if seat.layer == LOW:
                self._switch(share, viewer, seat, FULL, time.monotonic())
        share.sharer.send("low_layer", on=False)

    def _cursor(self, peer: Peer, msg: Message) -> None:
        share = self._by_sharer.get(peer)
        if share is None:
            raise RequestError(ErrorCode.NOT_SHARING, "send share before cursor", "cursor", {})
        state = share.cursor
        if "w" in msg.fields:
            state.shape = (msg["w"], msg["h"], bytes(msg.payload))
            state.drawn += 1
        state.x, state.y = msg["x"], msg["y"]
        state.moved += 1
        for viewer in share.viewers:
            if viewer.writable:
                self._flush(viewer)

    def _ask_key(self, share: Share) -> None:
        now = time.monotonic()
        if now - share.last_need_key >= NEED_KEY_INTERVAL:
            share.last_need_key = now
            share.sharer.send("need_key")
            if share.key_asked is None:
                share.key_asked, share.deltas_since_ask = now, 0

    def _ask_idr(self, share: Share) -> None:
        """Ask the sharer to restart its h264 streams with an IDR (rate limited): the relay
        keeps every picture since the last IDR, so this only shortens what a joining or
        lagging viewer must decode; nobody waits for it."""
        now = time.monotonic()
        if now - share.last_need_idr >= NEED_IDR_INTERVAL:
            share.last_need_idr = now
            share.sharer.send("need_idr")

    # -- watching ----------------------------------------------------------------------

    def _watch(self, peer: Peer, msg: Message) -> None:
        share = self.shares.get(msg["share"])
        if share is None or not self._may_watch(peer, share):
            # a share one may not watch is one that does not exist: the same answer
            peer.error(ErrorCode.NO_SUCH_SHARE, f"no share {msg['share']}", re="watch")
            return
        if peer not in share.viewers:
            # nothing sent yet: the whole current picture is due, at full quality
            share.viewers[peer] = Seat(LinkMeter(time.monotonic()))
            self._watching.setdefault(peer, set()).add(share)
            self._tell_sharer(share)
            if share.store is not None and any(len(c.pieces) > 1
                                               for c in share.store.chains.values()):
                self._ask_idr(share)  # it decodes the chain meanwhile; a short one is nicer
        if peer.writable:
            self._flush(peer)

    def _may_watch(self, peer: Peer, share: Share) -> bool:
        return peer.session is not None and self._may_see(peer.session, share)

    @staticmethod
    def _may_see(session: Session[Peer], share: Share) -> bool:
        if session is share.sharer.session:
            return True
        if not share.admits(session):
            return False
        return share.room is None or share.room in session.rooms

    def recheck(self, session: Session[Peer]) -> None:
        """The user's right to watch may have changed (they left a room): end at once, as
        if the share had ended, each watch they may no longer keep."""
        for screen in session.screens:
            for share in [s for s in self._watching.get(screen, ()) if
                          not self._may_watch(screen, s)]:
                self._show_out(screen, share)

    def _show_out(self, viewer: Peer, share: Share) -> None:
        """Stop sending the share to this viewer, and tell it the share ended for it."""
        self._unwatch(viewer, share.id)
        viewer.send("unshared", share=share.id)

    def _tell_sharer(self, share: Share) -> None:
        """The sharer sees who is watching, live."""
        users = sorted({v.session.name for v in share.viewers if v.session is not None})
        share.sharer.send("viewers", share=share.id, users=users)

    def _unwatch(self, peer: Peer, share_id: int) -> None:
        share = self.shares.get(share_id)
        if share is not None and share.viewers.pop(peer, None) is not None:
            share.cursor.sent.pop(peer, None)
            self._watching.get(peer, set()).discard(share)
            self._tell_sharer(share)

    def on_writable(self, peer: Peer) -> None:
        if peer.last_drain is not None:  # what the link carried while it was paused
            capacity = None
            for share in self._watching.get(peer, ()):
                link = share.viewers[peer].link
                link.drained(*peer.last_drain)
                capacity = link.capacity
            peer.last_drain = None
            if capacity is not None:  # hold no more than a moment of what the link carries
                peer.limit_backlog(backlog(capacity))
        if peer.writable:  # (what was queued for it may have filled it again)
            self._flush(peer)

    def _flush(self, viewer: Peer) -> None:
        """Send the viewer the newest version of its dirty regions, share by share, while its
        connection takes more; the rest waits for ``resume_writing``, by then newer still."""
        for share in self._watching.get(viewer, ()):
            seat = share.viewers[viewer]
            binary = viewer.conn.binary
            if seat.came_from is not None:  # of the new layer now, even with nothing to send
                frames, last = share.switch(seat, binary)
            else:
                frames, last = share.catch_up(seat.sent, seat.layer, binary)
            if frames:
                seat.link.delivered(time.monotonic())
                deflate = viewer.conn.deflate
                for i, (data, upto, deflatable) in enumerate(frames, 1):
                    # per viewer, in the order sent: its compressor's context is its own
                    viewer.send_bytes(viewer.conn.deflated(data)
                                      if deflate and deflatable and _may_deflate(viewer, data)
                                      else data)
                    if not viewer.writable and i < len(frames):
                        last = upto  # the rest when it drains (by then, maybe newer still)
                        break
            seat.sent = last
            pointer = share.cursor.due(share.id, viewer)
            if pointer is not None:
                viewer.send_bytes(pointer)
            if not viewer.writable:
                return


def _may_deflate(viewer: Peer, data: bytes) -> bool:
    """Whether the viewer's deflate budget (DEFLATE_RATE) has room for ``data``; taken if so."""
    now = time.monotonic()
    budget = viewer.deflate_budget
    if budget is None:
        budget = viewer.deflate_budget = TokenBucket(DEFLATE_RATE, DEFLATE_BURST, now)
    return budget.take(len(data), now) == 0.0
