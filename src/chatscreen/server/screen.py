"""The screen relay: shares, viewers and newest-wins fan-out.

A sharer's frame is validated, re-headed once with its share id and kept as bytes; the same
bytes go to every viewer. Nothing here ever waits for a viewer. Each viewer has a pending
list per share it watches: a key frame (a complete picture) replaces the list, a delta frame
(changed rectangles) is appended to it. A viewer whose connection is writable gets its pending
frames at once; one whose connection is full (paused by the transport's high-water mark) gets
them when it drains, by then only the newest picture. If a viewer's deltas pile up past
``VIEWER_BACKLOG`` they are dropped and the sharer is asked for a key frame (``need_key``).

Each share also keeps its latest key frame plus the deltas since, so that a viewer who starts
watching mid-stream gets a complete picture at once.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol import Message, encode_frame
from chatscreen.server.metrics import Counters

if TYPE_CHECKING:
    from chatscreen.server.chat import ChatService
    from chatscreen.server.peer import Peer

log = logging.getLogger("chatscreen.screen")

VIEWER_BACKLOG = 16 << 20  # bytes of deltas a viewer may have pending before we resync it
SHARE_BACKLOG = 64 << 20  # bytes of deltas kept after a share's key frame
NEED_KEY_INTERVAL = 0.5  # seconds between key frame requests to one sharer


@dataclass(eq=False)
class Pending:
    frames: list[bytes] = field(default_factory=list)
    size: int = 0
    needs_key: bool = False

    def replace(self, data: bytes) -> None:
        self.frames = [data]
        self.size = len(data)
        self.needs_key = False

    def append(self, data: bytes) -> None:
        self.frames.append(data)
        self.size += len(data)


@dataclass(eq=False)
class Share:
    id: int
    sharer: Peer
    w: int
    h: int
    current: Pending = field(default_factory=Pending)  # last key frame + deltas since
    viewers: dict[Peer, Pending] = field(default_factory=dict)
    frames_in: int = 0
    last_need_key: float = 0.0

    @property
    def user(self) -> str:
        assert self.sharer.session is not None
        return self.sharer.session.name

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "w": self.w, "h": self.h}


class ScreenRelay:
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat
        self.shares: dict[int, Share] = {}
        self._by_sharer: dict[Peer, Share] = {}
        self._watching: dict[Peer, set[Share]] = {}
        self._ids = itertools.count(1)
        self.counters = Counters()

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, peer: Peer, msg: Message) -> None:
        if msg.type == "hello":
            self._hello(peer, msg)
        elif msg.type == "frame":
            self._frame(peer, msg)
        elif msg.type == "share":
            self._share(peer, msg)
        elif msg.type == "unshare":
            self._unshare(peer)
        elif msg.type == "watch":
            self._watch(peer, msg)
        elif msg.type == "unwatch":
            self._unwatch(peer, msg["share"])
        else:
            raise RemoteProtocolError(ErrorCode.UNEXPECTED, f"{msg.type} is not a screen request")

    def _hello(self, peer: Peer, msg: Message) -> None:
        session = self.chat.tokens.get(msg.get("token") or "")
        if session is None:
            peer.fail(ErrorCode.BAD_TOKEN, "log in on the chat port first and present its token")
            return
        peer.session = session
        session.screens.add(peer)
        peer.accept(user=session.name, token=session.token, room="general",
                    heartbeat=self.chat.heartbeat)

    def on_lost(self, peer: Peer) -> None:
        if peer.session is not None:
            peer.session.screens.discard(peer)
        self._unshare(peer, quiet=True)
        for share in self._watching.pop(peer, set()):
            share.viewers.pop(peer, None)

    # -- sharing -----------------------------------------------------------------------

    def _share(self, peer: Peer, msg: Message) -> None:
        share = self._by_sharer.get(peer)
        if share is None:
            share = Share(next(self._ids), peer, msg["w"], msg["h"])
            self.shares[share.id] = share
            self._by_sharer[peer] = share
            log.info("%s started sharing %dx%d as share %d", share.user, share.w, share.h, share.id)
        else:
            share.w, share.h = msg["w"], msg["h"]
        peer.send("shared", share=share.id)
        self._announce()

    def _unshare(self, peer: Peer, *, quiet: bool = False) -> None:
        share = self._by_sharer.pop(peer, None)
        if share is None:
            if not quiet:
                peer.error(ErrorCode.NOT_SHARING, "you are not sharing", re="unshare")
            return
        del self.shares[share.id]
        data = encode_frame({"type": "unshared", "share": share.id})
        for viewer in share.viewers:
            self._watching.get(viewer, set()).discard(share)
            viewer.send_bytes(data)
        log.info("%s stopped sharing (share %d)", share.user, share.id)
        self._announce()

    def _announce(self) -> None:
        self.chat.announce_shares([s.describe() for s in self.shares.values()])

    def _frame(self, peer: Peer, msg: Message) -> None:
        share = self._by_sharer.get(peer)
        if share is None:
            raise RemoteProtocolError(ErrorCode.NOT_SHARING, "send share before frames")
        key = msg["key"]
        if (msg["w"], msg["h"]) != (share.w, share.h):
            if not key:
                raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, "a new size needs a key frame")
            share.w, share.h = msg["w"], msg["h"]
            self._announce()
        if not key and not share.current.frames:
            self._ask_key(share)  # nothing to apply a delta to
            return
        header = {
            "type": "frame",
            "share": share.id,
            "seq": msg["seq"],
            "w": share.w,
            "h": share.h,
            "key": key,
            "rects": [
                {"x": r.x, "y": r.y, "w": r.w, "h": r.h, "enc": r.enc, "len": r.len}
                for r in msg["rects"]
            ],
        }
        data = encode_frame(header, msg.payload)  # encoded once, for every viewer
        share.frames_in += 1
        self.counters.screen_frames_in += 1
        self.counters.screen_bytes_in += len(msg.payload)
        if key:
            share.current.replace(data)
        else:
            share.current.append(data)
            if share.current.size > SHARE_BACKLOG:
                share.current = Pending()
                self._ask_key(share)
        for viewer, pending in share.viewers.items():
            if key:
                pending.replace(data)
            elif not pending.needs_key:
                pending.append(data)
                if pending.size > VIEWER_BACKLOG:
                    pending.frames, pending.size, pending.needs_key = [], 0, True
                    self._ask_key(share)
            if viewer.writable:
                self._flush(viewer)

    def _ask_key(self, share: Share) -> None:
        now = time.monotonic()
        if now - share.last_need_key >= NEED_KEY_INTERVAL:
            share.last_need_key = now
            share.sharer.send("need_key")

    # -- watching ----------------------------------------------------------------------

    def _watch(self, peer: Peer, msg: Message) -> None:
        share = self.shares.get(msg["share"])
        if share is None:
            peer.error(ErrorCode.NO_SUCH_SHARE, f"no share {msg['share']}", re="watch")
            return
        if peer not in share.viewers:
            pending = Pending(list(share.current.frames), share.current.size)
            share.viewers[peer] = pending
            self._watching.setdefault(peer, set()).add(share)
        if peer.writable:
            self._flush(peer)

    def _unwatch(self, peer: Peer, share_id: int) -> None:
        share = self.shares.get(share_id)
        if share is not None and share.viewers.pop(peer, None) is not None:
            self._watching.get(peer, set()).discard(share)

    def on_writable(self, peer: Peer) -> None:
        self._flush(peer)

    def _flush(self, viewer: Peer) -> None:
        for share in self._watching.get(viewer, ()):
            pending = share.viewers[viewer]
            if pending.frames:
                frames, pending.frames, pending.size = pending.frames, [], 0
                for data in frames:
                    viewer.send_bytes(data)
            if not viewer.writable:
                return  # the rest waits for resume_writing, by then newer
