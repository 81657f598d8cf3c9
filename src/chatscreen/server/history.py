"""History in frames: a catch-up (``join`` with ``after``) or a ``history`` answer is cut into
frames of about HISTORY_FRAME bytes, and the messages a room publishes while a join's history
is being read are kept (:class:`Gap`) until the last frame went out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatscreen.server.storage import StoredMessage

if TYPE_CHECKING:
    from chatscreen.server.peer import Peer

HISTORY_PAGE = 500  # messages per storage query when catching up
# A history frame holds messages of about this many bytes (wire_size), at least one: a frame
# stays within max_frame (1 MiB) and a reply never counts against a client's slow_limit.
HISTORY_FRAME = 256 << 10


def wire_size(m: StoredMessage) -> int:
    """About the bytes ``m`` takes in a frame, at most 2x under: the header is ASCII JSON, so
    a non-ASCII character is 6 bytes (12 past the BMP), and newline, tab, quote and backslash
    are 2."""
    text = m.text
    return 128 + (len(text) if text.isascii() else 6 * len(text))


def frames_of(rows: list[StoredMessage]) -> list[list[StoredMessage]]:
    """``rows`` in runs of about HISTORY_FRAME bytes, one history frame each (at least one,
    maybe empty)."""
    out: list[list[StoredMessage]] = [[]]
    size = 0
    for m in rows:
        n = wire_size(m)
        if size + n > HISTORY_FRAME and out[-1]:
            out.append([])
            size = 0
        out[-1].append(m)
        size += n
    return out


def fit(rows: list[StoredMessage], *, newest: bool) -> tuple[list[StoredMessage], bool]:
    """The newest (else the oldest) of ``rows`` that fit in one history frame, and whether
    some were left out."""
    frames = frames_of(rows[::-1] if newest else rows)
    if len(frames) == 1:
        return rows, False
    return (frames[0][::-1] if newest else frames[0]), True


@dataclass
class Gap:
    """The messages published to a room while one join of it is under way (see
    ChatService.join_room): (id, frame). They count against the joiner's slow_limit, so that
    one who catches up more slowly than the room writes is cut off as if it were subscribed."""

    peer: Peer
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    size: int = 0

    def add(self, published: list[tuple[int, bytes]], size: int) -> None:
        self.frames += published
        self.size += size
        self.peer.check_slow(self.size)

    def drop_through(self, last: int) -> None:
        """Forget those with ids up to ``last`` (a history query returned them)."""
        self.frames = [x for x in self.frames if x[0] > last]
        self.size = sum(len(frame) for _, frame in self.frames)
