"""Rate limits: token buckets, and what a peer pays for what it sends."""

from __future__ import annotations

from chatscreen.protocol import Message


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, n: float, now: float) -> float:
        """Take n tokens if there are; return 0.0, or the seconds until there will be."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate

    def spend(self, n: float, now: float) -> float:
        """Take n tokens even into debt; return the seconds until the debt is paid."""
        self._refill(now)
        self.tokens -= n
        return max(0.0, -self.tokens / self.rate)

    def refund(self, n: float) -> None:
        """Give back n tokens taken for something that another budget pays for."""
        self.tokens = min(self.burst, self.tokens + n)

    def fuller_than(self, fraction: float, now: float) -> bool:
        self._refill(now)
        return self.tokens >= fraction * self.burst


class KeyedBuckets:
    """One token bucket per key (``ip:ADDRESS``, ``user:NAME``), shared by every connection
    of that address or account; made on first use. A bucket that has filled up again is the
    same as a new one: :meth:`prune` forgets those, so their number is that of the keys
    active lately, not of every key ever seen."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, keys: list[str], now: float) -> float:
        """Take a token from every bucket of ``keys`` if each has one; else take none and
        return the seconds until each will."""
        buckets = [self._buckets.get(k) or self._buckets.setdefault(
            k, TokenBucket(self.rate, self.burst, now)) for k in keys]
        wait = 0.0
        for bucket in buckets:
            bucket._refill(now)
            if bucket.tokens < 1:
                wait = max(wait, (1 - bucket.tokens) / bucket.rate)
        if wait == 0.0:
            for bucket in buckets:
                bucket.tokens -= 1
        return wait

    def prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.fuller_than(1.0, now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


#: Chat requests that count against a user's message rate.
RATED = frozenset({"say", "pm", "typing", "join", "create", "leave", "history", "who", "rooms",
                   "read", "invite", "decline", "delete"})
#: Screen requests that count against a connection's frame rate.
SCREEN_RATED = frozenset({"frame", "cursor", "share", "unshare", "watch", "unwatch",
                          "upload", "chunk", "cancel", "download", "file_info"})
#: A chunk this large or larger is free of the frame rate (its bytes pay the upload budget);
#: a smaller one counts as a frame, so that tiny chunks cannot make the server work per byte.
FREE_CHUNK = 64 << 10
#: A frame counts as one more for every this many rects it holds, and for every this many
#: tiles they touch (``tiles``, see schema.rect_tiles): the relay's work (parsing, storing)
#: goes by rects (about 4 us each) and tiles (about 0.3 us), and the reference sharer merges
#: changed tiles into few rects. So one connection's frames take at most about 5 % of the
#: event loop, and a 4K screen changing whole at 30 frames/s (both quality layers) is not held.
RECTS_PER_FRAME = 8
TILES_PER_FRAME = 1024

#: Invalid requests (refused with a non-fatal error) a peer may send: this many at once, then
#: this many a second; past that it is cut off (it is broken, or probing).
REFUSALS_BURST = 20
REFUSALS_RATE = 1.0


def screen_cost(msg: Message) -> int:
    """What a screen request takes from its connection's frame rate."""
    if msg.type == "chunk":
        return 0 if len(msg.payload) >= FREE_CHUNK else 1
    if msg.type != "frame":
        return 1
    tiles: int = msg["tiles"]
    return 1 + len(msg["rects"]) // RECTS_PER_FRAME + tiles // TILES_PER_FRAME
