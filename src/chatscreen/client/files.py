"""Files in chat, the client side: upload and download over a transfer link.

A transfer runs on a screen-port connection of its own (the *transfer link*), logged in with
the chat session's token, so that it never delays chat nor screen frames (see
docs/protocol.md, "Files").

* :func:`upload` hashes the file (SHA-256, on a thread), offers it, and streams ``chunk``s
  within the server's ``window``; after a dropped connection it connects again, offers the
  file again and goes on from the offset the server has stored. It returns the
  :class:`FileInfo` of the stored file (the chat message went to the room or person).
* :func:`download` writes ``PATH.part`` (going on from one an earlier try left), checks the
  SHA-256 at the end, then renames it to ``PATH``; it writes nothing else.
* :func:`safe_name` makes a local file name of a file's display name (network text).

Nothing here reads a whole file into memory: the file goes through in chunks of at most
the server's ``chunk`` (1 MiB), read and written on a thread, at most ``window`` bytes
unacknowledged, and at most :data:`READ_AHEAD` received messages waiting to be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from chatscreen.client.link import FINAL_CODES, READ_CHUNK, Link, describe_os_error
from chatscreen.errors import (
    ChatscreenError,
    ConnectError,
    ErrorCode,
    InvalidInput,
    RemoteProtocolError,
    ServerError,
)
from chatscreen.protocol import Limits, Message

if TYPE_CHECKING:
    from PIL import Image

    from chatscreen.client.session import Client

#: ``progress(phase, done, total)``: phase is "hashing", "uploading", "downloading" or
#: "reconnecting" (done: the bytes the server has, or we have, so far).
Progress = Callable[[str, int, int], None]

HASH_BLOCK = 1 << 20  # bytes hashed at a time
MAX_CHUNK = 8 << 20  # the most one chunk carries, whatever the server says
# what a server may send on a transfer link: a file_data of the protocol's largest chunk
# (1 MiB) and its header, so that READ_AHEAD messages hold a few MiB at most
TRANSFER_LIMITS = Limits(max_frame=(1 << 20) + (64 << 10), max_header=64 << 10)
WRITE_BUFFER = 4 << 20  # bytes a transfer link's transport holds before drain() waits
READ_AHEAD = 8  # messages read from a transfer link before the consumer takes them
IDLE_TIMEOUT = 60.0  # s without a word from the server in a transfer: the link is dead
RESUME_TRIES = 8  # reconnects in a row without any progress before giving up
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0  # s between reconnects, doubling
MAX_DISPLAY_NAME = 255  # characters of a file's name as offered
MAX_NAME_BYTES = 200  # a local file name, in UTF-8 (leaves room for " (12).part")
# errors about our upload after which offering it again goes on from what is stored
RESYNC = frozenset({"bad_offset", "no_such_upload"})
NOT_RETRIED = FINAL_CODES - {ErrorCode.BAD_TOKEN}  # a new chat session has a new token


class FileError(ChatscreenError):
    """A transfer that cannot be done: a local file missing or unreadable, a file changed
    while it was sent, a download whose SHA-256 is wrong. Meant for the user as is."""


@dataclass(frozen=True)
class FileInfo:
    """A stored file, as the server describes it (``uploaded``, a chat message's ``file``)."""

    id: str
    name: str
    size: int
    mime: str
    sha256: str
    w: int | None = None
    h: int | None = None
    thumb: tuple[int, int] | None = None  # the preview's size, when there is one
    message_id: int | None = None  # the chat message that posted it (known to its sender)

    @classmethod
    def from_fields(cls, f: dict[str, Any], message_id: int | None = None) -> FileInfo:
        thumb = f.get("thumb")
        return cls(id=f["id"], name=f["name"], size=f["size"], mime=f["mime"],
                   sha256=f["sha256"], w=f.get("w"), h=f.get("h"),
                   thumb=(thumb["w"], thumb["h"]) if thumb else None, message_id=message_id)


@dataclass(frozen=True)
class Downloaded:
    path: Path  # where the file now is
    size: int
    sha256: str
    info: FileInfo  # the server's description of the file


# -- names and sizes ------------------------------------------------------------------------

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def format_size(n: int) -> str:
    """``512 B``, ``1.2 MB``: decimal units, as the server's limits are given."""
    if n < 1000:
        return f"{n} B"
    value, unit = float(n), 0
    while round(value, 1) >= 1000 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    return f"{value:.1f} {_UNITS[unit]}"


# Windows's device names: a file named so (with any extension) is the device, not a file
_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)",
                       re.IGNORECASE)
_NOT_IN_NAMES = re.compile(r'[<>:"/\\|?*]')  # not allowed in a Windows file name
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})  # controls, bidi, unassigned


def safe_name(name: str, fallback: str = "file") -> str:
    """A file name to save a file under, from its display name (network text): the last
    path component only, control and format characters (bidirectional ones too) dropped,
    no leading or trailing dots or spaces (so never ``..`` nor a hidden file), characters
    Windows refuses replaced, Windows's device names (``CON``, ``aux.txt``) prefixed with
    ``_``, at most MAX_NAME_BYTES bytes of UTF-8 (the extension kept). ``fallback`` (made
    safe too) when nothing is left."""
    base = next((p for p in reversed(re.split(r"[/\\]", name)) if p.strip(" .")), "")
    base = "".join(ch for ch in unicodedata.normalize("NFC", base)
                   if unicodedata.category(ch) not in _DROPPED)
    base = _NOT_IN_NAMES.sub("_", base).strip(" .")
    if not base:
        base = re.sub(r"[^A-Za-z0-9_-]", "", fallback)[:64] or "file"
    if _RESERVED.fullmatch(base.split(".")[0].rstrip(" ")):
        base = "_" + base
    return _bounded(base)


def _bounded(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 20:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    room = MAX_NAME_BYTES - len(suffix.encode())
    cut = stem.encode()[:room].decode(errors="ignore").rstrip(" .")
    return (cut or "file") + suffix


def free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name (1).ext`` ... if that exists: never an existing
    file (a partial ``.part`` of the first free name is what a resumed download finds)."""
    path = folder / name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    n = 0
    while path.exists() or path.is_symlink():
        n += 1
        path = folder / (f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})")
    return path


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def display_name(path: Path) -> str:
    """The name a local file is offered under: its file name, control characters (a Unix
    file name may hold a line break) replaced, at most MAX_DISPLAY_NAME characters."""
    name = _CONTROL.sub("\ufffd", path.name) or "file"
    if len(name) > MAX_DISPLAY_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and stem and len(ext) <= 20 else ""
        name = name[: MAX_DISPLAY_NAME - len(ext) - (1 if ext else 0)] + (f".{ext}" if ext
                                                                              else "")
    return name


def too_large(size: int, most: int) -> str:
    return (f"file too large: {format_size(size)} ({size} bytes); the server takes at most "
            f"{format_size(most)} ({most} bytes)")


# -- the transfer link ------------------------------------------------------------------------


class LinkDropped(Exception):
    """The transfer link went away (``reason``: why); a transfer may connect again."""

    def __init__(self, reason: BaseException | None) -> None:
        super().__init__(describe_reason(reason))
        self.reason = reason


def describe_reason(reason: BaseException | None) -> str:
    if isinstance(reason, ServerError):
        return reason.message
    if isinstance(reason, RemoteProtocolError):
        return f"the server broke the protocol: {reason.message}"
    return describe_os_error(reason) if reason is not None else "connection closed"


class TransferLink:
    """A logged-in screen-port connection for transfers. Its messages are read as the
    transfer takes them (at most READ_AHEAD ahead): a slow disk slows the sender down
    through TCP, it does not fill memory."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.closed = asyncio.Event()
        self.close_reason: BaseException | None = None
        self._queue: asyncio.Queue[Message] = asyncio.Queue(READ_AHEAD)
        self._rids = itertools.count(1)
        # several chunks may wait in the transport: the socket never runs dry between them
        link.writer.transport.set_write_buffer_limits(high=WRITE_BUFFER)
        self._task = asyncio.create_task(self._pump())

    @classmethod
    async def open(cls, client: Client) -> TransferLink:
        """Log in on the screen port with ``client``'s session (waiting for it to be
        connected again if it is reconnecting)."""
        if client.token is None or not client.connected:
            try:
                back = await client.wait_connected(client.timeout)
            except TimeoutError:  # still reconnecting: worth another try
                raise ConnectError("not connected to the server (yet)") from None
            if not back or client.token is None:  # closed, or refused for good
                raise FileError("not connected to the server")
        link = await Link.open(client.host, client.screen_port, client.timeout, client.tls,
                               limits=TRANSFER_LIMITS, token=client.token)
        return cls(link)

    @property
    def max_file_size(self) -> int | None:
        """The largest file the server takes, if its welcome says."""
        most = (self.link.welcome.get("limits") or {}).get("max_file_size")
        return most if isinstance(most, int) else None

    async def _pump(self) -> None:
        reason: BaseException | None = None
        try:
            for msg in self.link.take_early():
                await self._queue.put(msg)
            while reason is None:
                data = await self.link.reader.read(READ_CHUNK)
                if not data:
                    reason = ConnectionResetError("the server closed the connection")
                    break
                for msg in self.link.conn.receive_data(data):
                    if msg.type == "ping":
                        self.send("pong", **msg.fields)
                    elif msg.type == "error" and msg.get("fatal"):
                        reason = ServerError(msg["code"], msg["message"])
                        break
                    else:
                        await self._queue.put(msg)
        except (OSError, RemoteProtocolError) as exc:
            reason = exc
        finally:
            self.close_reason = reason
            self.link.writer.close()
            self.closed.set()

    def rid(self) -> str:
        return f"f{next(self._rids)}"

    def send(self, type_: str, payload: bytes | memoryview = b"", **fields: Any) -> None:
        if self.closed.is_set():
            raise LinkDropped(self.close_reason)
        self.link.writer.write(self.link.conn.send(type_, payload, **fields))

    async def drain(self) -> None:
        try:
            await self.link.writer.drain()
        except OSError as exc:
            raise LinkDropped(exc) from None

    async def next(self, timeout: float = IDLE_TIMEOUT) -> Message:
        """The next message; LinkDropped when the link is gone or silent for ``timeout``."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self.closed.is_set():
            raise LinkDropped(self.close_reason)
        get = asyncio.ensure_future(self._queue.get())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait({get, closed}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not get.done():
                get.cancel()  # (the item, if any, stays queued: Queue.get takes it last)
        if get in done:
            return get.result()
        if self.closed.is_set():
            raise LinkDropped(self.close_reason)
        raise LinkDropped(TimeoutError(f"no answer from the server in {timeout:g} s"))

    async def answer(self, rid: str, *types: str) -> Message:
        """The answer to request ``rid`` (one of ``types``); ServerError if refused."""
        while True:
            msg = await self.next()
            if msg.get("rid") != rid:
                continue  # not ours: something older
            if msg.type == "error":
                raise ServerError(msg["code"], msg["message"])
            if msg.type in types:
                return msg

    async def file_info(self, file_id: str) -> FileInfo:
        """What the server says of a file (name, size, hash); ServerError no_such_file."""
        rid = self.rid()
        self.send("file_info", file=file_id, rid=rid)
        return FileInfo.from_fields((await self.answer(rid, "file_info"))["file"])

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.link.writer.wait_closed(), 2)


class _Retrier:
    """Connect again after a dropped link, with a growing pause, until RESUME_TRIES
    attempts in a row brought no progress; the reasons that cannot pass are raised."""

    def __init__(self, client: Client, progress: Progress | None) -> None:
        self.client = client
        self.progress = progress
        self.failures = 0
        self.backoff = BACKOFF_FIRST
        self.last_done = -1

    async def reconnect(self, dropped: LinkDropped, done: int, total: int) -> TransferLink:
        reason = dropped.reason
        if isinstance(reason, ServerError) and reason.code in NOT_RETRIED:
            raise reason
        if isinstance(reason, RemoteProtocolError):  # nonsense does not get better
            raise FileError(f"transfer failed: {dropped}")
        if done > self.last_done:  # it moved on since the last drop: a fresh series
            self.failures, self.backoff, self.last_done = 0, BACKOFF_FIRST, done
        while True:
            self.failures += 1
            if self.failures > RESUME_TRIES:
                raise FileError(f"transfer failed: {dropped} (after {RESUME_TRIES} "
                                "attempts to resume)")
            if self.progress is not None:
                self.progress("reconnecting", done, total)
            await asyncio.sleep(self.backoff)
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            try:
                return await TransferLink.open(self.client)
            except ConnectError as exc:
                cause = exc.__cause__
                if isinstance(cause, ServerError) and cause.code in NOT_RETRIED:
                    raise
                dropped = LinkDropped(exc)


# -- local files ---------------------------------------------------------------------------


def local_size(path: Path) -> int:
    """The size of a regular file we can read; FileError saying why not."""
    try:
        st = path.stat()
        if not path.is_file():
            raise FileError(f"{path} is not a regular file")
        with path.open("rb"):
            pass
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return st.st_size


def _hash_file(path: Path, total: int, report: Callable[[int], None],
               stop: threading.Event) -> str:
    sha = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while not stop.is_set() and (block := f.read(HASH_BLOCK)):
            sha.update(block)
            done += len(block)
            report(done)
    if done != total and not stop.is_set():
        raise FileError(f"{path} changed while it was read ({done} bytes, not {total})")
    return sha.hexdigest()


async def hash_file(path: Path, total: int, progress: Progress | None = None) -> str:
    """SHA-256 (hex) of a file, on a thread; ``progress("hashing", ...)`` on the loop."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def report(done: int) -> None:
        if progress is not None and not stop.is_set():  # (given up: the loop may be gone)
            loop.call_soon_threadsafe(progress, "hashing", done, total)

    try:
        return await asyncio.to_thread(_hash_file, path, total, report, stop)
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        stop.set()  # cancelled: the thread stops at its next block


def _read_at(f: IO[bytes], offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


# -- upload ---------------------------------------------------------------------------------


async def upload(client: Client, path: Path | str, *, room: str | None = None,
                 to: str | None = None, name: str | None = None, mime: str | None = None,
                 progress: Progress | None = None, drop_if_cancelled: bool = False
                 ) -> FileInfo:
    """Post the file at ``path`` to ``room`` or to the user ``to``, as ``name`` (default:
    its file name). Cancelled, the server keeps what it got, for a later upload of the same
    file to go on from (``drop_if_cancelled``: it is told to drop it). Raises FileError
    (the local file), InvalidInput (over the size the server announced: nothing hashed nor
    sent), ServerError (refused: file_too_large, quota_exceeded, forbidden, not_in_room,
    no_such_user, muted, limit_reached, bad_checksum)."""
    if (room is None) == (to is None):
        raise ValueError("upload to a room or to a user (one of them)")
    path = Path(path)
    size = local_size(path)
    offer: dict[str, Any] = {"name": name if name is not None else display_name(path),
                             "size": size, **({"room": room} if room is not None else
                                              {"to": to})}
    if mime is not None:
        offer["mime"] = mime
    sender = _Upload(client, path, offer, progress)
    sender.drop_if_cancelled = drop_if_cancelled
    sender.link = await TransferLink.open(client)
    try:
        most = sender.link.max_file_size
        if most is not None and size > most:
            raise InvalidInput(too_large(size, most))
        offer["sha256"] = await hash_file(path, size, progress)
        return await sender.run()
    finally:
        await sender.link.close()


class _Upload:
    def __init__(self, client: Client, path: Path, offer: dict[str, Any],
                 progress: Progress | None) -> None:
        self.client = client
        self.path = path
        self.offer = offer
        self.size: int = offer["size"]
        self.progress = progress
        self.link: TransferLink
        self.acked = 0  # bytes the server has stored
        self.drop_if_cancelled = False

    def _report(self) -> None:
        if self.progress is not None:
            self.progress("uploading", self.acked, self.size)

    async def run(self) -> FileInfo:
        retrier = _Retrier(self.client, self.progress)
        with self.path.open("rb") as f:
            while True:
                try:
                    return await self._send(f)
                except LinkDropped as dropped:
                    await self.link.close()
                    self.link = await retrier.reconnect(dropped, self.acked, self.size)

    async def _send(self, f: IO[bytes]) -> FileInfo:
        """Offer the file on the current link and send what the server lacks."""
        link = self.link
        rid = link.rid()
        link.send("upload", rid=rid, **self.offer)
        ready = await link.answer(rid, "upload_ready")
        uid, offset = ready["upload"], ready["offset"]
        chunk = max(1, min(ready["chunk"], MAX_CHUNK))
        window = max(1, ready["window"])
        if not 0 <= offset <= self.size:
            raise FileError(f"the server asked for the file from byte {offset}, past its "
                            f"end ({self.size})")
        self.acked = sent = offset
        self._report()
        reader = _ChunkReader(f, self.size, min(chunk, window))
        try:
            while True:
                while sent < self.size and sent + reader.piece_at(sent) - self.acked <= window:
                    data = await reader.read(sent)
                    if len(data) != reader.piece_at(sent):
                        raise FileError(f"{self.path} changed while it was sent")
                    link.send("chunk", data, upload=uid, offset=sent)
                    sent += len(data)
                    await link.drain()
                msg = await link.next()
                if msg.type == "uploaded" and msg["upload"] == uid:
                    self.acked = self.size
                    self._report()
                    return FileInfo.from_fields(msg["file"], msg["id"])
                if msg.type == "upload_progress" and msg["upload"] == uid:
                    self.acked = max(self.acked, min(msg["offset"], sent))
                    self._report()
                elif (msg.type == "error" and msg.get("rid") in (None, rid)
                        and msg.get("upload") in (None, uid)):
                    if msg["code"] in RESYNC:  # out of step: offer again, on a new link
                        raise LinkDropped(ServerError(msg["code"], msg["message"]))
                    raise ServerError(msg["code"], msg["message"])
        except asyncio.CancelledError:
            if self.drop_if_cancelled:  # the user gave up: the server drops the partial
                with contextlib.suppress(LinkDropped):
                    link.send("cancel", upload=uid)
            raise
        finally:
            await reader.settle()


class _ChunkReader:
    """A file's pieces, read on a thread: the next one while the last one is sent (one
    read at a time: they share the file's position)."""

    def __init__(self, f: IO[bytes], size: int, piece: int) -> None:
        self.f = f
        self.size = size
        self.piece = piece
        self._ahead: tuple[int, asyncio.Future[bytes]] | None = None

    def piece_at(self, at: int) -> int:
        return min(self.piece, self.size - at)

    def _start(self, at: int) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(asyncio.to_thread(_read_at, self.f, at, self.piece_at(at)))

    async def read(self, at: int) -> bytes:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == at:
            data = await ahead[1]
        else:
            if ahead is not None:
                await asyncio.wait([ahead[1]])
            data = await self._start(at)
        if at + len(data) < self.size:
            self._ahead = (at + len(data), self._start(at + len(data)))
        return data

    async def settle(self) -> None:
        """Wait for the read under way, if any (before the file is read otherwise)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            await asyncio.wait([ahead[1]])
            if not ahead[1].cancelled():
                ahead[1].exception()  # (retrieved: an error here does not matter)


# -- download -------------------------------------------------------------------------------


class _PartFile:
    """``PATH.part``: opened without following a link, appended to, hashed as it grows."""

    def __init__(self, path: Path, f: IO[bytes], sha: Any, size: int) -> None:
        self.path = path
        self.f = f
        self.sha = sha
        self.size = size

    @classmethod
    async def open(cls, path: Path, progress: Progress | None) -> _PartFile:
        loop = asyncio.get_running_loop()

        def report(done: int, total: int) -> None:
            if progress is not None:
                loop.call_soon_threadsafe(progress, "hashing", done, total)

        try:
            return await asyncio.to_thread(cls._open, path, report)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileError(f"cannot write {path}: it is a symbolic link (not followed)"
                                ) from None
            raise FileError(f"cannot write {path}: {exc.strerror or exc}") from None

    @classmethod
    def _open(cls, path: Path, report: Callable[[int, int], None]) -> _PartFile:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        f = os.fdopen(os.open(path, flags, 0o600), "r+b")
        try:
            total = os.fstat(f.fileno()).st_size
            sha, done = hashlib.sha256(), 0
            while block := f.read(HASH_BLOCK):  # what an earlier try got: hashed again
                sha.update(block)
                done += len(block)
                report(done, total)
            return cls(path, f, sha, done)
        except BaseException:
            f.close()
            raise

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)

    async def write(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            raise FileError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.size += len(data)

    def truncate(self) -> None:
        self.f.seek(0)
        self.f.truncate()
        self.sha, self.size = hashlib.sha256(), 0

    def finish(self, dest: Path) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.path, dest)

    def discard(self) -> None:
        self.f.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def close(self) -> None:
        self.f.close()


async def download(client: Client, file_id: str, output: Path | None = None, *,
                   folder: Path = Path("."), thumb: bool = False,
                   progress: Progress | None = None,
                   on_info: Callable[[FileInfo], None] | None = None) -> Downloaded:
    """Fetch a file into ``output`` (default: its :func:`safe_name` in ``folder``, never
    over an existing file), by way of ``output.part``: a partial left by an earlier try is
    resumed, a dropped connection is resumed. ``thumb``: the preview picture instead.
    ``on_info``: called with what the server says of the file, before any byte.
    Raises ServerError (``no_such_file``, ``no_preview``) or FileError (a wrong SHA-256:
    the partial is removed)."""
    link = await TransferLink.open(client)
    part: _PartFile | None = None
    try:
        info = await link.file_info(file_id)
        if on_info is not None:
            on_info(info)
        if thumb and info.thumb is None:
            raise ServerError(ErrorCode.NO_PREVIEW, f"{info.name} has no preview (only "
                              "pictures do)")
        if output is None:
            name = safe_name(info.name, fallback=file_id)
            if thumb:
                name = f"{name.rpartition('.')[0] or name}.thumb.png"
            output = free_path(folder, name)
        part = await _PartFile.open(output.with_name(output.name + ".part"), progress)
        fetch = _Fetch(file_id, part, None if thumb else info, thumb, progress)
        retrier = _Retrier(client, progress)
        while True:
            try:
                done = await fetch.run(link)
                break
            except LinkDropped as dropped:
                await link.close()
                link = await retrier.reconnect(dropped, part.size, fetch.total)
        await asyncio.to_thread(part.finish, output)
        part = None
        return Downloaded(output, done["size"], done["sha256"], info)
    finally:
        if part is not None and part.size == 0:  # failed before a byte: nothing kept
            part.discard()
        elif part is not None:  # failed: the partial is kept, to resume
            part.close()
        await link.close()


class _Fetch:
    def __init__(self, file_id: str, part: _PartFile, info: FileInfo | None, thumb: bool,
                 progress: Progress | None) -> None:
        self.file_id = file_id
        self.part = part
        self.info = info  # the file's description, to check its size and hash against
        #                   (None for its preview)
        self.thumb = thumb
        self.progress = progress
        self.total = info.size if info is not None else 0
        self.restarted = False

    def _ask(self, link: TransferLink) -> str:
        rid = link.rid()
        fields: dict[str, Any] = {"file": self.file_id, "offset": self.part.size, "rid": rid}
        if self.thumb:
            fields["thumb"] = True
        link.send("download", **fields)
        return rid

    async def run(self, link: TransferLink) -> Message:
        if self.info is not None and self.part.size > self.info.size:
            await asyncio.to_thread(self.part.truncate)  # not the start of this file
        rid = self._ask(link)
        while True:
            msg = await link.next()
            if msg.get("rid") != rid:
                continue
            if msg.type == "file_data":
                await self._take(msg)
            elif msg.type == "downloaded":
                await self._check(msg)
                return msg
            elif msg.type == "error" and msg["code"] == "bad_offset" and not self.restarted:
                self.restarted = True  # a stale partial: from the start, once
                await asyncio.to_thread(self.part.truncate)
                rid = self._ask(link)
            elif msg.type == "error":
                raise ServerError(msg["code"], msg["message"])

    async def _take(self, msg: Message) -> None:
        if msg["offset"] != self.part.size:
            raise FileError(f"the server sent bytes from {msg['offset']}, expected "
                            f"{self.part.size}")
        if self.info is not None and self.part.size + len(msg.payload) > self.info.size:
            raise FileError(f"the server sent more than the file's {self.info.size} bytes")
        await self.part.write(msg.payload)
        if self.progress is not None:
            self.progress("downloading", self.part.size, max(self.total, self.part.size))

    async def _check(self, msg: Message) -> None:
        digest = self.part.sha.hexdigest()
        expected = {msg["sha256"]} | ({self.info.sha256} if self.info is not None else set())
        if msg["size"] != self.part.size or expected != {digest}:
            self.part.discard()
            raise FileError(f"the download of {self.file_id} arrived damaged (SHA-256 "
                            "differs); nothing was kept: try again")


# -- a picture made here (a share's snapshot) --------------------------------------------------


def picture_name(who: str, when: datetime | None = None) -> str:
    """The display name of a snapshot of ``who``'s screen: ``alice-screen-20261208-010203.png``
    (UTC), as safe a name as :func:`safe_name` makes."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return safe_name(f"{who}-screen-{stamp}.png", fallback=f"screen-{stamp}.png")


def _write_png(picture: Image.Image, folder: str, name: str) -> Path:
    path = Path(folder) / name
    picture.save(path, format="PNG")  # lossless
    return path


async def upload_picture(client: Client, picture: Image.Image, name: str, *,
                         room: str | None = None, to: str | None = None,
                         progress: Progress | None = None) -> FileInfo:
    """Post ``picture`` as a lossless PNG named ``name`` (written to a temporary file on a
    thread, removed once sent), like :func:`upload`."""
    with tempfile.TemporaryDirectory(prefix="chatscreen-") as folder:
        path = await asyncio.to_thread(_write_png, picture, folder, name)
        return await upload(client, path, room=room, to=to, progress=progress,
                            drop_if_cancelled=True)  # (its file goes: no resuming)
