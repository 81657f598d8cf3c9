"""Rooms, the requests about them: the rooms listing, create, join, leave, who, invite,
decline, read markers; who may enter a private room; the limits on what one client may make
the server keep (caps, the create quota). Carried out on the chat service through the Service
interface (ChatService is one; the state it keeps, the rooms, their members, presence, is its
presence.Rooms).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chatscreen.durations import format_duration
from chatscreen.errors import ErrorCode

if TYPE_CHECKING:
    from chatscreen.protocol import Message
    from chatscreen.server.accounts import Account, AccountStore
    from chatscreen.server.limits import KeyedBuckets
    from chatscreen.server.peer import Peer
    from chatscreen.server.session import Session

log = logging.getLogger("chatscreen.chat")

DEFAULT_ROOM = "general"  # the room a welcome names (always there)
ROOMS_PAGE = 1000  # rooms in a `rooms` answer, at most (and without a `limit`)
MAX_PEER_MARKS = 200  # read markers of private conversations kept per user (newest kept)


@dataclass(frozen=True)
class RoomPolicy:
    """What one client may make the server keep (see ServerSettings for each)."""

    create_rate: float = 0.2
    create_burst: int = 10
    max_rooms: int = 10_000
    max_rooms_per_guest: int = 20
    max_rooms_per_member: int = 100
    room_expiry: float = 600.0
    max_joined: int = 100
    max_invitations: int = 1000


def rid_of(msg: Message) -> dict[str, Any]:
    """The request id to echo in an answer, if the client gave one."""
    rid = msg.get("rid")
    return {} if rid is None else {"rid": rid}


class Service(Protocol):
    """What the room requests read and change of the chat service (ChatService is one)."""

    @property
    def rooms(self) -> dict[str, set[Session[Peer]]]: ...  # room -> members
    @property
    def public_rooms(self) -> list[str]: ...  # sorted
    @property
    def private(self) -> dict[str, set[str]]: ...  # private room -> accounts invited
    @property
    def invited_to(self) -> dict[str, set[str]]: ...  # account -> private rooms
    @property
    def created(self) -> Counter[str]: ...  # rooms per creator
    @property
    def sessions(self) -> Mapping[str, Session[Peer]]: ...
    @property
    def accounts(self) -> dict[str, Account]: ...
    @property
    def account_store(self) -> AccountStore | None: ...
    @property
    def limits(self) -> RoomPolicy: ...
    @property
    def quota(self) -> KeyedBuckets: ...
    @property
    def newest_id(self) -> int: ...
    def find_room(self, room: str) -> str | None: ...
    def add_room(self, room: str, creator: str | None) -> None: ...
    def join_room(self, session: Session[Peer], room: str, after: int | None,
                  rid: str | None) -> None: ...
    def leave_room(self, session: Session[Peer], room: str, *, held: bool = False) -> None: ...
    def store_member(self, session: Session[Peer], room: str, *, member: bool) -> None: ...
    def spawn(self, coro: Any) -> None: ...


def may_enter(service: Service, session: Session[Peer], room: str) -> bool:
    """A public room: anyone. A private one: admins, the accounts invited (by name) and
    the guests invited (that guest, not its name: see Guest)."""
    invited = service.private.get(room)
    if invited is None or session.role == "admin":
        return True
    if session.role is not None and session.key in invited:
        return True
    return session.guest is not None and room in session.guest.invited


def private_refused(service: Service, session: Session[Peer], room: str, msg: Message) -> bool:
    """Refuse (``forbidden``) a request about a private room one is not invited to."""
    if may_enter(service, session, room):
        return False
    session.chat.error(ErrorCode.FORBIDDEN, f"'{room}' is private: you need an "
                       "invitation", re=msg.type, **rid_of(msg))
    return True


def listing(service: Service, session: Session[Peer], msg: Message) -> None:
    """A page of the rooms this user may enter, by name from ``after`` on: its cost
    depends on the page, not on how many rooms there are."""
    limit: int = min(msg.get("limit", ROOMS_PAGE), ROOMS_PAGE)
    after: str | None = msg.get("after")
    start = 0 if after is None else bisect.bisect_right(service.public_rooms, after)
    public = service.public_rooms[start : start + limit + 1]
    private: Iterable[str]
    if session.role == "admin":
        private = service.private.keys()
    elif session.role is None:  # a guest's invitations are its own, not its name's
        private = session.guest.invited if session.guest is not None else ()
    else:
        private = service.invited_to.get(session.key, ())
    mine = sorted(r for r in private if r in service.rooms and (after is None or r > after))
    page = list(itertools.islice(heapq.merge(public, mine), limit + 1))
    more = {"more": True} if len(page) > limit else {}
    rooms = [{"name": r, "users": len(service.rooms[r])} for r in page[:limit]]
    session.chat.send("rooms", rooms=rooms, **more, **rid_of(msg))


def owner(service: Service, session: Session[Peer]) -> str:
    """Whom a new room counts against: the account, else (a guest) the address."""
    return f"user:{session.key}" if session.role else f"ip:{session.chat.ip}"


def refuse(service: Service, session: Session[Peer], msg: Message, code: ErrorCode,
           text: str) -> None:
    session.chat.error(code, text, re=msg.type, **rid_of(msg))


def joined_too_many(service: Service, session: Session[Peer], msg: Message) -> bool:
    """Would one more room pass max_joined (an account's stored rooms count, joined on
    this connection or not)?"""
    n = service.limits.max_joined
    if len(session.rooms) < n and len(session.rooms | session.member_of) < n:
        return False
    refuse(service, session, msg, ErrorCode.LIMIT_REACHED, f"you are in {n} rooms, the most "
                 "one connection may be in: leave one first")
    return True


def may_create_room(service: Service, session: Session[Peer], msg: Message) -> bool:
    """The caps on rooms (in all, per account or guest address), then the create rate;
    refuses (not fatal) if one is reached."""
    lim = service.limits
    if session.role != "admin":
        if len(service.rooms) >= lim.max_rooms:
            refuse(service, session, msg, ErrorCode.LIMIT_REACHED, f"this server holds "
                         f"{lim.max_rooms} rooms, the most it keeps: join one of them")
            return False
        creator = owner(service, session)
        if session.role is None and service.created[creator] >= lim.max_rooms_per_guest:
            refuse(service, session, msg, ErrorCode.LIMIT_REACHED, "the guests of your "
                         f"address have {lim.max_rooms_per_guest} rooms, the most they may "
                         f"have: a guest's room goes once it has been empty for "
                         f"{format_duration(lim.room_expiry)}")
            return False
        if session.role is not None and service.created[creator] >= lim.max_rooms_per_member:
            refuse(service, session, msg, ErrorCode.LIMIT_REACHED, f"you have created "
                         f"{lim.max_rooms_per_member} rooms, the most one account may")
            return False
    return take_quota(service, session, msg)


def take_quota(service: Service, session: Session[Peer], msg: Message) -> bool:
    """A request that makes the server keep something (a room, an invitation, an
    account): one token from the bucket of the address, and of the account if
    registered, shared by all their connections. Refused (not fatal) when empty."""
    keys = [f"ip:{session.chat.ip}", *([f"user:{session.key}"] if session.role else [])]
    wait = service.quota.take(keys, asyncio.get_running_loop().time())
    if wait == 0.0:
        return True
    refuse(service, session, msg, ErrorCode.RATE_LIMITED, "too many new rooms, invitations "
                 "or registrations from your address" + (" or account" if session.role
                                                         else "")
                 + f": try again in {math.ceil(wait)} s")
    return False


def create(service: Service, session: Session[Peer], msg: Message) -> None:
    room = msg["room"]
    private = bool(msg.get("private"))
    if service.find_room(room) is not None:
        session.chat.error(ErrorCode.ROOM_EXISTS, f"room '{room}' already exists", re="create",
                           **rid_of(msg))
        return
    if private and service.account_store is None:
        refuse(service, session, msg, ErrorCode.FORBIDDEN, "this server has no private rooms")
        return
    if private and session.role is None:
        # A guest's rooms are not kept (they expire): a private one would be lost with it.
        refuse(service, session, msg, ErrorCode.FORBIDDEN, "register your name to create a "
                     "private room")
        return
    if joined_too_many(service, session, msg) or not may_create_room(service, session, msg):
        return
    if private:
        assert service.account_store is not None
        service.private[room] = {session.key}
        service.invited_to.setdefault(session.key, set()).add(room)
        service.spawn(service.account_store.add_private_room(room, session.name))
    service.add_room(room, owner(service, session))
    service.join_room(session, room, None, msg.get("rid"))


def invite(service: Service, session: Session[Peer], msg: Message) -> None:
    room = service.find_room(msg["room"])
    if room is None:
        session.chat.error(ErrorCode.NO_SUCH_ROOM, f"no room '{msg['room']}'", re="invite",
                           **rid_of(msg))
        return
    if private_refused(service, session, room, msg):
        return
    invited = service.private.get(room)
    if invited is None:
        session.chat.error(ErrorCode.FORBIDDEN, f"'{room}' is not private: anyone may join",
                           re="invite", **rid_of(msg))
        return
    user: str = msg["user"]
    key = user.casefold()
    target = service.sessions.get(key)
    if target is not None and target.role is None:
        assert target.guest is not None
        if room not in target.guest.invited:
            if not take_quota(service, session, msg):
                return
            target.guest.invited.add(room)  # that guest's, not its name's: see Guest
        session.chat.send("notice", room=room, text=f"{target.name} is a guest: the "
                          "invitation is theirs, not the name's, and ends when they leave")
    elif target is not None or key in service.accounts:
        if key not in invited:
            if len(invited) >= service.limits.max_invitations:
                refuse(service, session, msg, ErrorCode.LIMIT_REACHED, f"'{room}' has "
                             f"{service.limits.max_invitations} names invited, the most a "
                             "room may")
                return
            if not take_quota(service, session, msg):
                return
            invited.add(key)
            service.invited_to.setdefault(key, set()).add(room)
            assert service.account_store is not None
            service.spawn(service.account_store.invite(room, user))
    else:
        refuse(service, session, msg, ErrorCode.NO_SUCH_USER,
                     f"'{user}' is neither registered nor connected")
        return
    log.info("%s invited %s to %s", session.name, user, room)
    session.chat.send("invited", room=room, user=user, **rid_of(msg))
    if target is not None and room not in target.rooms:
        # an invitation, for clients to offer Join / Decline; the notice for older ones
        target.chat.send("invited", room=room, user=target.name, by=session.name)
        target.chat.send("notice", room=room, text=f"{session.name} invited you to "
                         f"{room}: /join {room}")


def decline(service: Service, session: Session[Peer], msg: Message) -> None:
    """Forget an invitation to a private room (it is not offered at login any more)."""
    room = service.find_room(msg["room"])
    if room is None:
        refuse(service, session, msg, ErrorCode.NO_SUCH_ROOM, f"no room '{msg['room']}'")
        return
    if session.role is None:
        if session.guest is not None:
            session.guest.invited.discard(room)
    elif session.key in service.private.get(room, ()):
        service.private[room].discard(session.key)
        service.invited_to.get(session.key, set()).discard(room)
        assert service.account_store is not None
        service.spawn(service.account_store.uninvite(room, session.name))
    session.chat.send("declined", room=room, **rid_of(msg))


def read(service: Service, session: Session[Peer], msg: Message) -> None:
    """Move a read marker forward (never back, never past the newest message): the
    last message id read in a room one is in, or in a private conversation (at most
    MAX_PEER_MARKS of those: the oldest goes). An account's are stored."""
    if "room" in msg.fields:
        room = service.find_room(msg["room"])
        if room is None or (room not in session.rooms and room not in session.member_of):
            refuse(service, session, msg, ErrorCode.NOT_IN_ROOM,
                         f"you are not in '{msg['room']}'")
            return
        conv, where = f"#{room}", {"room": room}
    else:
        conv, where = f"@{msg['peer'].casefold()}", {"peer": msg["peer"]}
    marks = session.marks
    new = min(msg["id"], service.newest_id)
    if new > marks.get(conv, 0):
        dropped = make_room_for(marks, conv)
        marks[conv] = new
        if session.role is not None and service.account_store is not None:
            service.spawn(service.account_store.set_marker(session.key, conv, new, dropped))
    session.chat.send("read", **where, id=marks.get(conv, 0), **rid_of(msg))


def make_room_for(marks: dict[str, int], conv: str) -> list[str]:
    """Before a new private conversation's marker: drop the oldest one if there are
    MAX_PEER_MARKS already (a room's are bounded by the rooms one is in)."""
    if conv in marks or conv[0] != "@":
        return []
    peers = [c for c in marks if c[0] == "@"]
    if len(peers) < MAX_PEER_MARKS:
        return []
    oldest = min(peers, key=marks.__getitem__)
    del marks[oldest]
    return [oldest]


def join(service: Service, session: Session[Peer], msg: Message) -> None:
    room = service.find_room(msg["room"])
    if room is None:  # joining a room that does not exist creates it, as in IRC
        if joined_too_many(service, session, msg) or not may_create_room(service, session, msg):
            return
        room = msg["room"]
        service.add_room(room, owner(service, session))
    elif private_refused(service, session, room, msg) or (
            session not in service.rooms[room] and room not in session.member_of
            and joined_too_many(service, session, msg)):
        return
    service.join_room(session, room, msg.get("after"), msg.get("rid"))


def leave(service: Service, session: Session[Peer], msg: Message) -> None:
    room = service.find_room(msg["room"])
    if room is None or (room not in session.rooms and room not in session.member_of):
        session.chat.error(ErrorCode.NOT_IN_ROOM, f"you are not in '{msg['room']}'",
                           re="leave", **rid_of(msg))
        return
    if room in session.rooms:
        service.leave_room(session, room)
    service.store_member(session, room, member=False)
    session.chat.send("left", room=room, **rid_of(msg))


def who(service: Service, session: Session[Peer], msg: Message) -> None:
    room = service.find_room(msg["room"])
    if room is None:
        session.chat.error(ErrorCode.NO_SUCH_ROOM, f"no room '{msg['room']}'", re="who",
                           **rid_of(msg))
        return
    if private_refused(service, session, room, msg):
        return
    session.chat.send("users", room=room, users=sorted(s.name for s in service.rooms[room]),
                      **rid_of(msg))
