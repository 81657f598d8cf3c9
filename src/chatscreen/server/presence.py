"""The rooms' state on the chat service: the rooms and their members, the casefold index,
the public rooms' sorted list, who created which, guests' empty rooms and their expiry; the
join path (the ``joined`` answer with the room's history, and the messages published while
its query ran: the gaps), leaving, the held leave of a lost connection (LEAVE_GRACE) and the
batched presence announcements. ChatService owns one (``room_state``) and delegates to it.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from chatscreen.protocol import encode_frame
from chatscreen.server.history import HISTORY_PAGE, Gap, fit, frames_of

if TYPE_CHECKING:
    from chatscreen.server.accounts import AccountStore
    from chatscreen.server.fanout import Fanout
    from chatscreen.server.limits import KeyedBuckets
    from chatscreen.server.peer import Peer
    from chatscreen.server.rooms import RoomPolicy
    from chatscreen.server.session import Session
    from chatscreen.server.storage import MessageStore

log = logging.getLogger("chatscreen.chat")

PRESENCE_BATCH = 0.05  # seconds presence announcements of a room are gathered for
# s: a user whose connection ended is announced as gone only this long after; back within it
# (a reconnect), neither the leave nor the new join is announced: a flapping client does not
# fill its rooms with "joined"/"left"
LEAVE_GRACE = 5.0


def room_topic(room: str) -> str:
    return f"room:{room}"


class Host(Protocol):
    """What the rooms' state reads of the chat service (ChatService is one)."""

    @property
    def store(self) -> MessageStore: ...
    @property
    def fanout(self) -> Fanout: ...
    @property
    def history(self) -> int: ...  # messages in a join's answer
    @property
    def account_store(self) -> AccountStore | None: ...
    @property
    def limits(self) -> RoomPolicy: ...
    @property
    def quota(self) -> KeyedBuckets: ...
    @property
    def private(self) -> dict[str, set[str]]: ...  # private room -> accounts invited
    @property
    def share_view(self) -> Callable[[Session[Peer]], list[dict[str, Any]]] | None: ...
    @property
    def audience_changed(self) -> Callable[[Session[Peer]], None] | None: ...
    @property
    def stopping(self) -> bool: ...
    def send_shares(self, session: Session[Peer]) -> None: ...
    def spawn(self, coro: Any) -> None: ...


class Rooms:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.store = host.store
        self.fanout = host.fanout
        # room -> members (a room exists while listed)
        self.rooms: dict[str, set[Session[Peer]]] = {}
        self._folded: dict[str, str] = {}  # casefolded room name -> room
        self.public_rooms: list[str] = []  # the rooms that are not private, sorted
        # rooms created since the start -> who created them: "ip:ADDRESS" (a guest; the room
        # expires), "user:NAME" (a registered name); and how many each has
        self._creator: dict[str, str] = {}
        self.created: Counter[str] = Counter()
        self._empty_since: dict[str, float] = {}  # guests' rooms with nobody in, oldest first
        # room -> presence frames to publish, with the peer each one is about
        self._presence_due: dict[str, list[tuple[bytes, Peer]]] = {}
        # (room, casefolded name) -> the held announcement of a lost connection's leave
        self._leaving: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # room -> for each join whose history query is on its way, (id, frame) of the room's
        # messages published meanwhile: see _send_joined
        self.gaps: dict[str, dict[int, Gap]] = {}
        self._joins = itertools.count()

    def store_member(self, session: Session[Peer], room: str, *, member: bool) -> None:
        """An account joined (or left) a room: remember it, so that its next session, on
        any client, is told its rooms. A guest's are its connection's only."""
        if member:
            session.member_of.add(room)
        else:
            session.member_of.discard(room)
            session.marks.pop(f"#{room}", None)
        if session.role is not None and self.host.account_store is not None:
            self.host.spawn(self.host.account_store.set_member(session.key, room, member))

    def add_room(self, room: str, creator: str | None) -> None:
        """A new room (``creator``: see _creator; None: one stored before this start)."""
        self.rooms[room] = set()
        self._folded.setdefault(room.casefold(), room)
        if room not in self.host.private:
            bisect.insort(self.public_rooms, room)
        if creator is not None:
            self._creator[room] = creator
            self.created[creator] += 1
            if not creator.startswith("ip:"):  # a guest's room is never stored: it expires
                self.host.spawn(self.store.add_room(room))

    def _drop_room(self, room: str) -> None:
        """Forget an empty guest room (its messages stay in the history)."""
        del self.rooms[room]
        if self._folded.get(room.casefold()) == room:
            del self._folded[room.casefold()]
        i = bisect.bisect_left(self.public_rooms, room)
        if i < len(self.public_rooms) and self.public_rooms[i] == room:
            del self.public_rooms[i]
        creator = self._creator.pop(room, None)
        if creator is not None:
            self.created[creator] -= 1
            if not self.created[creator]:
                del self.created[creator]
        self._empty_since.pop(room, None)
        self._presence_due.pop(room, None)

    async def expire_rooms(self) -> None:
        """Drop guests' rooms that have been empty for room_expiry (oldest first), and
        forget the create buckets that have filled up again."""
        expiry = self.host.limits.room_expiry
        loop = asyncio.get_running_loop()
        while not self.host.stopping:
            await asyncio.sleep(min(1.0, expiry / 4))
            now = loop.time()
            while self._empty_since:
                room, since = next(iter(self._empty_since.items()))
                if now - since < expiry:
                    break
                del self._empty_since[room]
                if not self.rooms.get(room, True):
                    self._drop_room(room)
                    log.info("room %s expired: empty for %g s", room, expiry)
            self.host.quota.prune(now)

    def find_room(self, room: str) -> str | None:
        if room in self.rooms:
            return room
        return self._folded.get(room.casefold())

    def join_room(self, session: Session[Peer], room: str, after: int | None,
                  rid: str | None) -> None:
        members = self.rooms[room]
        if session in members:
            # Already there: answer as if joining, so a resuming client gets what it missed.
            self.host.spawn(self._send_joined(session, room, after, rid, subscribe=False))
            return
        members.add(session)
        session.rooms.add(room)
        if session.role is not None and room not in session.member_of:
            self.store_member(session, room, member=True)
        self._empty_since.pop(room, None)
        if self.host.share_view is not None:
            self.host.send_shares(session)  # a share for this room's members may show up
        self._presence(room, session, "join")
        self.host.spawn(self._send_joined(session, room, after, rid, subscribe=True))

    async def _send_joined(self, session: Session[Peer], room: str, after: int | None,
                           rid: str | None, *, subscribe: bool) -> None:
        # Messages published while the query runs reach the room's subscribers, which this
        # peer is not yet, and may have been stored after the query looked: keep them.
        peer = session.chat
        gap = Gap(peer)
        gaps = self.gaps.setdefault(room, {})
        key = next(self._joins)
        gaps[key] = gap
        answered = False  # "joined" sent
        try:
            if after is None:
                rows = await self.store.room_history(room, limit=self.host.history)
                more = len(rows) == self.host.history
                rows, cut = fit(rows, newest=True)
                more = more or cut
                pages = [rows]
            else:
                # Every message after ``after``, oldest first. All frames but the last go out
                # as the queries return them, each once the peer has taken the one before: a
                # client back from a long absence gets it all, and the server holds no more
                # than a frame of it at a time.
                more = False
                while True:
                    rows = await self.store.room_history(room, after=after, limit=HISTORY_PAGE)
                    frames = frames_of(rows)
                    done = len(rows) < HISTORY_PAGE
                    if done:
                        frames, pages = frames[:-1], frames[-1:]
                    if rows:
                        after = rows[-1].id
                        gap.drop_through(after)  # those are in rows
                    for page in frames:
                        if peer.closing or room not in session.rooms:
                            return
                        if not answered:
                            answered = True
                            self._send_joined_frame(peer, room, rid)
                        peer.send("history", room=room, messages=[m.to_wire() for m in page],
                                  more=False)
                        await peer.drained()
                    if done:
                        break
        finally:
            del gaps[key]
            if not gaps:
                del self.gaps[room]
        # No await from here on: subscribing and sending happen in one step (see module doc).
        if peer.closing or room not in session.rooms:
            return
        if not answered:
            self._send_joined_frame(peer, room, rid)
        for i, page in enumerate(pages):
            peer.send("history", room=room, messages=[m.to_wire() for m in page],
                      more=more and i == 0)
        if subscribe:
            # Storage takes messages in id order, so the history holds every message up to
            # its last id: the rest of what was published meanwhile goes out behind it.
            seen = max([after or 0, *(page[-1].id for page in pages if page)])
            late = [frame for id_, frame in gap.frames if id_ > seen]
            if late:
                peer.send_bytes(b"".join(late))
            self.fanout.subscribe(room_topic(room), peer)

    def _send_joined_frame(self, peer: Peer, room: str, rid: str | None) -> None:
        users = sorted(s.name for s in self.rooms.get(room, ()))
        peer.send("joined", room=room, users=users, **({"rid": rid} if rid else {}))

    def leave_room(self, session: Session[Peer], room: str, *, held: bool = False) -> None:
        """``held``: the connection ended: announce it LEAVE_GRACE later, if it is not back."""
        session.rooms.discard(room)
        if self.host.share_view is not None:  # some share is only for some: this one may go
            self.host.send_shares(session)
            if self.host.audience_changed is not None:
                self.host.audience_changed(session)
        members = self.rooms.get(room)
        if members is not None:
            members.discard(session)
            if not members and self._creator.get(room, "").startswith("ip:"):
                self._empty_since.pop(room, None)  # to the end: the newest empty room
                self._empty_since[room] = asyncio.get_running_loop().time()
        self.fanout.unsubscribe(room_topic(room), session.chat)
        if held and not self.host.stopping:
            key = (room, session.key)
            old = self._leaving.pop(key, None)
            if old is not None:
                old.cancel()
            self._leaving[key] = asyncio.get_running_loop().call_later(
                LEAVE_GRACE, self._held_leave, room, session)
        else:
            self._presence(room, session, "leave")

    def _held_leave(self, room: str, session: Session[Peer]) -> None:
        del self._leaving[(room, session.key)]
        self._presence(room, session, "leave")

    def _presence(self, room: str, session: Session[Peer], event: str) -> None:
        """Announce a join or leave. Announcements are gathered for PRESENCE_BATCH seconds
        and published together: when 1000 clients join one room, each member gets a few
        writes instead of 1000 (the cost of a storm is writes, O(members x joins)). A join
        within LEAVE_GRACE of a lost connection's leave cancels both: nothing is news."""
        if event == "join":
            held = self._leaving.pop((room, session.key), None)
            if held is not None:
                held.cancel()
                return
        pending = self._presence_due.get(room)
        if pending is None:
            pending = self._presence_due[room] = []
            asyncio.get_running_loop().call_later(PRESENCE_BATCH, self.flush_presence, room)
        pending.append((encode_frame({"type": "presence", "room": room, "user": session.name,
                                      "event": event}), session.chat))

    def flush_presence(self, room: str) -> None:
        """Everyone gets the batch but for news of themselves (the joiner has ``joined``)."""
        pending = self._presence_due.pop(room, None)
        if not pending:
            return
        subjects = {peer for _, peer in pending}
        self.fanout.publish(room_topic(room), b"".join(f for f, _ in pending), exclude=subjects)
        for subject in subjects:  # still (or already) receiving this room
            if self.fanout.is_subscribed(room_topic(room), subject):
                others = [f for f, peer in pending if peer is not subject]
                if others:
                    subject.send_bytes(b"".join(others))
