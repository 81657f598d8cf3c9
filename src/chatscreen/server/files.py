"""Files in chat: uploads, downloads and who may have them (docs/protocol.md, "Files").

A transfer runs on a screen-port connection logged in with the chat session's token; the
screen relay hands this service the file requests (``upload``, ``chunk``, ``cancel``,
``download``). The result goes out on the chat port: a stored chat message of kind "file".

Upload: ``upload`` is checked (place, size, quota, uploads at once) before any byte, and
answered ``upload_ready`` with the offset to start from: 0, or where a dropped upload of
the same content by the same user to the same place stopped (its partial is kept
``file_partial_keep``). Chunks are taken in order only; each is queued for the upload's
writer task, which writes what is queued and feeds the SHA-256 on a thread (both release
the GIL), then acknowledges (``upload_progress``). The client keeps at most ``window``
bytes unacknowledged, so an upload holds at most that much memory here; one sending past
it is cut off. The upload budget (bytes a second per connection and per address, not the
screen's) is kept by holding acknowledgements back. Complete: the SHA-256 is checked, the
content stored under it (once, whoever sent it), sniffed and previewed, its row written,
and the message posted through the chat service's write path; ``uploaded`` answers after
the message is stored. Any failure drops what was half-made.

Download: a task reads the object on a thread, a chunk at a time, and sends it while the
connection takes it (it waits whenever the connection's send buffer is full).

Access: a room's file is for those who may read the room, a private one for its two
people; to anyone else a file does not exist (``no_such_file``, the same answer as for an
id that was never given out).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import logging
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from chatscreen.errors import ErrorCode, RequestError
from chatscreen.protocol import Message
from chatscreen.server import rooms as roomsvc
from chatscreen.server.filestore import LocalFileStore, create_private
from chatscreen.server.limits import TokenBucket
from chatscreen.server.metrics import Counters
from chatscreen.server.preview import SNIFF_BYTES, make_preview, sniff
from chatscreen.server.storage import FileRecord, SQLiteStore
from chatscreen.server.transfergate import TransferGate

if TYPE_CHECKING:
    from chatscreen.config import ServerSettings
    from chatscreen.server.chat import ChatService
    from chatscreen.server.peer import Peer
    from chatscreen.server.session import Session

log = logging.getLogger("chatscreen.files")
T = TypeVar("T")

CHUNK = 1 << 20  # largest chunk payload
WINDOW = 8 << 20  # bytes a client may send past the last acknowledged offset
DOWNLOADS_PER_CONNECTION = 4
PREVIEWS_AT_ONCE = 2  # pictures decoded at once, server-wide
THREADS = 4  # the file service's threads: disk, hashes, previews
HOUSEKEEPING = 60.0  # s between looks for expired files and partial uploads
FILE_REQUESTS = frozenset({"upload", "chunk", "cancel", "download", "file_info"})


@dataclass(eq=False)
class Upload:
    """An upload under way (or dropped, kept to be resumed)."""

    key: str  # its partial's name: a hash of who, where and what
    owner: str  # the uploader's key (casefolded name)
    name: str
    size: int
    sha256: str
    room: str | None
    to: str | None
    path: Path
    ip: str = ""  # the address it came from
    id: str = ""  # the id the client uses: new at each ``upload``
    rid: str | None = None
    peer: Peer | None = None  # the connection sending it; None: dropped
    session: Session[Peer] | None = None
    stored: int = 0  # bytes written
    received: int = 0  # bytes taken (written, or queued for the writer)
    acked: int = 0  # the offset last acknowledged (upload_ready, upload_progress)
    queue: list[bytes] = field(default_factory=list)
    hasher: Any = None  # hashlib's sha256 of the bytes written
    fd: int | None = None
    writer: asyncio.Task[None] | None = None
    touched: float = field(default_factory=time.time)
    finishing: bool = False


def place_text(room: str | None, to: str | None) -> str:
    return f"#{room}" if room is not None else f"@{to}"


def size_text(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class FileService:
    def __init__(self, settings: ServerSettings, chat: ChatService, store: SQLiteStore,
                 files: LocalFileStore | None = None) -> None:
        self.s = settings
        self.chat = chat
        self.db = store
        self.files = files or LocalFileStore(settings.data_dir / "files")
        self.uploads: dict[str, Upload] = {}  # by upload id (live ones)
        self.partials: dict[str, Upload] = {}  # by key: every upload kept, live or dropped
        self._downloads: dict[Peer, set[asyncio.Task[None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rates: dict[Peer, TokenBucket] = {}
        self._address_rates: dict[str, TokenBucket] = {}
        self._content_locks: dict[str, asyncio.Lock] = {}
        self._user_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # and its users
        self._previews = asyncio.Semaphore(PREVIEWS_AT_ONCE)
        self.gate = TransferGate()  # transfers take only the loop's idle time
        self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="files")
        self.counters = Counters()  # the server's (set by it)
        rooms = {r.strip() for r in settings.file_rooms.split(",") if r.strip()}
        self._all_rooms = "*" in rooms
        self._rooms = {r.casefold() for r in rooms}

    async def start(self) -> None:
        """After the chat service started (its newest message id is known)."""
        await self._off(self._prepare)
        # files whose message never got stored (the server stopped in between): nothing
        # refers to them, and a link to an id above the newest would meet a new message
        orphans = await self.db.files_where("message IS NULL OR message > ?",
                                            [self.chat.newest_id])
        await self.remove([r.id for r in orphans], {r.sha256 for r in orphans}, "orphaned")
        self._spawn(self._housekeeping())

    def _prepare(self) -> None:
        self.files.prepare()
        self._sweep_partials(set())

    def _sweep_partials(self, known: set[str]) -> None:
        """Partials on disk past file_partial_keep that no upload holds (left by an
        earlier server: until then they may be resumed) go (thread)."""
        cutoff = time.time() - self.s.file_partial_keep
        for entry in os.scandir(self.files.partial):
            with contextlib.suppress(OSError):
                if entry.name not in known and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)

    def stop(self) -> None:
        self.gate.stop()
        for task in list(self._tasks):
            task.cancel()
        for tasks in self._downloads.values():
            for task in tasks:
                task.cancel()
        for u in self.partials.values():
            if u.writer is not None:
                u.writer.cancel()
            self._close(u)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- dispatch (the screen relay hands these over) ----------------------------------

    def handle(self, peer: Peer, msg: Message) -> None:
        session = peer.session
        assert session is not None
        if msg.type == "chunk":
            self._chunk(peer, msg)
        elif msg.type == "upload":
            self._spawn(self._upload(peer, session, msg))
        elif msg.type == "cancel":
            self._cancel(peer, msg["upload"])
        elif msg.type == "download":
            self._download(peer, session, msg)
        elif msg.type == "file_info":
            self._spawn(self._file_info(peer, session, msg))

    def on_lost(self, peer: Peer) -> None:
        """The connection is gone: its uploads are kept to be resumed, its downloads end."""
        for u in [u for u in self.uploads.values() if u.peer is peer]:
            self._detach(u)
        for task in self._downloads.pop(peer, set()):
            task.cancel()
        self._rates.pop(peer, None)
        self.gate.discard(peer)

    def cut(self, key: str) -> None:
        """A user was banned: their transfers end now (their connections close too)."""
        for u in [u for u in self.partials.values() if u.owner == key]:
            self._spawn(self._drop(u))

    # -- uploads -----------------------------------------------------------------------

    async def _upload(self, peer: Peer, session: Session[Peer], msg: Message) -> None:
        rid = {"rid": msg["rid"]} if msg.get("rid") is not None else {}
        try:
            u = await self._begin(peer, session, msg)
        except RequestError as exc:
            peer.error(exc.code, exc.message, re="upload", **rid)
            return
        u.rid = msg.get("rid")
        u.acked = u.stored
        peer.send("upload_ready", upload=u.id, offset=u.stored, chunk=CHUNK, window=WINDOW,
                  **rid)
        if u.stored == u.size:  # nothing (more) to send: an empty file, or all there
            self._kick(u)

    def _refuse(self, code: ErrorCode, message: str) -> RequestError:
        return RequestError(code, message, "upload", {})

    async def _begin(self, peer: Peer, session: Session[Peer], msg: Message) -> Upload:
        room, to = self._place(session, msg)
        size: int = msg["size"]
        if size > self.s.max_file_size:
            raise self._refuse(ErrorCode.FILE_TOO_LARGE, f"the file has {size} bytes; this "
                               f"server takes files of at most {self.s.max_file_size} bytes")
        key = hashlib.sha256(
            f"{session.key}\0{place_text(room, to)}\0{msg['sha256']}\0{size}".encode()
        ).hexdigest()
        # one upload request of a user at a time: its checks and what it opens go together
        entry = self._user_locks.setdefault(session.key, (asyncio.Lock(), [0]))
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                return await self._admit(peer, session, msg, key, room, to)
        finally:
            users[0] -= 1
            if not users[0]:  # nobody holds or waits for it
                del self._user_locks[session.key]

    async def _admit(self, peer: Peer, session: Session[Peer], msg: Message, key: str,
                     room: str | None, to: str | None) -> Upload:
        size: int = msg["size"]
        old = self.partials.get(key)
        if old is not None and old.peer is not None:
            self._detach(old)  # the same upload again (a new connection): it takes over
        if old is not None and old.writer is not None:
            await asyncio.shield(old.writer)  # what the old connection sent is written first
        live = [u for u in self.uploads.values() if u.owner == session.key and u.key != key]
        if len(live) >= self.s.uploads_per_user:
            raise self._refuse(ErrorCode.LIMIT_REACHED, f"you have {len(live)} uploads under "
                               f"way; at most {self.s.uploads_per_user} at once")
        if sum(u.peer is peer for u in live) >= self.s.uploads_per_connection:
            raise self._refuse(ErrorCode.LIMIT_REACHED, "too many uploads on this connection "
                               f"(at most {self.s.uploads_per_connection} at once)")
        used = await self.db.files_used(session.key) + sum(
            u.size for u in self.partials.values() if u.owner == session.key and u.key != key)
        if used + size > self.s.file_quota:
            raise self._refuse(ErrorCode.QUOTA_EXCEEDED, f"your files take {used} bytes; with "
                               f"this one ({size}) that would pass your quota of "
                               f"{self.s.file_quota} bytes")
        # uploads under way from one address, whatever the names (guests come and go):
        # at most one quota, so that new names cannot fill the disk with partials
        pending = sum(u.size for u in self.partials.values()
                      if u.ip == peer.ip and u.key != key)
        if pending + size > self.s.file_quota:
            raise self._refuse(ErrorCode.QUOTA_EXCEEDED, f"uploads under way from your "
                               f"address take {pending} bytes; with this one ({size}) that "
                               f"would pass the quota of {self.s.file_quota} bytes")
        u = self.partials.get(key)
        if u is None:
            u = Upload(key, session.key, msg["name"], size, msg["sha256"], room, to,
                       self.files.partial_path(key), ip=peer.ip)
            try:
                await self._off(self._open_partial, u)
            except OSError as exc:
                log.error("cannot write %s: %s", u.path, exc)
                raise self._refuse(ErrorCode.INTERNAL, "the server cannot store files now"
                                   ) from None
            self.partials[key] = u
        u.name = msg["name"]  # (the same content, maybe under another name this time)
        u.id = secrets.token_urlsafe(16)
        u.peer, u.session, u.touched = peer, session, time.time()
        self.uploads[u.id] = u
        return u

    def _place(self, session: Session[Peer], msg: Message) -> tuple[str | None, str | None]:
        """Where the file goes, checked as a ``say`` or ``pm`` would be, and file_rooms."""
        if self.chat.binding("mute", session.key, session.role, session.chat.ip) is not None:
            raise self._refuse(ErrorCode.MUTED, "you are muted")
        if "to" in msg.fields:
            if not self._allowed("@"):
                raise self._refuse(ErrorCode.FORBIDDEN, "files may not be sent in private "
                                   "messages on this server")
            target = self.chat.sessions.get(msg["to"].casefold())
            if target is None:
                raise self._refuse(ErrorCode.NO_SUCH_USER, f"'{msg['to']}' is not connected")
            return None, target.name
        room = self.chat.find_room(msg["room"])
        if room is not None and not roomsvc.may_enter(self.chat, session, room):
            raise self._refuse(ErrorCode.FORBIDDEN, f"'{room}' is private: you need an "
                               "invitation")
        if room is None or room not in session.rooms:
            raise self._refuse(ErrorCode.NOT_IN_ROOM, f"join '{msg['room']}' before you post "
                               "files there")
        if not self._allowed(room):
            raise self._refuse(ErrorCode.FORBIDDEN, f"files may not be posted in #{room} on "
                               "this server")
        return room, None

    def _allowed(self, where: str) -> bool:
        return self._all_rooms or where.casefold() in self._rooms

    def _open_partial(self, u: Upload) -> None:
        """Open (or create, 0600) the partial; a partial left on disk by an earlier server
        is resumed: its bytes are hashed again (thread)."""
        u.fd = create_private(u.path)
        u.hasher = hashlib.sha256()
        have = os.fstat(u.fd).st_size
        if have > u.size:
            os.ftruncate(u.fd, 0)
            have = 0
        if have:
            with open(u.path, "rb") as f:
                while block := f.read(CHUNK):
                    u.hasher.update(block)
        os.lseek(u.fd, have, os.SEEK_SET)
        u.stored = u.received = have

    def _chunk(self, peer: Peer, msg: Message) -> None:
        u = self.uploads.get(msg["upload"])
        if u is None or u.peer is not peer or u.finishing:
            peer.error(ErrorCode.NO_SUCH_UPLOAD, "no such upload under way on this connection "
                       "(send upload again to resume)", re="chunk", upload=msg["upload"])
            return
        data = msg.payload
        n = len(data)
        self._refund(peer, n)  # chunks count against the upload budget, not the screen's
        if msg["offset"] != u.received:
            peer.error(ErrorCode.BAD_OFFSET, f"the stored bytes end at {u.received}, not at "
                       f"{msg['offset']}", re="chunk", upload=u.id, offset=u.received)
            return
        if n > CHUNK or u.received + n > u.size:
            raise RequestError(ErrorCode.BAD_MESSAGE, f"a chunk holds at most {CHUNK} bytes, "
                               f"and the file has {u.size}", "chunk", {})
        if u.received + n - u.acked > WINDOW:
            peer.fail(ErrorCode.BAD_MESSAGE, f"you sent more than the window ({WINDOW} bytes) "
                      "past the last acknowledged offset")
            return
        u.queue.append(data)
        u.received += n
        u.touched = time.time()
        self.gate.add(peer)
        self._kick(u)

    def _refund(self, peer: Peer, n: int) -> None:
        rates = peer.rates
        if rates is not None:
            rates.bytes.refund(n)
            if rates.address is not None:
                rates.address.refund(n)

    def _kick(self, u: Upload) -> None:
        if u.writer is None:
            u.writer = asyncio.create_task(self._write(u))

    async def _write(self, u: Upload) -> None:
        try:
            while u.queue:
                batch, u.queue = u.queue, []
                n = sum(map(len, batch))
                await self._off(_write_all, u.fd, u.hasher, batch)
                u.stored += n
                self.counters.file_bytes_in += n
                if u.peer is not None:
                    await self._pace(u.peer, n)
                if u.peer is not None and u.stored < u.size:
                    u.acked = u.stored
                    u.peer.send("upload_progress", upload=u.id, offset=u.stored)
        except OSError as exc:
            log.error("%s: writing an upload failed: %s", u.path, exc)
            if u.peer is not None:
                u.peer.error(ErrorCode.INTERNAL, "the server could not store your file",
                             re="chunk", upload=u.id)
            u.writer = None
            await self._drop(u)
            return
        finally:
            if asyncio.current_task() is u.writer:
                u.writer = None
        if u.stored == u.size and u.peer is not None and not u.finishing:
            u.finishing = True
            self._idle(u.peer)
            self._spawn(self._finish(u))

    def _idle(self, peer: Peer) -> None:
        """The link carries no upload any more: the gate lets it be."""
        if not any(u.peer is peer and not u.finishing for u in self.uploads.values()):
            self.gate.discard(peer)

    async def _pace(self, peer: Peer, n: int) -> None:
        """The upload budget: acknowledgements wait until the bytes fit in it."""
        now = asyncio.get_running_loop().time()
        bucket = self._rates.get(peer)
        if bucket is None:
            rate = self.s.upload_rate_bytes
            bucket = self._rates[peer] = TokenBucket(rate, max(rate, WINDOW), now)
        address = self._address_rates.get(peer.ip)
        if address is None:
            rate = self.s.upload_rate_bytes_per_address
            address = self._address_rates[peer.ip] = TokenBucket(rate, max(rate, WINDOW), now)
        wait = max(bucket.spend(n, now), address.spend(n, now))
        if wait > 0:
            await asyncio.sleep(wait)

    async def _finish(self, u: Upload) -> None:
        """All bytes are there: check, store, describe, post, answer."""
        peer, session = u.peer, u.session
        assert peer is not None and session is not None
        self._close(u)
        digest = u.hasher.hexdigest()
        if digest != u.sha256:
            peer.error(ErrorCode.BAD_CHECKSUM, f"the bytes received have SHA-256 {digest}, not "
                       f"{u.sha256}: nothing was stored", re="chunk", upload=u.id)
            await self._drop(u)
            return
        try:
            room, to = self._still_allowed(session, u)
            lock = self._content_locks.setdefault(u.sha256, asyncio.Lock())
            async with lock:
                rec = await self._store(u)
                info = rec.info()
                text = f"[file] {u.name} ({size_text(u.size)})"
                msg_id, done = self.chat.post_file(session, room=room, to=to, text=text,
                                                   info=info)
                try:
                    await done
                except Exception:
                    await self.db.files_gone([rec.id], "deleted")
                    await self._forget_content(u.sha256)
                    raise
        except RequestError as exc:
            peer.error(exc.code, exc.message, re="upload", upload=u.id)
            await self._drop(u)
            return
        except Exception:
            log.exception("%s: storing an upload failed", u.path)
            peer.error(ErrorCode.INTERNAL, "the server could not store your file",
                       re="upload", upload=u.id)
            await self._drop(u)
            return
        finally:
            lock_ = self._content_locks.get(u.sha256)
            if lock_ is not None and not lock_.locked():
                del self._content_locks[u.sha256]
        self._forget(u)
        rid = {"rid": u.rid} if u.rid is not None else {}
        peer.send("uploaded", upload=u.id, file=info, id=msg_id, **rid)
        log.info("%s posted %s (%d bytes, %s) to %s", session.name, rec.id, rec.size, rec.mime,
                 place_text(room, to))

    def _still_allowed(self, session: Session[Peer], u: Upload) -> tuple[str | None, str | None]:
        """Checked again at the end: the user may have left the room meanwhile."""
        if u.room is not None and (u.room not in session.rooms
                                   or not roomsvc.may_enter(self.chat, session, u.room)):
            raise self._refuse(ErrorCode.NOT_IN_ROOM, f"you are no longer in #{u.room}")
        return u.room, u.to

    async def _store(self, u: Upload) -> FileRecord:
        """The partial as a content object, sniffed and previewed (or described as the same
        content was before: it is decoded once); its row written. Call with the content's
        lock held."""
        def work() -> tuple[str, bool]:
            with open(u.path, "rb") as f:
                head = f.read(SNIFF_BYTES)
            return sniff(head), self.files.put(u.path, u.sha256)

        mime, new = await self._off(work)
        rec = FileRecord(secrets.token_urlsafe(16), u.sha256, u.name, u.size, mime, u.owner,
                         u.room, u.to, time.time())
        same = [] if new else await self.db.files_where("sha256 = ?", [u.sha256])
        if same:
            rec.w, rec.h, rec.thumb_w, rec.thumb_h = (same[0].w, same[0].h, same[0].thumb_w,
                                                      same[0].thumb_h)
        else:
            async with self._previews:
                preview = await self._off(
                    make_preview, self.files.object_path(u.sha256), mime,
                    self.files.thumb_path(u.sha256))
            if preview is not None:
                rec.w, rec.h = preview.w, preview.h
                if preview.thumb is not None:
                    rec.thumb_w, rec.thumb_h = preview.thumb
        await self.db.add_file(rec)
        return rec

    async def _forget_content(self, sha256: str) -> None:
        """Remove the object when no live file refers to it (call with its lock held)."""
        if await self.db.file_refs(sha256) == 0:
            await self._off(self.files.delete, sha256)

    def _cancel(self, peer: Peer, upload_id: str) -> None:
        u = self.uploads.get(upload_id)
        if u is not None and u.peer is peer and not u.finishing:
            self._spawn(self._drop(u))

    def _detach(self, u: Upload) -> None:
        """Its connection is gone (or replaced): kept to be resumed."""
        self.uploads.pop(u.id, None)
        peer, u.peer, u.session = u.peer, None, None
        if peer is not None:
            self._idle(peer)
        u.touched = time.time()

    def _forget(self, u: Upload) -> None:
        self.uploads.pop(u.id, None)
        if self.partials.get(u.key) is u:
            del self.partials[u.key]
        peer, u.peer, u.session = u.peer, None, None
        if peer is not None:
            self._idle(peer)

    def _close(self, u: Upload) -> None:
        if u.fd is not None:
            with contextlib.suppress(OSError):
                os.close(u.fd)
            u.fd = None

    async def _drop(self, u: Upload) -> None:
        """Forget the upload and its bytes: nothing of it stays."""
        self._forget(u)
        u.queue = []
        if u.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(u.writer)
        self._close(u)
        await self._off(functools.partial(u.path.unlink, missing_ok=True))

    # -- downloads ---------------------------------------------------------------------

    def _download(self, peer: Peer, session: Session[Peer], msg: Message) -> None:
        tasks = self._downloads.setdefault(peer, set())
        if len(tasks) >= DOWNLOADS_PER_CONNECTION:
            peer.error(ErrorCode.LIMIT_REACHED, f"at most {DOWNLOADS_PER_CONNECTION} downloads "
                       "at once on one connection", re="download", file=msg["file"],
                       **_rid(msg))
            return
        task = asyncio.create_task(self._send_file(peer, session, msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _readable(self, peer: Peer, session: Session[Peer], msg: Message
                        ) -> FileRecord | None:
        """The file asked for, if this user may have it; else ``no_such_file`` is answered
        (the same for an id never given out, a file gone, and one not theirs to see)."""
        rec = await self.db.file(msg["file"])
        if rec is None or rec.gone is not None or not self.may_read(session, rec):
            peer.error(ErrorCode.NO_SUCH_FILE, f"no file {msg['file']}", re=msg.type,
                       file=msg["file"], **_rid(msg))
            return None
        return rec

    async def _file_info(self, peer: Peer, session: Session[Peer], msg: Message) -> None:
        rec = await self._readable(peer, session, msg)
        if rec is not None:
            peer.send("file_info", file=rec.info(), **_rid(msg))

    async def _send_file(self, peer: Peer, session: Session[Peer], msg: Message) -> None:
        file_id: str = msg["file"]
        rid = _rid(msg)
        rec = await self._readable(peer, session, msg)
        if rec is None:
            return
        thumb = bool(msg.get("thumb"))
        if thumb and rec.thumb_w is None:
            peer.error(ErrorCode.NO_PREVIEW, f"file {file_id} has no preview", re="download",
                       file=file_id, **rid)
            return
        offset: int = msg.get("offset", 0)
        try:
            f, size, digest = await self._off(self._open_for_download, rec, thumb)
        except OSError:
            log.exception("file %s: cannot read its content", rec.id)
            peer.error(ErrorCode.NO_SUCH_FILE, f"no file {file_id}", re="download",
                       file=file_id, **rid)
            return
        try:
            if offset > size:
                peer.error(ErrorCode.BAD_OFFSET, f"the file has {size} bytes", re="download",
                           file=file_id, offset=size, **rid)
                return
            await self._off(f.seek, offset)
            self.gate.download_started()
            try:
                await self._send_from(peer, f, file_id, offset, size, rid)
            finally:
                self.gate.download_ended()
            if not peer.closing:
                peer.send("downloaded", file=file_id, size=size, sha256=digest, **rid)
        finally:
            f.close()  # (a file open for reading: nothing to flush)

    async def _send_from(self, peer: Peer, f: Any, file_id: str, offset: int, size: int,
                         rid: dict[str, Any]) -> None:
        while offset < size and not peer.closing:
            if not self.gate.is_open:
                await self.gate.opened.wait()  # the loop is busy: chat and screen go first
                continue
            if not peer.writable:
                await peer.drained()  # the connection's buffer is full: wait
                continue
            data = await self._off(f.read, min(CHUNK, size - offset))
            if not data:
                raise OSError(f"file {file_id} ended at {offset} of {size} bytes")
            peer.send_bytes(peer.conn.send("file_data", data, file=file_id, offset=offset,
                                           **rid))
            offset += len(data)
            self.counters.file_bytes_out += len(data)

    def _open_for_download(self, rec: FileRecord, thumb: bool) -> tuple[Any, int, str]:
        if not thumb:
            f = self.files.open(rec.sha256)
            return f, rec.size, rec.sha256
        data = self.files.thumb_path(rec.sha256).read_bytes()
        return io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest()

    def may_read(self, session: Session[Peer], rec: FileRecord) -> bool:
        """A room's file: whoever may read the room. A private one: its two people (by
        identity: not a guest who took one of their names later)."""
        if rec.room is not None:
            room = self.chat.find_room(rec.room) or rec.room
            return roomsvc.may_enter(self.chat, session, room)
        assert rec.to is not None
        if session.key not in (rec.user, rec.to.casefold()):
            return False
        return rec.message is None or session.since < rec.message

    # -- housekeeping ------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        # a short retention is looked at often enough to be kept within a quarter of it
        keep = [t for t in (self.s.file_retention, self.s.file_partial_keep) if t > 0]
        every = min(HOUSEKEEPING, max(0.5, min(keep) / 4))
        while True:
            await asyncio.sleep(every)
            try:
                await self.expire()
            except Exception:
                log.exception("files: housekeeping failed")

    async def expire(self) -> None:
        """Dropped uploads past file_partial_keep, and files past file_retention, go."""
        cutoff = time.time() - self.s.file_partial_keep
        for u in [u for u in self.partials.values() if u.peer is None and u.touched < cutoff]:
            await self._drop(u)
        await self._off(self._sweep_partials, set(self.partials))
        now = asyncio.get_running_loop().time()
        for ip in [ip for ip, b in self._address_rates.items() if b.fuller_than(1.0, now)]:
            del self._address_rates[ip]  # full again: the same as a new one
        if self.s.file_retention > 0:
            old = await self.db.files_where("created < ?", [time.time() - self.s.file_retention])
            await self.remove([r.id for r in old], {r.sha256 for r in old}, "expired")

    async def message_deleted(self, message_id: int) -> None:
        gone = await self.db.files_where("message = ?", [message_id])
        await self.remove([r.id for r in gone], {r.sha256 for r in gone}, "deleted")

    async def remove(self, ids: list[str], contents: set[str], why: str) -> None:
        """Files out of reach at once; their contents off the disk when nothing else
        refers to them."""
        if not ids:
            return
        await self.db.files_gone(ids, why)
        for sha in contents:
            async with self._content_locks.setdefault(sha, asyncio.Lock()):
                await self._forget_content(sha)
        log.info("files: %d %s", len(ids), why)

    async def _off(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking file work on the service's own threads (not the loop's default
        executor, which password checks use: a burst of transfers does not delay logins)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("files: task failed", exc_info=task.exception())


def _rid(msg: Message) -> dict[str, Any]:
    return {"rid": msg["rid"]} if msg.get("rid") is not None else {}


def _write_all(fd: int | None, hasher: Any, batch: list[bytes]) -> None:
    """Append a batch to the partial and to its hash (a thread: both release the GIL)."""
    assert fd is not None
    for data in batch:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        hasher.update(data)

