"""The screen connection of a logged-in client: share frames, or watch shares."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chatscreen.client.link import Link
from chatscreen.errors import ServerError
from chatscreen.protocol import Message
from chatscreen.protocol.schema import MAX_RECTS, max_frame_tiles, rect_tiles
from chatscreen.screen.cursor import Cursor, CursorError, Shape

MAX_QUEUED_DELTAS = 64  # frames queued for the application before deltas are merged
DEFAULT_LOW_RATE = 300_000  # bytes/s of a low layer asked for without a rate


@dataclass(frozen=True, slots=True)
class OutRect:
    x: int
    y: int
    w: int
    h: int
    enc: str
    data: bytes
    layer: str | None = None  # simulcast: "full" or "low" (that quality layer only); None: both


def frame_parts(w: int, h: int, rects: Sequence[OutRect]) -> list[Sequence[OutRect]]:
    """The rects of one update, in order, cut in frames the server takes: at most MAX_RECTS
    rects and max_frame_tiles tiles each."""
    parts: list[Sequence[OutRect]] = []
    most, start, tiles = max_frame_tiles(w, h), 0, 0
    for i, r in enumerate(rects):
        n = rect_tiles(r.x, r.y, r.w, r.h, r.enc)
        if i > start and (i - start == MAX_RECTS or tiles + n > most):
            parts.append(rects[start:i])
            start, tiles = i, 0
        tiles += n
    parts.append(rects[start:])
    return parts


def merge_frames(older: Message, newer: Message) -> Message:
    """One frame with the effect of ``older`` then ``newer`` (a delta of the same share and
    size): the rectangles of both in order, less those of ``older`` that a rectangle of
    ``newer`` covers entirely. No picture is decoded. A ``copy`` reads what the rects before
    it drew, so none is dropped when a copy comes after it."""
    kept: list[Any] = []
    parts: list[bytes] = []
    offset = 0
    copies = [i for i, r in enumerate(older["rects"]) if r.enc == "copy"]
    last_copy = copies[-1] if copies else -1
    if any(n.enc == "copy" for n in newer["rects"]):
        last_copy = len(older["rects"])
    for i, r in enumerate(older["rects"]):
        # an h264 picture is never dropped: the P-frames after it refer to it; nor is what
        # a copy (older, or in the newer frame) reads from
        if r.enc == "h264" or i < last_copy or not any(
                n.x <= r.x and n.y <= r.y and n.x + n.w >= r.x + r.w and n.y + n.h >= r.y + r.h
                for n in newer["rects"]):
            kept.append(r)
            parts.append(older.payload[offset : offset + r.len])
        offset += r.len
    fields = {**older.fields, "seq": newer["seq"], "rects": (*kept, *newer["rects"])}
    return Message("frame", fields, b"".join([*parts, newer.payload]))


class ScreenChannel:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.share_id: int | None = None
        self.key_requested = asyncio.Event()
        self.idr_requested = asyncio.Event()  # need_idr: restart H.264 streams with an IDR
        self.viewers: list[str] = []  # who watches our share, as the server last said
        self.recorders: list[str] = []  # who records our share, as the server last said
        self.on_recording: Callable[[list[str]], None] | None = None  # called when it changes
        # simulcast: the byte rate the relay asked our low quality layer to keep to, while it
        # wants one (only asked of a share made with layers=2)
        self.low_rate: int | None = None
        # Newest wins here too: a key frame (a complete picture) replaces whatever the
        # application has not taken yet; deltas queue behind their key frame, and when the
        # application falls behind they are merged into the last queued frame (a rect that
        # a newer one covers entirely is dropped), so it still gets every change.
        self._frames: deque[Message] = deque()
        # the sharer's mouse pointer per watched share (kept here, newest wins); with
        # cursor_messages, the "cursor" messages are also queued with the frames
        self.cursors: dict[int, Cursor] = {}
        self.cursor_messages = False
        self.cursor_changed = asyncio.Event()  # set at each pointer update (clear to wait)
        self._frame_ready = asyncio.Event()
        self._replies: asyncio.Queue[Message] = asyncio.Queue()
        self._seq = 0
        self._rids = 0
        self.closed = link.closed
        link.start(self._on_message, self._on_close)

    def _on_message(self, msg: Message) -> None:
        if msg.type == "frame":
            if msg["key"]:
                self._frames.clear()
            elif len(self._frames) >= MAX_QUEUED_DELTAS:
                last = self._frames[-1]
                if (last.type == "frame" and last["share"] == msg["share"]
                        and (last["w"], last["h"]) == (msg["w"], msg["h"])):
                    self._frames[-1] = merge_frames(last, msg)
                    return
            self._frames.append(msg)
            self._frame_ready.set()
        elif msg.type == "unshared":
            # the end of a watched share travels with its frames, so a watcher sees it
            self._frames.append(msg)
            self._frame_ready.set()
        elif msg.type == "cursor":
            if self._on_cursor(msg) and self.cursor_messages:
                self._frames.append(msg)
                self._frame_ready.set()
        elif msg.type == "need_key":
            self.key_requested.set()
        elif msg.type == "need_idr":
            self.idr_requested.set()
        elif msg.type == "low_layer":
            self.low_rate = (msg.get("rate") or DEFAULT_LOW_RATE) if msg["on"] else None
        elif msg.type == "viewers":
            self.viewers = list(msg["users"])
        elif msg.type == "recording" and "rid" not in msg.fields:  # the answer has a rid
            self.recorders = list(msg["users"])
            if self.on_recording is not None:
                self.on_recording(self.recorders)
        else:
            self._replies.put_nowait(msg)

    def _on_cursor(self, msg: Message) -> bool:
        """Keep a share's pointer; False if its picture is bad or still unknown."""
        old = self.cursors.get(msg["share"])
        shape = old.shape if old is not None else None
        if "w" in msg.fields:
            try:
                shape = Shape.decode(msg.payload, msg["w"], msg["h"])
            except CursorError:
                return False
        if shape is None:
            return False
        self.cursors[msg["share"]] = Cursor(msg["x"], msg["y"], shape)
        self.cursor_changed.set()
        return True

    def _on_close(self, reason: BaseException | None) -> None:
        self._replies.put_nowait(Message("closed", {"reason": str(reason or "closed")}))

    async def _reply(self, *types: str) -> Message:
        while True:
            msg = await asyncio.wait_for(self._replies.get(), 10)
            if msg.type in types:
                return msg
            if msg.type == "error":
                raise ServerError(msg["code"], msg["message"])
            if msg.type == "closed":
                raise ConnectionResetError(msg["reason"])

    # -- sharing -----------------------------------------------------------------------

    async def share(self, w: int, h: int, *, viewers: Sequence[str] | None = None,
                    room: str | None = None, layers: int = 1,
                    may_record: str | Sequence[str] | None = None) -> int:
        """Start sharing (or change size or audience): only ``viewers``, or only the members
        of ``room``, may watch; anyone when neither is given. ``self.viewers`` then follows
        who is watching. ``layers=2``: we can send a low quality layer when the relay asks
        (``self.low_rate``). ``may_record``: ``"all"`` or the names who may record it
        besides us (default: nobody); ``self.recorders`` follows who records it."""
        fields: dict[str, Any] = {"w": w, "h": h}
        if may_record is not None:
            fields["may_record"] = may_record if may_record == "all" else list(may_record)
        if layers > 1:
            fields["layers"] = layers
        if viewers is not None:
            fields["viewers"] = list(viewers)
        if room is not None:
            fields["room"] = room
        self.link.send("share", **fields)
        msg = await self._reply("shared")
        self.share_id = int(msg["share"])
        return self.share_id

    async def send_frame(self, w: int, h: int, rects: Sequence[OutRect], *, key: bool) -> None:
        """Send one frame (several if it has more than MAX_RECTS rects, only the first a key
        frame) and wait until the socket can take more (so that the caller captures the next
        picture only then: newest wins, no backlog at the sharer)."""
        if key:
            self.key_requested.clear()
        for i, part in enumerate(frame_parts(w, h, rects)):
            self._send_part(w, h, part, key and i == 0)
        await self.link.drain()

    def _send_part(self, w: int, h: int, rects: Sequence[OutRect], key: bool) -> None:
        self._seq += 1
        header_rects = [{"x": r.x, "y": r.y, "w": r.w, "h": r.h, "enc": r.enc,
                         "len": len(r.data)} if r.layer is None else
                        {"x": r.x, "y": r.y, "w": r.w, "h": r.h, "enc": r.enc,
                         "len": len(r.data), "layer": r.layer} for r in rects]
        payload = b"".join(r.data for r in rects)
        self.link.send_with_payload("frame", payload, seq=self._seq, w=w, h=h, key=key,
                                    rects=header_rects)

    async def send_cursor(self, cursor: Cursor, with_shape: bool) -> None:
        """Tell the viewers where the pointer is (and, ``with_shape``, its picture)."""
        if with_shape and cursor.shape is not None:
            s = cursor.shape
            self.link.send_with_payload("cursor", s.encode(), x=cursor.x, y=cursor.y, w=s.w,
                                        h=s.h)
        else:
            self.link.send("cursor", x=cursor.x, y=cursor.y)
        await self.link.drain()

    async def unshare(self) -> None:
        self.link.send("unshare")
        self.share_id = None

    # -- watching ----------------------------------------------------------------------

    async def watch(self, share_id: int) -> None:
        self.link.send("watch", share=share_id)

    async def unwatch(self, share_id: int) -> None:
        self.link.send("unwatch", share=share_id)

    async def record(self, share_id: int, active: bool = True) -> list[str]:
        """Tell the server we record the share we watch (or stopped): its sharer is told.
        Returns who records it now; ServerError (``forbidden``) if the sharer does not allow
        us (watch it first)."""
        self._rids += 1
        self.link.send("record", share=share_id, active=active, rid=f"record-{self._rids}")
        msg = await self._reply("recording")
        return list(msg["users"])

    async def next_frame(self, timeout: float | None = None) -> Message:
        """The next ``frame`` to apply, in order, or ``unshared`` when a watched share ended;
        raises TimeoutError or ConnectionResetError."""
        async with asyncio.timeout(timeout):
            while not self._frames:
                if self.link.closed.is_set():
                    raise ConnectionResetError(
                        str(self.link.close_reason or "screen connection closed"))
                self._frame_ready.clear()
                ready = asyncio.ensure_future(self._frame_ready.wait())
                closed = asyncio.ensure_future(self.link.closed.wait())
                try:
                    await asyncio.wait({ready, closed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ready.cancel()
                    closed.cancel()
            return self._frames.popleft()

    def errors(self) -> list[Message]:
        out = []
        while not self._replies.empty():
            out.append(self._replies.get_nowait())
        return out

    async def close(self) -> None:
        await self.link.close()
