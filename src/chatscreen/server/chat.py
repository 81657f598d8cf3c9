"""The chat service: logins, rooms, presence, messages, private messages, typing, history.

Message flow (the hot path): ``say`` is validated, given the next id and a UTC timestamp, and
queued; the writer task commits everything queued in one transaction, then encodes each
message once and publishes the same bytes to every member of the room, the sender included
(that echo is the sender's acknowledgement). Because storage runs its calls in submission
order, a client joining a room gets every message exactly once: either in its history (the
query ran after the commit) or live (the commit ran after the query, so it is published after
the joiner subscribed).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol import Message, encode_frame
from chatscreen.server.fanout import Fanout
from chatscreen.server.metrics import Counters
from chatscreen.server.session import Session
from chatscreen.server.storage import MessageStore, StoredMessage

if TYPE_CHECKING:
    from chatscreen.server.peer import Peer

log = logging.getLogger("chatscreen.chat")

DEFAULT_ROOM = "general"
ALL = "all"  # topic every logged-in chat connection subscribes to (share announcements)
HISTORY_PAGE = 500  # messages per history frame when catching up
CIDS_KEPT = 64  # per user: client id streams, or opaque client ids, remembered
CID_USERS_KEPT = 1024  # users (most recently active) whose client ids are kept


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rid(msg: Message) -> dict[str, Any]:
    """The request id to echo in an answer, if the client gave one."""
    rid = msg.get("rid")
    return {} if rid is None else {"rid": rid}


def room_topic(room: str) -> str:
    return f"room:{room}"


def user_topic(key: str) -> str:
    return f"user:{key}"


@dataclass(slots=True)
class _Pending:
    msg: StoredMessage
    sender: Session


class ChatService:
    def __init__(self, store: MessageStore, fanout: Fanout, *, history: int = 100,
                 heartbeat: float = 15.0) -> None:
        self.store = store
        self.heartbeat = heartbeat
        self._stopping = False
        self.fanout = fanout
        self.history = history
        self.sessions: dict[str, Session] = {}  # casefolded name -> session
        self.tokens: dict[str, Session] = {}
        self.rooms: dict[str, set[Session]] = {}  # room -> members (a room exists while listed)
        self._next_id = 0
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        # user -> their recent client ids, least recently active user first (bounded)
        self._cids: OrderedDict[str, OrderedDict[str, int]] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.share_list: list[dict[str, Any]] = []  # kept current by the screen relay
        self.messages_total = 0
        self.counters = Counters()

    async def start(self) -> None:
        self._next_id = await self.store.last_id()
        await self.store.add_room(DEFAULT_ROOM)
        for room in await self.store.rooms():
            self.rooms.setdefault(room, set())
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
            self._hello(peer, msg)
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
        self._logout(session)

    # -- login -------------------------------------------------------------------------

    def _hello(self, peer: Peer, msg: Message) -> None:
        name = msg.get("user")
        if name is None:
            raise RemoteProtocolError(ErrorCode.INVALID_NAME, "hello on the chat port needs a user")
        key = name.casefold()
        old = self.sessions.get(key)
        if old is not None:
            if old.resume is not None and msg.get("resume") == old.resume:
                # The same client coming back before we noticed it had gone.
                old.chat.fail(ErrorCode.REPLACED, "replaced by a new connection of yours")
                self._logout(old)
            else:
                peer.fail(ErrorCode.NAME_TAKEN, f"Username '{name}' is already taken")
                return
        session = Session(name, peer, resume=msg.get("resume"))
        peer.session = session
        self.sessions[key] = session
        self.tokens[session.token] = session
        self.fanout.subscribe(user_topic(key), peer)
        self.fanout.subscribe(ALL, peer)
        peer.accept(
            user=name,
            token=session.token,
            room=DEFAULT_ROOM,
            heartbeat=self.heartbeat,
            limits={"max_text": peer.conn.limits.max_text, "max_frame": peer.conn.limits.max_frame,
                    "history": self.history},
        )
        peer.send("shares", shares=self.share_list)
        log.info("%s logged in from %s", name, peer.addr)

    def _logout(self, session: Session) -> None:
        key = session.key
        if self.sessions.get(key) is session:
            del self.sessions[key]
        self.tokens.pop(session.token, None)
        for room in list(session.rooms):
            self._leave(session, room)
        self.fanout.unsubscribe(user_topic(key), session.chat)
        self.fanout.unsubscribe(ALL, session.chat)
        for screen in list(session.screens):
            screen.fail(ErrorCode.REPLACED, "your chat session ended")
        log.info("%s logged out", session.name)

    # -- rooms -------------------------------------------------------------------------

    def _rooms(self, session: Session, msg: Message) -> None:
        rooms = [{"name": r, "users": len(m)} for r, m in sorted(self.rooms.items())]
        session.chat.send("rooms", rooms=rooms, **_rid(msg))

    def _create(self, session: Session, msg: Message) -> None:
        room = msg["room"]
        if self._find_room(room) is not None:
            session.chat.error(ErrorCode.ROOM_EXISTS, f"room '{room}' already exists", re="create",
                               **_rid(msg))
            return
        self.rooms[room] = set()
        self._spawn(self.store.add_room(room))
        self._join(session, room, None, msg.get("rid"))

    def _find_room(self, room: str) -> str | None:
        if room in self.rooms:
            return room
        folded = room.casefold()
        return next((r for r in self.rooms if r.casefold() == folded), None)

    def _join_msg(self, session: Session, msg: Message) -> None:
        room = self._find_room(msg["room"])
        if room is None:  # joining a room that does not exist creates it, as in IRC
            room = msg["room"]
            self.rooms[room] = set()
            self._spawn(self.store.add_room(room))
        self._join(session, room, msg.get("after"), msg.get("rid"))

    def _join(self, session: Session, room: str, after: int | None, rid: str | None) -> None:
        members = self.rooms[room]
        if session in members:
            # Already there: answer as if joining, so a resuming client gets what it missed.
            self._spawn(self._send_joined(session, room, after, rid, subscribe=False))
            return
        members.add(session)
        session.rooms.add(room)
        self._presence(room, session, "join")
        self._spawn(self._send_joined(session, room, after, rid, subscribe=True))

    async def _send_joined(self, session: Session, room: str, after: int | None,
                           rid: str | None, *, subscribe: bool) -> None:
        if after is None:
            rows = await self.store.room_history(room, limit=self.history)
            more = len(rows) == self.history
            pages = [rows]
        else:
            pages = []
            while True:
                rows = await self.store.room_history(room, after=after, limit=HISTORY_PAGE)
                pages.append(rows)
                if len(rows) < HISTORY_PAGE:
                    break
                after = rows[-1].id
            more = False
        # No await from here on: subscribing and sending happen in one step (see module doc).
        peer = session.chat
        if peer.closing or room not in session.rooms:
            return
        if subscribe:
            self.fanout.subscribe(room_topic(room), peer)
        users = sorted(s.name for s in self.rooms.get(room, ()))
        peer.send("joined", room=room, users=users, **({"rid": rid} if rid else {}))
        for i, page in enumerate(pages):
            peer.send("history", room=room, messages=[m.to_wire() for m in page],
                      more=more and i == 0)

    def _leave_msg(self, session: Session, msg: Message) -> None:
        room = self._find_room(msg["room"])
        if room is None or room not in session.rooms:
            session.chat.error(ErrorCode.NOT_IN_ROOM, f"you are not in '{msg['room']}'",
                               re="leave", **_rid(msg))
            return
        self._leave(session, room)
        session.chat.send("left", room=room, **_rid(msg))

    def _leave(self, session: Session, room: str) -> None:
        session.rooms.discard(room)
        self.rooms.get(room, set()).discard(session)
        self.fanout.unsubscribe(room_topic(room), session.chat)
        self._presence(room, session, "leave")

    def _presence(self, room: str, session: Session, event: str) -> None:
        data = encode_frame({"type": "presence", "room": room, "user": session.name,
                             "event": event})
        self.fanout.publish(room_topic(room), data)

    def _who(self, session: Session, msg: Message) -> None:
        room = self._find_room(msg["room"])
        if room is None:
            session.chat.error(ErrorCode.NO_SUCH_ROOM, f"no room '{msg['room']}'", re="who",
                               **_rid(msg))
            return
        session.chat.send("users", room=room, users=sorted(s.name for s in self.rooms[room]),
                          **_rid(msg))

    # -- messages ----------------------------------------------------------------------

    def _say(self, session: Session, msg: Message) -> None:
        room = self._find_room(msg["room"])
        cid = msg.get("cid")
        if room is None or room not in session.rooms:
            session.chat.error(ErrorCode.NOT_IN_ROOM, f"join '{msg['room']}' before you write "
                               "there", re="say", cid=cid)
            return
        self._post(session, cid, room=room, to=None, text=msg["text"])

    def _pm(self, session: Session, msg: Message) -> None:
        target = self.sessions.get(msg["to"].casefold())
        cid = msg.get("cid")
        if target is None:
            session.chat.error(ErrorCode.NO_SUCH_USER, f"'{msg['to']}' is not connected",
                               re="pm", cid=cid)
            return
        self._post(session, cid, room=None, to=target.name, text=msg["text"])

    def _post(self, session: Session, cid: str | None, *, room: str | None, to: str | None,
              text: str) -> None:
        if cid is not None and self._seen_cid(session.key, cid):
            return  # a re-send of a message we already took; its echo went out then
        self._next_id += 1
        stored = StoredMessage(self._next_id, utc_now(), session.name, text, room, to, cid)
        self._queue.append(_Pending(stored, session))
        self._wakeup.set()

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
            try:
                await self.store.append([p.msg for p in batch])
            except Exception:
                log.exception("storing %d messages failed", len(batch))
                for p in batch:
                    p.sender.chat.error(ErrorCode.INTERNAL, "the server could not store your "
                                        "message", re="say", cid=p.msg.cid)
                continue
            for p in batch:
                self._deliver(p.msg)
            self.messages_total += len(batch)

    def _deliver(self, m: StoredMessage) -> None:
        data = encode_frame({"type": "message", **m.to_wire()})
        if m.room is not None:
            n = self.fanout.publish(room_topic(m.room), data)
        else:
            assert m.to is not None
            sender_key, to_key = m.user.casefold(), m.to.casefold()
            n = self.fanout.publish(user_topic(sender_key), data)
            if to_key != sender_key:
                n += self.fanout.publish(user_topic(to_key), data)
        self.counters.deliveries += n

    def _typing(self, session: Session, msg: Message) -> None:
        active = msg["active"]
        if "room" in msg.fields:
            room = self._find_room(msg["room"])
            if room is None or room not in session.rooms:
                return
            data = encode_frame({"type": "typing", "room": room, "user": session.name,
                                 "active": active})
            self.fanout.publish(room_topic(room), data, exclude=session.chat)
        else:
            target = self.sessions.get(msg["to"].casefold())
            if target is not None and target is not session:
                target.chat.send("typing", to=target.name, user=session.name, active=active)

    def _history(self, session: Session, msg: Message) -> None:
        self._spawn(self._send_history(session, msg))

    async def _send_history(self, session: Session, msg: Message) -> None:
        limit = msg.get("limit", self.history)
        before, after = msg.get("before"), msg.get("after")
        if "room" in msg.fields:
            room = self._find_room(msg["room"]) or msg["room"]
            rows = await self.store.room_history(room, before=before, after=after, limit=limit)
            where: dict[str, Any] = {"room": room}
        else:
            peer = msg["peer"] if msg["peer"].casefold() != session.key else None
            rows = await self.store.private_history(
                session.name, peer, before=before, after=after, limit=limit
            )
            where = {"peer": msg["peer"]}
        session.chat.send("history", messages=[m.to_wire() for m in rows],
                          more=len(rows) == limit, **where, **_rid(msg))

    # -- screen shares (announced on the chat port) -------------------------------------

    def announce_shares(self, shares: list[dict[str, Any]]) -> None:
        self.share_list = shares
        self.fanout.publish(ALL, encode_frame({"type": "shares", "shares": shares}))

    # -- helpers -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("chat task failed", exc_info=task.exception())

    _handlers: ClassVar[dict[str, Callable[[ChatService, Session, Message], None]]] = {
        "rooms": _rooms,
        "create": _create,
        "join": _join_msg,
        "leave": _leave_msg,
        "who": _who,
        "say": _say,
        "pm": _pm,
        "typing": _typing,
        "history": _history,
    }
