"""Moderation: a moderator's request answered (:func:`request`) and carried out
(:func:`carry_out`), on the chat service's state through the :class:`Service` interface;
who a ban binds, the failed-login guard
(durations are in :mod:`chatscreen.durations`, for clients too)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chatscreen.durations import format_duration as format_duration
from chatscreen.durations import parse_duration as parse_duration
from chatscreen.errors import ErrorCode
from chatscreen.server.accounts import RANK, ROLES, Account, AccountStore, Ban
from chatscreen.server.rooms import DEFAULT_ROOM, rid_of

if TYPE_CHECKING:
    from chatscreen.protocol import Message
    from chatscreen.server.fanout import Fanout
    from chatscreen.server.peer import Peer
    from chatscreen.server.session import Session

log = logging.getLogger("chatscreen.chat")


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


class Refused(Exception):
    """A moderation request refused: its error code and text, for the moderator."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Service(Protocol):
    """What a moderator's request reads and changes of the chat service (ChatService is one)."""

    @property
    def sessions(self) -> Mapping[str, Session[Peer]]: ...
    @property
    def accounts(self) -> dict[str, Account]: ...
    @property
    def bans(self) -> dict[tuple[str, str], Ban]: ...
    @property
    def account_store(self) -> AccountStore | None: ...
    @property
    def fanout(self) -> Fanout: ...
    def role_of(self, key: str) -> str: ...
    def expel(self, session: Session[Peer], code: ErrorCode, message: str) -> None: ...
    def spawn(self, coro: Any) -> None: ...
    def post_notice(self, room: str, by: str, text: str) -> None: ...


def request(service: Service, session: Session[Peer], msg: Message) -> None:
    """A ``moderate`` request: refused at once to whom may not, carried out off the loop."""
    action = msg["action"]
    rank = RANK[session.role or "guest"]
    if rank < RANK["moderator"] or (action == "role" and session.role != "admin"):
        who = "admins" if action == "role" else "admins and moderators"
        session.chat.error(ErrorCode.FORBIDDEN, f"only {who} may {action}",
                           re="moderate", **rid_of(msg))
        return
    service.spawn(_request(service, session, msg))


async def _request(service: Service, session: Session[Peer], msg: Message) -> None:
    try:
        text, rooms = await carry_out(service, session, msg)
    except Refused as exc:
        session.chat.error(exc.code, exc.message, re="moderate", **rid_of(msg))
        return
    for room in rooms:  # stored in the room's history, as a message of kind "notice"
        service.post_notice(room, session.name, text)
    if not rooms & session.rooms:
        session.chat.send("notice", room=next(iter(sorted(rooms)), DEFAULT_ROOM), text=text)
    session.chat.send("moderated", action=msg["action"], **rid_of(msg))
    log.info("moderation: %s", text)
    assert service.account_store is not None
    target = msg.get("target") or msg.get("address")
    detail = " ".join(f"{k}={msg[k]}" for k in ("duration", "role", "reason")
                      if msg.get(k) is not None)
    try:
        await service.account_store.log(session.name, msg["action"], target, detail)
    except Exception:
        log.exception("could not record a moderation action")


async def carry_out(service: Service, session: Session[Peer],
                    msg: Message) -> tuple[str, set[str]]:
    """Carry out a moderator's request (kick, mute, ban, role ...); returns the notice text and
    the rooms to show it in (the target's). Raises Refused."""
    action: str = msg["action"]
    reason: str = msg.get("reason") or ""
    duration: int | None = msg.get("duration")
    for_text = f" for {format_duration(duration)}" if duration else ""
    because = f": {reason}" if reason else ""
    until = time.time() + duration if duration else None
    store = service.account_store
    if store is None:
        raise Refused(ErrorCode.FORBIDDEN, "this server has no moderation")
    if action in ("ban", "unban") and msg.get("address") is not None:
        try:
            address = str(ipaddress.ip_address(msg["address"]))
        except ValueError:
            raise Refused(ErrorCode.BAD_MESSAGE, "address: not an IP address") from None
        hit = [s for s in service.sessions.values() if s.chat.ip == address]
        if action == "ban" and any(s is session for s in hit):
            raise Refused(ErrorCode.FORBIDDEN, "that is your own address")
        rooms = {r for s in hit for r in s.rooms}
        if action == "unban":
            if not await store.unban("address", address):
                raise Refused(ErrorCode.NO_SUCH_USER, f"address {address} is not banned")
            service.bans.pop(("address", address), None)
            return f"{session.name} lifted a ban on an address", rooms
        above = sorted((s for s in hit if outranks(s.role, session.role or "guest")),
                       key=lambda s: s.key)
        if above:  # a moderator may not hit a session of their rank or higher
            who = ", ".join(f"{s.name} ({s.role})" for s in above)
            raise Refused(ErrorCode.FORBIDDEN, f"you may not ban {address}: {who} "
                           f"{'is' if len(above) == 1 else 'are'} connected from it")
        ban = await store.ban("address", address, until, reason, session.name,
                              session.role or "guest")
        service.bans[("address", address)] = ban
        hit = [s for s in service.sessions.values() if s.chat.ip == address
               and ban_binds(ban.by_role, s.role, address, address=True)]
        names = ", ".join(sorted(s.name for s in hit)) or "nobody connected"
        rooms = {r for s in hit for r in s.rooms}
        for s in hit:
            service.expel(s, ErrorCode.BANNED, f"This address is banned {ban.until_text()}"
                        f"{because}")
        return f"{session.name} banned an address ({names}){for_text}{because}", rooms
    target: str | None = msg.get("target")
    if target is None:
        raise Refused(ErrorCode.BAD_MESSAGE, f"{action} needs a target")
    key = target.casefold()
    if key == session.key:
        raise Refused(ErrorCode.FORBIDDEN, "you cannot moderate yourself")
    if outranks(service.role_of(key), session.role or "guest"):
        raise Refused(ErrorCode.FORBIDDEN, f"you may not moderate '{target}'")
    victim = service.sessions.get(key)
    name = victim.name if victim is not None else (
        service.accounts[key].name if key in service.accounts else target)
    rooms = set(victim.rooms) if victim is not None else set()
    if action == "kick":
        if victim is None:
            raise Refused(ErrorCode.NO_SUCH_USER, f"'{target}' is not connected")
        service.expel(victim, ErrorCode.KICKED, f"You were kicked by {session.name}{because}")
        return f"{session.name} kicked {name}{because}", rooms
    if action == "mute":  # stored like a ban: it outlives a restart of the server
        service.bans[("mute", key)] = await store.ban("mute", key, until, reason, session.name,
                                                   session.role or "guest")
        return f"{session.name} muted {name}{for_text}{because}", rooms
    if action == "unmute":
        if not await store.unban("mute", key):
            raise Refused(ErrorCode.NO_SUCH_USER, f"'{target}' is not muted")
        service.bans.pop(("mute", key), None)
        return f"{session.name} unmuted {name}", rooms
    if action == "ban":
        ban = await store.ban("account", key, until, reason, session.name,
                              session.role or "guest")
        service.bans[("account", key)] = ban
        if victim is not None:
            service.expel(victim, ErrorCode.BANNED,
                        f"You are banned {ban.until_text()}{because}")
        return f"{session.name} banned {name}{for_text}{because}", rooms
    if action == "unban":
        if not await store.unban("account", key):
            raise Refused(ErrorCode.NO_SUCH_USER, f"'{target}' is not banned")
        service.bans.pop(("account", key), None)
        return f"{session.name} unbanned {name}", rooms
    if action == "role":
        role = msg.get("role")
        if role not in ROLES:
            raise Refused(ErrorCode.BAD_MESSAGE, f"role must be one of {', '.join(ROLES)}")
        if key not in service.accounts or not await store.set_role(key, role):
            raise Refused(ErrorCode.NO_SUCH_USER, f"'{target}' has no account")
        account = service.accounts[key]
        service.accounts[key] = dataclasses.replace(account, role=role)
        if victim is not None:
            victim.role = role
        return f"{session.name} made {name} {'an' if role == 'admin' else 'a'} {role}", rooms
    raise Refused(ErrorCode.BAD_MESSAGE, f"unknown action {action!r}")
