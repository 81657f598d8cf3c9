"""Helpers for logins and moderation: the failed-login guard (and, from
:mod:`chatscreen.durations`, durations)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chatscreen.durations import format_duration as format_duration
from chatscreen.durations import parse_duration as parse_duration

FORGET_AFTER = 15 * 60.0  # seconds without a failure after which a key starts afresh


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class LoginGuard:
    """Failed logins, per key ("ip:1.2.3.4", "user:alice"): the n-th failure in a row makes
    the key wait ``first * 2**(n-1)`` seconds (at most ``cap``) before its next attempt is
    looked at, and its own answer is delayed as long. Other keys are unaffected."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self._keys: dict[str, _Failures] = {}

    def wait(self, keys: list[str], now: float) -> float:
        """Seconds until an attempt on these keys may be checked."""
        until = max((f.blocked_until for k in keys if (f := self._keys.get(k))), default=0.0)
        return max(0.0, until - now)

    def reserve(self, keys: list[str], now: float) -> None:
        """An attempt is being checked: concurrent attempts on the same keys wait for it."""
        for k in keys:
            f = self._keys.get(k)
            if f is not None and f.count:
                f.blocked_until = max(f.blocked_until, now + self._delay(f.count))

    def failed(self, keys: list[str], now: float) -> float:
        """Record a failure; returns how long to delay its answer."""
        delay = 0.0
        for k in keys:
            f = self._keys.setdefault(k, _Failures())
            if now - f.last > FORGET_AFTER:
                f.count = 0
            f.count += 1
            f.last = now
            delay = max(delay, self._delay(f.count))
        for k in keys:
            self._keys[k].blocked_until = now + delay
        self._prune(now)
        return delay

    def succeeded(self, reset: Sequence[str], release: Sequence[str] = ()) -> None:
        """A login passed: forget the failures of ``reset``; let ``release`` (the address:
        shared with others) go on at once, but keep counting its failures."""
        for k in reset:
            self._keys.pop(k, None)
        for k in release:
            f = self._keys.get(k)
            if f is not None:
                f.blocked_until = 0.0

    def _delay(self, count: int) -> float:
        return float(min(self.cap, self.first * 2 ** min(count - 1, 30)))

    def _prune(self, now: float) -> None:
        if len(self._keys) > 10_000:
            for k in [k for k, f in self._keys.items() if now - f.last > FORGET_AFTER]:
                del self._keys[k]
