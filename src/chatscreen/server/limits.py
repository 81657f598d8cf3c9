"""Rate limits: token buckets, and what a peer pays for what it sends."""

from __future__ import annotations


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

    def fuller_than(self, fraction: float, now: float) -> bool:
        self._refill(now)
        return self.tokens >= fraction * self.burst


#: Chat requests that count against a user's message rate.
RATED = frozenset({"say", "pm", "typing", "join", "create", "leave", "history", "who", "rooms"})

#: Invalid requests (refused with a non-fatal error) a peer may send: this many at once, then
#: this many a second; past that it is cut off (it is broken, or probing).
REFUSALS_BURST = 20
REFUSALS_RATE = 1.0
