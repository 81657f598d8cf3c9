"""The asyncio client API used by the GUI, the command line and the tests.

``Client`` logs in on the chat port, keeps the rooms it joined, and when the connection drops
it reconnects by itself with exponential backoff and jitter, re-joins its rooms asking for
everything after the last message id it saw there, and re-sends messages that were not yet
acknowledged (the server drops a re-send it already has, by the client id ``cid``). Events
(validated server messages plus local ``status`` events) come out of :meth:`Client.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatscreen.client.link import FINAL_CODES, Link, TLSOptions, describe_os_error
from chatscreen.client.screen import ScreenChannel
from chatscreen.errors import ConnectError, InvalidInput, RemoteProtocolError, ServerError
from chatscreen.protocol import Limits, Message
from chatscreen.protocol.binform import BIN_VERSION
from chatscreen.protocol.deflate import DEFLATE_VERSION
from chatscreen.protocol.schema import text as check_text_field
from chatscreen.tls import KnownHosts, parse_fingerprint

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 15.0
# s: a connection that lasted this long was a good one: the next reconnect starts again from
# BACKOFF_FIRST; so does one the network cut after it brought answers or news (a flaky link).
# One closed sooner having brought nothing, or by the server (cut off right after login, say),
# keeps the backoff growing.
STABLE_AFTER = 10.0
PRIVATE_CATCH_UP = "catch-up@"  # rid of the history requests that fetch missed private messages


@dataclass
class _Outgoing:
    kind: str  # "say" or "pm"
    fields: dict[str, Any]
    future: asyncio.Future[Message]


def marker_key(*, room: str | None = None, peer: str | None = None) -> str:
    """How a read marker is filed: "#room" or "@peer", casefolded."""
    return f"#{room.casefold()}" if room is not None else f"@{(peer or '').casefold()}"


def status(state: str, reason: str | None = None, retry_in: float | None = None,
           backoff: float | None = None) -> Message:
    """A local event (never on the wire): connecting, connected, reconnecting, disconnected
    (reconnecting: in ``retry_in`` s, drawn from [0, ``backoff``])."""
    fields: dict[str, Any] = {"state": state}
    if reason is not None:
        fields["reason"] = reason
    if retry_in is not None:
        fields["retry_in"] = retry_in
    if backoff is not None:
        fields["backoff"] = backoff
    return Message("status", fields)


class Client:
    def __init__(self, host: str, user: str, *, chat_port: int = 9999, screen_port: int = 9998,
                 reconnect: bool = True, timeout: float = 10.0, tls: bool = True,
                 ca: Path | None = None, known_hosts: KnownHosts | None = None,
                 password: str | None = None, server_password: str | None = None,
                 fingerprint: str | None = None) -> None:
        """``fingerprint``: the server certificate's (``SHA256:...``, from the server's
        banner or ``chatscreen admin invite``), checked even on first contact."""
        self.host = host
        self.user = user
        # Sent in every hello (reconnects too); never logged or shown.
        self._password = password
        self._server_password = server_password
        self.role: str | None = None  # admin, moderator, member; None: a guest
        self.chat_port = chat_port
        self.screen_port = screen_port
        self.reconnect = reconnect
        self.timeout = timeout
        self.tls = TLSOptions(ca, known_hosts or KnownHosts(),
                              parse_fingerprint(fingerprint) if fingerprint else None
                              ) if tls else None
        self.token: str | None = None
        # Our own secret, sent with every hello: it lets a reconnect take over our previous
        # session before the server has noticed it died, even if we never saw its welcome.
        self._resume_secret = secrets.token_urlsafe(24)
        self.shares: list[dict[str, Any]] = []
        self.default_room = "general"  # until the server's welcome says otherwise
        self.rooms: set[str] = set()
        # A registered account's rooms, as the server keeps them (told in its welcome, and
        # joined again at every login); None for a guest, whose rooms are this client's.
        self.server_rooms: list[str] | None = None
        self.read_markers: dict[str, int] = {}  # marker_key -> last message id read there
        self.invitations: dict[str, str | None] = {}  # private room -> who invited us (if told)
        self.last_id: dict[str, int] = {}  # room (or "@" for private) -> last message id seen
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._link: Link | None = None
        self._outgoing: dict[str, _Outgoing] = {}
        self._waiters: dict[str, asyncio.Future[Message]] = {}
        self._rids = itertools.count(1)
        # one stream of client ids, STREAM-N: the server de-duplicates re-sends exactly
        stream = secrets.token_hex(4)
        self._cids = (f"{stream}-{n}" for n in itertools.count(1))
        self._closing = False
        self._connected = asyncio.Event()
        self._gave_up = asyncio.Event()  # closed, or a reconnect that cannot succeed
        self._shares_changed = asyncio.Event()  # set (and replaced) on every share list
        self._reconnector: asyncio.Task[None] | None = None
        self._backoff = BACKOFF_FIRST  # the next reconnect's delay, before jitter
        self._opened_at = 0.0  # loop time of the last login
        self._progress = False  # the connection brought more than its login: answers, news
        self.limits = Limits()  # until the server's welcome says otherwise
        self.rtt: float | None = None

    # -- connection --------------------------------------------------------------------

    async def connect(self) -> Client:
        """Log in; raises ConnectError with a message meant for the user."""
        self._emit(status("connecting"))
        try:
            await self._open()
        except ConnectError as exc:
            self._emit(status("disconnected", str(exc)))
            raise
        with contextlib.suppress(ConnectionResetError):
            self._join_all()  # an account's rooms, from the server
        return self

    async def _open(self) -> None:
        link = await Link.open(self.host, self.chat_port, self.timeout, self.tls,
                               user=self.user, resume=self._resume_secret,
                               password=self._password,
                               server_password=self._server_password)
        if link.pinned_now:
            checked = self.tls is not None and self.tls.fingerprint is not None
            self._emit(Message("tls", {"where": f"{self.host}:{self.chat_port}",
                                       "fingerprint": link.fingerprint, "pinned": True,
                                       "checked": checked}))
        self._link = link
        self.shares = []  # the server sends the current list next: none of the old ids hold
        self.token = link.welcome["token"]
        self.user = link.welcome["user"]
        self.default_room = link.welcome["room"]
        self.role = link.welcome.get("role")
        max_text = link.welcome.get("limits", {}).get("max_text")
        if max_text:
            self.limits = Limits(max_text=max_text)
        self._opened_at = asyncio.get_running_loop().time()
        self._progress = False
        self._take_state(link.welcome)
        self._connected.set()
        link.start(self._on_message, lambda reason: self._on_close(link, reason))
        self._emit(status("connected"))

    def _take_state(self, welcome: Message) -> None:
        """The user's state the server keeps: an account's rooms (the source of what we
        join again), read markers (they only move forward), pending invitations."""
        rooms = welcome.get("rooms")
        if rooms is not None:
            self.server_rooms = list(rooms)
            self.rooms = set(rooms)
        for m in welcome.get("read") or ():
            key = marker_key(room=m.get("room"), peer=m.get("peer"))
            self.read_markers[key] = max(self.read_markers.get(key, 0), m["id"])
        self.invitations = {r: self.invitations.get(r) for r in welcome.get("invitations") or ()}

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until logged in (again, after a reconnect); False if this client will not
        be: it was closed, it does not reconnect, or the server refused it for good.
        TimeoutError after ``timeout`` seconds."""
        if self._connected.is_set():
            return True
        if self._gave_up.is_set() or not self.reconnect:
            return False
        back = asyncio.ensure_future(self._connected.wait())
        gone = asyncio.ensure_future(self._gave_up.wait())
        try:
            done, _ = await asyncio.wait({back, gone}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise TimeoutError("not connected in time")
        finally:
            back.cancel()
            gone.cancel()
        return self._connected.is_set()

    async def wait_share(self, user: str, timeout: float) -> dict[str, Any]:
        """The share of ``user`` once the server lists it; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while (share := self.share_of(user)) is None:
                await self._shares_changed.wait()
        return share

    async def close(self) -> None:
        self._closing = True
        self._gave_up.set()
        if self._reconnector is not None:
            self._reconnector.cancel()
        if self._link is not None:
            await self._link.close()
        self._fail_all(ConnectionResetError("client closed"))

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_close(self, link: Link, reason: BaseException | None) -> None:
        if link is not self._link:
            return
        self._connected.clear()
        text = reason.message if isinstance(reason, ServerError) else (
            describe_os_error(reason) if reason else "closed")
        final = isinstance(reason, ServerError) and reason.code in FINAL_CODES
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError(text))
        self._waiters.clear()
        if self._closing or not self.reconnect or final:
            self._gave_up.set()
            self._fail_all(ConnectionResetError(text))
            self._emit(status("disconnected", text))
            return
        lived = asyncio.get_running_loop().time() - self._opened_at
        if lived >= STABLE_AFTER or (self._progress and not isinstance(reason, ServerError)):
            self._backoff = BACKOFF_FIRST
        self._reconnector = asyncio.create_task(self._reconnect_loop(text))

    async def _reconnect_loop(self, reason: str) -> None:
        while not self._closing:
            delay, self._backoff = self._backoff, min(self._backoff * 2, BACKOFF_MAX)
            # Full jitter: when a server restarts, all its clients lose it at once; a wait
            # drawn from [0, delay] spreads their attempts over the whole window (the first
            # ones at once) instead of bunching them around the same moment.
            wait = random.uniform(0, delay)
            self._emit(status("reconnecting", reason, retry_in=round(wait, 1), backoff=delay))
            await asyncio.sleep(wait)
            try:
                await self._open()
            except ConnectError as exc:
                reason = str(exc)
                cause = exc.__cause__
                if isinstance(cause, ServerError) and cause.code in FINAL_CODES:
                    self._gave_up.set()
                    self._fail_all(ConnectionResetError(reason))
                    self._emit(status("disconnected", reason))
                    return
                continue
            await self._resume()
            return

    async def _resume(self) -> None:
        """After a reconnect: re-join rooms from the last ids seen, then re-send. If the new
        connection drops meanwhile, its close starts the next reconnect."""
        with contextlib.suppress(ConnectionResetError):
            self._resend()

    def _join_all(self) -> None:
        """Join our rooms again, each from the last message id seen there."""
        link = self._link
        assert link is not None
        for room in sorted(self.rooms):
            after = self.last_id.get(room)
            fields: dict[str, Any] = {"room": room}
            if after is not None:
                fields["after"] = after
            link.send("join", **fields)

    def _resend(self) -> None:
        link = self._link
        assert link is not None
        self._join_all()
        if "@" in self.last_id:
            self._catch_up_private()
        for out in list(self._outgoing.values()):
            link.send(out.kind, **out.fields)

    def _catch_up_private(self) -> None:
        """Ask for the private messages after the last one seen; the answer asks again while
        the server says there are more (see _on_message)."""
        if self._link is not None:
            self._link.send("history", peer=self.user, after=self.last_id["@"], limit=1000,
                            rid=PRIVATE_CATCH_UP)

    def _fail_all(self, exc: BaseException) -> None:
        for out in self._outgoing.values():
            if not out.future.done():
                out.future.set_exception(exc)
        self._outgoing.clear()

    # -- events ------------------------------------------------------------------------

    def _emit(self, msg: Message) -> None:
        self._events.put_nowait(msg)

    async def events(self) -> AsyncIterator[Message]:
        while True:
            yield await self._events.get()

    async def next_event(self, timeout: float | None = None) -> Message:
        return await asyncio.wait_for(self._events.get(), timeout)

    def _seen(self, where: str, msg_id: int) -> bool:
        """Record a message id; True if we already had it (a duplicate)."""
        last = self.last_id.get(where, 0)
        if msg_id <= last:
            return True
        self.last_id[where] = msg_id
        return False

    def _on_message(self, msg: Message) -> None:
        kind = msg.type
        if kind not in ("shares", "error"):  # an answer, news: not only the login's
            self._progress = True
        answer = msg  # what a waiting request gets: the whole answer
        if kind == "message":
            where = msg.get("room") or "@"
            self._ack(msg.fields, msg)
            if self._seen(where, msg["id"]):
                return
        elif kind == "history":
            where = "@" if "peer" in msg.fields else msg["room"]
            for m in msg["messages"]:
                # our own message whose echo was lost with a connection comes back this way
                self._ack(m, Message("message", m))
            fresh = [m for m in msg["messages"] if m["id"] > self.last_id.get(where, 0)]
            if fresh:
                self.last_id[where] = fresh[-1]["id"]
                if msg.get("rid") == PRIVATE_CATCH_UP and msg["more"]:
                    with contextlib.suppress(ConnectionResetError):
                        self._catch_up_private()
            msg = Message("history", {**msg.fields, "messages": fresh})
        elif kind == "shares":
            self.shares = msg["shares"]
            changed, self._shares_changed = self._shares_changed, asyncio.Event()
            changed.set()
        elif kind == "joined":
            self.rooms.add(msg["room"])
            self.invitations.pop(msg["room"], None)
        elif kind == "left":
            self.rooms.discard(msg["room"])
            self.read_markers.pop(marker_key(room=msg["room"]), None)
        elif kind == "read":
            key = marker_key(room=msg.get("room"), peer=msg.get("peer"))
            self.read_markers[key] = max(self.read_markers.get(key, 0), msg["id"])
        elif kind == "invited" and msg.get("by") is not None and msg["room"] not in self.rooms:
            self.invitations[msg["room"]] = msg["by"]  # we are invited (not the inviter)
        elif kind == "declined":
            self.invitations.pop(msg["room"], None)
        elif kind == "error":
            cid = msg.get("cid")
            out = self._outgoing.pop(cid, None) if cid else None
            if out is not None and not out.future.done():
                out.future.set_exception(ServerError(msg["code"], msg["message"]))
        rid = msg.get("rid") if kind != "pong" else str(msg.get("n"))
        if rid is not None:
            fut = self._waiters.pop(rid, None)
            if fut is not None and not fut.done():
                if kind == "error":
                    fut.set_exception(ServerError(msg["code"], msg["message"]))
                else:
                    fut.set_result(answer)
        self._emit(msg)  # events carry only what this client has not seen yet

    def _ack(self, fields: dict[str, Any], msg: Message) -> None:
        """Resolve the future of our own message ``fields``, if it is one we wait for."""
        cid = fields.get("cid")
        if cid is not None and fields["user"].casefold() == self.user.casefold():
            out = self._outgoing.pop(cid, None)
            if out is not None and not out.future.done():
                out.future.set_result(msg)
                self._progress = True

    # -- request/response matching: every request carries a fresh "rid" -----------------

    async def _request(self, type_: str, **fields: Any) -> Message:
        rid = str(next(self._rids))
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        try:
            if type_ == "ping":
                self._send("ping", n=int(rid))
            else:
                self._send(type_, rid=rid, **fields)
            return await asyncio.wait_for(fut, self.timeout)
        finally:
            self._waiters.pop(rid, None)

    def _send(self, type_: str, **fields: Any) -> None:
        if self._link is None or not self.connected:
            raise ConnectionResetError("not connected")
        self._link.send(type_, **fields)

    # -- chat API ----------------------------------------------------------------------

    async def join(self, room: str, *, after: int | None = None) -> list[str]:
        """Join (or create) a room; returns its users. History arrives as a ``history`` event."""
        fields: dict[str, Any] = {"room": room}
        if after is not None:
            fields["after"] = after
        msg = await self._request("join", **fields)
        return list(msg["users"])

    async def create_room(self, room: str, *, private: bool = False) -> None:
        """Create a room and join it; a private one admits only those invited."""
        await self._request("create", room=room, **({"private": True} if private else {}))

    async def invite(self, room: str, user: str) -> None:
        await self._request("invite", room=room, user=user)

    async def decline(self, room: str) -> None:
        """Turn down an invitation to a private room: it is not offered again."""
        await self._request("decline", room=room)

    async def mark_read(self, *, room: str | None = None, peer: str | None = None,
                        id: int) -> int:
        """We have read up to message ``id`` in ``room`` or with ``peer``: the server keeps
        it for the account (every client of it then counts as read what is up to it).
        Markers only move forward; returns the marker as it stands."""
        key = marker_key(room=room, peer=peer)
        if id <= self.read_markers.get(key, 0):
            return self.read_markers[key]
        self.read_markers[key] = id
        where = {"room": room} if room is not None else {"peer": peer}
        return int((await self._request("read", id=id, **where))["id"])

    async def leave(self, room: str) -> None:
        await self._request("leave", room=room)

    async def who(self, room: str) -> list[str]:
        return list((await self._request("who", room=room))["users"])

    async def list_rooms(self) -> list[dict[str, Any]]:
        """Every room we may enter (asked for a page at a time)."""
        rooms: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = await self.rooms_page(after=after)
            rooms += page["rooms"]
            if not page.get("more") or not page["rooms"]:
                return rooms
            after = page["rooms"][-1]["name"]

    async def rooms_page(self, *, after: str | None = None, limit: int | None = None) -> Message:
        """One ``rooms`` answer: at most ``limit`` rooms (the server's page: 1000) named
        after ``after``, and ``more``."""
        fields = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
        return await self._request("rooms", **fields)

    async def history(self, *, room: str | None = None, peer: str | None = None,
                      before: int | None = None, after: int | None = None,
                      limit: int | None = None) -> Message:
        fields = {k: v for k, v in (("room", room), ("peer", peer), ("before", before),
                                     ("after", after), ("limit", limit)) if v is not None}
        return await self._request("history", **fields)

    def say_nowait(self, room: str, text: str) -> asyncio.Future[Message]:
        """Send a message; the future resolves with the server's copy once it is stored.
        If the connection drops first, it is re-sent after reconnecting. Raises InvalidInput
        at once, sending nothing, for a text the server would refuse."""
        return self._post("say", room=room, text=text)

    async def say(self, room: str, text: str) -> Message:
        return await self.say_nowait(room, text)

    async def pm(self, to: str, text: str) -> Message:
        return await self._post("pm", to=to, text=text)

    def check_text(self, text: str) -> None:
        """Raise InvalidInput if the server would refuse this text (too long, empty, control
        characters): e.g. "message too long: 4100 characters, at most 4000"."""
        try:
            check_text_field(text, self.limits)
        except RemoteProtocolError as exc:
            raise InvalidInput(exc.message) from None

    def _post(self, kind: str, **fields: Any) -> asyncio.Future[Message]:
        """Send a say or pm; InvalidInput (nothing sent) if the server would refuse its text.
        One the server refuses is dropped from the re-send queue: never sent again."""
        self.check_text(fields["text"])
        cid = next(self._cids)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        out = _Outgoing(kind, {**fields, "cid": cid}, fut)
        self._outgoing[cid] = out
        if self.connected:
            with contextlib.suppress(ConnectionResetError):
                self._send(kind, **out.fields)
        elif self._closing or (self._reconnector is None and self._link is None):
            del self._outgoing[cid]
            fut.set_exception(ConnectionResetError("not connected"))
        return fut

    async def register(self, password: str) -> None:
        """Own our name: from now on only this password logs in as it."""
        msg = await self._request("register", password=password)
        self._password = password  # for reconnecting
        self.role = msg["role"]

    async def moderate(self, action: str, target: str | None = None, *,
                       address: str | None = None, duration: int | None = None,
                       reason: str | None = None, role: str | None = None) -> None:
        """kick, mute, unmute, ban, unban (a user, or an ``address``) or role (admins).
        ``duration`` in seconds (mute, ban); none: for ever."""
        fields = {k: v for k, v in (("target", target), ("address", address),
                                     ("duration", duration), ("reason", reason),
                                     ("role", role)) if v is not None}
        await self._request("moderate", action=action, **fields)

    async def typing(self, active: bool, *, room: str | None = None,
                     to: str | None = None) -> None:
        self._send("typing", active=active, **({"room": room} if room else {"to": to}))

    async def ping(self) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._request("ping")
        self.rtt = loop.time() - start
        return self.rtt

    # -- screen ------------------------------------------------------------------------

    async def open_screen(self, *, binary: bool = True, deflate: bool = True) -> ScreenChannel:
        """The screen connection; ``binary``: ask for the binary form of frames (the
        channel uses it if the server agrees, see protocol.binform); ``deflate`` (with
        ``binary``): and for deflated frames from the server (protocol.deflate)."""
        if self.token is None:
            raise ConnectionResetError("log in first")
        link = await Link.open(self.host, self.screen_port, self.timeout, self.tls,
                               token=self.token, bin=BIN_VERSION if binary else None,
                               deflate=DEFLATE_VERSION if binary and deflate else None)
        return ScreenChannel(link)

    def share_of(self, user: str) -> dict[str, Any] | None:
        return next((s for s in self.shares if s["user"].casefold() == user.casefold()), None)
