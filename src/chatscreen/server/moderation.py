"""Helpers for logins and moderation: who a ban binds, the failed-login guard (durations are
in :mod:`chatscreen.durations`, for clients too)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from chatscreen.durations import format_duration as format_duration
from chatscreen.durations import parse_duration as parse_duration
from chatscreen.server.accounts import RANK


def is_local(ip: str) -> bool:
    """Is this address the server machine's own (127.0.0.0/8, ::1, or one mapped to them)?"""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def outranks(role: str | None, by_role: str) -> bool:
    """May a user of ``role`` (None: a guest) not be acted on by one of ``by_role``? An
    admin may act on anyone; anyone else only on lower ranks."""
    return by_role != "admin" and RANK[role or "guest"] >= RANK.get(by_role, RANK["admin"])


def ban_binds(by_role: str, role: str | None, ip: str, *, address: bool) -> bool:
    """Does a ban placed by a ``by_role`` bind a user of ``role`` connecting from ``ip``?
    Not one who outranks whoever placed it; and an address ban never refuses an admin on
    the server machine itself (the way back in when an admin's address was banned)."""
    if address and role == "admin" and is_local(ip):
        return False
    return not outranks(role, by_role)


FORGET_AFTER = 15 * 60.0  # seconds without a failure after which a key starts afresh


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class LoginGuard:
    """Failed logins, per key ("ip:1.2.3.4", "user:alice@1.2.3.4"): the n-th failure in a row makes
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


class CheckQueue:
    """One password check at a time per account: parallel guesses on an account are
    checked one after another (each, with LoginGuard, after the delay the failures before
    it earned), never all at once."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> lock, users of it

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
