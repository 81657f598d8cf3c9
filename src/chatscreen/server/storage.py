"""Message history behind a small interface; SQLite (WAL) is the embedded default.

The server assigns ids itself (``last_id()`` at start, then counting up) so that it can order
messages without a round trip to storage, and only acknowledges a message once ``append`` has
returned: from then on it survives the server being killed. A Redis or PostgreSQL store
implements the same methods.

SQLite runs on one dedicated thread: every call is handed to it, and all writes and queries
run there in submission order. With ``durability="normal"`` (the default), ``append`` writes
the messages to a journal file next to the database, one ``write`` on the event loop (the
way Redis appends to its AOF), and returns: a message in the operating system's page cache
survives ``kill -9``. The SQLite thread then inserts everything journaled so far in one
transaction (WAL, ``synchronous=NORMAL``); once all of it is in, a journal past
``JOURNAL_TRIM`` bytes is emptied. At start, whatever the journal holds goes into SQLite
first; what SQLite refuses stays in the journal and is tried again, and while
``MAX_PENDING`` messages wait for it, ``append`` refuses new ones. This keeps the SQLite
thread's hand-offs (two thread wake-ups, ~0.5 ms on these machines) off every message's way
to its recipients. Only a power loss can drop the last
messages, as with ``synchronous=NORMAL`` itself. ``durability="full"`` skips the journal:
``append`` returns once SQLite has committed with an fsync, which survives a power loss too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from chatscreen.server.datadir import (
    FILE_MODE,
    StorageError,
    describe,
    open_database,
    prepare,
    reason,
)

log = logging.getLogger("chatscreen.server")

JOURNAL_TRIM = 1 << 20  # bytes: a journal all in SQLite is emptied once it is this long
INGEST_RETRY = 1.0  # s: after SQLite failed to take journaled messages, try again this late
# journaled messages SQLite has not taken yet: past this many, append refuses new ones (SQLite
# keeps failing: memory and the journal would grow for as long as it does)
MAX_PENDING = 100_000


def utc_now() -> str:
    """Now, as messages and accounts are stamped: ``2026-12-07T21:00:00.000Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    ts: str  # ISO 8601 UTC, millisecond precision, e.g. 2026-11-26T07:42:21.123Z
    user: str
    text: str
    room: str | None = None  # a room message ...
    to: str | None = None  # ... or a private one
    cid: str | None = None  # the sender's own id for it, for de-duplication
    kind: str | None = None  # "notice": a moderation notice, "file": a file posted
    # a file message's FileInfo (from the files table, not a column: never in the journal)
    file: dict[str, Any] | None = field(default=None, compare=False)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "ts": self.ts, "user": self.user, "text": self.text}
        if self.room is not None:
            out["room"] = self.room
        if self.to is not None:
            out["to"] = self.to
        if self.cid is not None:
            out["cid"] = self.cid
        if self.kind is not None:
            out["kind"] = self.kind
        if self.file is not None:
            out["file"] = self.file
        return out


@dataclass(slots=True)
class FileRecord:
    """A file posted (a row of the ``files`` table). Several may share one content."""

    id: str
    sha256: str
    name: str
    size: int
    mime: str
    user: str  # the uploader's key (casefolded name)
    room: str | None
    to: str | None
    created: float  # unix time
    w: int | None = None
    h: int | None = None
    thumb_w: int | None = None
    thumb_h: int | None = None
    message: int | None = None  # the chat message that posted it
    gone: str | None = None  # None: live; "deleted", "expired"

    def info(self) -> dict[str, Any]:
        """The FileInfo clients get (docs/protocol.md)."""
        out: dict[str, Any] = {"id": self.id, "name": self.name, "size": self.size,
                               "mime": self.mime, "sha256": self.sha256}
        if self.w is not None and self.h is not None:
            out["w"], out["h"] = self.w, self.h
        if self.thumb_w is not None and self.thumb_h is not None and self.gone is None:
            out["thumb"] = {"w": self.thumb_w, "h": self.thumb_h}
        if self.gone is not None:
            out["expired"] = True
        return out


_FILE_COLUMNS = ("id, sha256, name, size, mime, user, room, to_user, created, w, h, thumb_w, "
                 "thumb_h, message, gone")


class MessageStore(Protocol):
    async def last_id(self) -> int: ...

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        """Store messages; returns once they survive the server being killed."""

    async def room_history(
        self, room: str, *, before: int | None = None, after: int | None = None, limit: int
    ) -> list[StoredMessage]:
        """Messages of a room in id order: the newest ``limit`` before ``before``, or the
        oldest ``limit`` after ``after``."""

    async def private_history(
        self, user: str, peer: str | None, *, before: int | None = None,
        after: int | None = None, limit: int, since: int = 0,
    ) -> list[StoredMessage]:
        """Private messages to or from ``user`` (with ``peer`` only, when given), of ids
        above ``since`` only (those before belong to someone else who had the name)."""

    async def recent(self, limit: int) -> list[StoredMessage]:
        """The newest ``limit`` messages, rooms and private ones together, in id order."""

    async def rooms(self) -> list[str]: ...

    async def add_room(self, room: str) -> None: ...

    async def link_files(self, pairs: list[tuple[int, str]]) -> None:
        """(message id, file id) of file messages about to be appended (see SQLiteStore)."""

    async def message(self, message_id: int) -> StoredMessage | None: ...

    async def delete_message(self, message_id: int) -> None: ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id      INTEGER PRIMARY KEY,
    ts      TEXT NOT NULL,
    user    TEXT NOT NULL,
    text    TEXT NOT NULL,
    room    TEXT,
    to_user TEXT,
    cid     TEXT,
    kind    TEXT
);
CREATE INDEX IF NOT EXISTS messages_room ON messages (room, id) WHERE room IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_private ON messages (user, to_user, id) WHERE room IS NULL;
CREATE INDEX IF NOT EXISTS messages_private_to ON messages (to_user, id) WHERE room IS NULL;
CREATE TABLE IF NOT EXISTS files (
    id      TEXT PRIMARY KEY,
    sha256  TEXT NOT NULL,
    name    TEXT NOT NULL,
    size    INTEGER NOT NULL,
    mime    TEXT NOT NULL,
    user    TEXT NOT NULL,
    room    TEXT,
    to_user TEXT,
    created REAL NOT NULL,
    w INTEGER, h INTEGER, thumb_w INTEGER, thumb_h INTEGER,
    message INTEGER,
    gone    TEXT
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256);
CREATE INDEX IF NOT EXISTS files_message ON files (message);
CREATE INDEX IF NOT EXISTS files_live ON files (created) WHERE gone IS NULL;
CREATE TABLE IF NOT EXISTS rooms (
    name    TEXT PRIMARY KEY,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""

_COLUMNS = "id, ts, user, text, room, to_user, cid, kind"


Row = tuple[int, str, str, str, str | None, str | None, str | None, str | None]
_INSERT = f"INSERT INTO messages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"


def _migrate(db: sqlite3.Connection) -> None:
    """A database made before messages had a ``kind`` gets the column (NULL: ordinary)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "kind" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN kind TEXT")


def _row(row: tuple[Any, ...]) -> StoredMessage:
    return StoredMessage(*row)


def _rows(messages: Sequence[StoredMessage]) -> list[Row]:
    return [(m.id, m.ts, m.user, m.text, m.room, m.to, m.cid, m.kind) for m in messages]


class Journal:
    """An append-only file of messages not yet known to be in SQLite: one JSON array a line,
    ``[id, ts, user, text, room, to, cid, kind]`` (older
    journals' lines have no ``kind``) (JSON escapes every control character, so a line
    is one message)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self._fd).st_size
        self._encode = json.JSONEncoder(separators=(",", ":")).encode

    def write(self, rows: Sequence[Row]) -> None:
        """Append in one write; on failure (a full disk) leave the file as it was, raise."""
        data = "".join([self._encode(r) + "\n" for r in rows]).encode()
        try:
            written = os.write(self._fd, data)
        except OSError:
            self._cut()
            raise
        if written != len(data):  # only part of it: a line cut short would end the file
            self._cut()
            raise OSError(f"journal: wrote {written} of {len(data)} bytes")
        self.size += written

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self.size)

    def clear(self) -> None:
        os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self) -> None:
        os.close(self._fd)

    @staticmethod
    def read(path: Path) -> list[Row]:
        """The messages in a journal (see :meth:`scan`)."""
        return Journal.scan(path).rows

    @staticmethod
    def scan(path: Path) -> JournalScan:
        """What a journal holds: every whole line that is a message, the lines that are not
        (a damaged disk block, a stray edit: skipped, the lines after them still count),
        and the end of a write cut short after the last newline (``kill -9`` or a power loss
        mid-write: never acknowledged)."""
        scan = JournalScan()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return scan
        scan.size = len(data)
        *lines, scan.torn = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            row = _journal_row(line)
            if row is None:
                scan.bad.append((number, line))
            else:
                scan.rows.append(row)
        return scan


@dataclass(slots=True)
class JournalScan:
    rows: list[Row] = field(default_factory=list)
    bad: list[tuple[int, bytes]] = field(default_factory=list)  # (line number, its bytes)
    torn: bytes = b""
    size: int = 0


_ROW_TYPES = ((int,), (str,), (str,), (str,), (str, type(None)), (str, type(None)),
              (str, type(None)), (str, type(None)))


def _journal_row(line: bytes) -> Row | None:
    """The message on a journal line, or None if it is not one (SQLite would refuse it)."""
    try:
        value = json.loads(line)
    except ValueError:  # UnicodeDecodeError too
        return None
    if isinstance(value, list) and len(value) == len(_ROW_TYPES) - 1:
        value.append(None)  # a line of a journal written before messages had a kind
    if not (isinstance(value, list) and len(value) == len(_ROW_TYPES)
            and all(isinstance(v, t) and not isinstance(v, bool)
                    for v, t in zip(value, _ROW_TYPES, strict=True))
            and 0 < value[0] < 1 << 63):  # an SQLite INTEGER
        return None
    try:  # JSON can spell a lone surrogate ("\ud800"), which no UTF-8 text holds
        for v in value[1:]:
            if v is not None:
                v.encode()
    except UnicodeEncodeError:
        return None
    row: Row = tuple(value)
    return row


def keep_bad_lines(journal: Path, bad: list[tuple[int, bytes]]) -> Path:
    """Copy the journal lines that are not messages next to it (0600), for a human to look
    at, before the journal is emptied; returns the copy's path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data = b"".join(line + b"\n" for _, line in bad)
    for n in range(1000):
        copy = journal.with_name(f"{journal.name}.bad-{stamp}{f'-{n}' if n else ''}")
        try:
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())
        return copy
    raise FileExistsError(f"{journal}.bad-{stamp}")


def _numbers(bad: list[tuple[int, bytes]], most: int = 10) -> str:
    shown = ", ".join(str(n) for n, _ in bad[:most])
    return shown + (f" and {len(bad) - most} more" if len(bad) > most else "")


class SQLiteStore:
    def __init__(self, path: Path, *, durability: str = "normal", check: str = "quick") -> None:
        self.path = path
        self._check = check  # at start: PRAGMA quick_check, integrity_check, or none
        self.journal_path = path.with_suffix(".journal")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._durability = "FULL" if durability == "full" else "NORMAL"
        self._journal: Journal | None = None  # with durability "normal"
        self._pending: list[Row] = []  # journaled, not yet handed to the SQLite thread
        self._ingesting: set[asyncio.Future[None]] = set()  # handed to it, not yet in
        self._unstored = 0  # journaled messages not in SQLite yet (pending or ingesting)
        self._ingest_due = False  # _ingest_soon is scheduled
        self._retry: asyncio.TimerHandle | None = None

    async def open(self) -> SQLiteStore:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        prepare(self.path.parent)
        db = open_database(self.path, check=self._check)
        try:
            db.execute(f"PRAGMA synchronous={self._durability}")
            db.executescript(_SCHEMA)
            _migrate(db)
        except sqlite3.Error as exc:
            db.close()
            raise StorageError(describe(self.path, exc, schema=True)) from None
        except BaseException:
            db.close()
            raise
        try:
            self._recover(db)
        except sqlite3.Error as exc:
            db.close()
            raise StorageError(describe(self.path, exc)) from None
        except BaseException:
            db.close()
            raise
        self._db = db

    def _recover(self, db: sqlite3.Connection) -> None:
        """Put what a killed server had acknowledged but not yet put in SQLite in (whatever
        the durability now: it may have been "normal" then), then empty the journal."""
        try:
            scan = Journal.scan(self.journal_path)
        except OSError as exc:
            raise StorageError(f"cannot read {self.journal_path}: {reason(exc)}: move it "
                               "aside (it holds the last messages, one JSON array a line)"
                               ) from None
        if scan.rows:
            with db:
                db.execute("BEGIN")
                db.executemany(_INSERT.replace("INSERT", "INSERT OR IGNORE", 1), scan.rows)
            log.info("storage: %d message(s) from the journal", len(scan.rows))
        if scan.bad:
            try:
                copy = keep_bad_lines(self.journal_path, scan.bad)
            except OSError as exc:
                raise StorageError(f"cannot keep a copy of the unreadable lines of "
                                   f"{self.journal_path}: {exc}") from None
            many = len(scan.bad) > 1
            log.warning("storage: %s: %s %s %s: skipped (the other lines were recovered), "
                        "kept in %s", self.journal_path, "lines" if many else "line",
                        _numbers(scan.bad), "are not messages" if many else "is not a message",
                        copy)
        if scan.torn:
            log.info("storage: %s ended in a write cut short (%d bytes: the server stopped "
                     "mid-write, before acknowledging it): dropped", self.journal_path,
                     len(scan.torn))
        try:
            if self._durability == "NORMAL":
                journal = Journal(self.journal_path)
                try:
                    if scan.size:
                        journal.clear()
                except OSError:
                    journal.close()
                    raise
                self._journal = journal
            elif scan.size or self.journal_path.exists():
                self.journal_path.unlink()
        except OSError as exc:
            raise StorageError(f"cannot write to {self.journal_path}: {reason(exc)}") from None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._pending:  # journaled messages go in first: a query sees every one
            self._ingest()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "SQLiteStore.open() was not awaited"
        return self._db

    async def last_id(self) -> int:
        def q() -> int:
            (value,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
            return int(value)

        result: int = await self._run(q)
        return result

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        rows = _rows(messages)
        if self._journal is None:  # durability "full": committed (fsync) before it returns
            await self._run(self._insert, rows)
            return
        if self._unstored >= MAX_PENDING:
            raise OSError(f"storage: SQLite has not taken the last {self._unstored} messages")
        self._journal.write(rows)  # raises OSError: nothing was stored
        self._pending += rows
        self._unstored += len(rows)
        if not self._ingesting and not self._ingest_due:  # else all that came meanwhile at once
            # In the loop's next turn, so that the caller's fan-out goes first: waking the
            # SQLite thread now would have it compete for the GIL with that fan-out.
            self._ingest_due = True
            asyncio.get_running_loop().call_soon(self._ingest_soon)

    def _ingest_soon(self) -> None:
        self._ingest_due = False
        if self._pending and not self._ingesting:
            self._ingest()

    def _insert(self, rows: list[Row]) -> None:
        with self.db:  # one transaction per batch
            self.db.execute("BEGIN")
            self.db.executemany(_INSERT, rows)

    def _ingest(self) -> None:
        """Hand every journaled message not yet handed on to the SQLite thread."""
        rows, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, self._insert, rows)
        self._ingesting.add(fut)
        fut.add_done_callback(functools.partial(self._ingested, rows))

    def _ingested(self, rows: list[Row], fut: asyncio.Future[None]) -> None:
        self._ingesting.discard(fut)
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None or fut.cancelled():
            # They stay in the journal (and go in at the next start at the latest).
            log.error("storage: %d journaled message(s) not stored in SQLite yet: %r",
                      len(rows), exc)
            self._pending[:0] = rows
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(INGEST_RETRY, self._again)
            return
        self._unstored -= len(rows)
        if self._ingesting or self._retry is not None:
            return
        if self._pending:
            self._ingest()
        elif self._journal is not None and self._journal.size >= JOURNAL_TRIM:
            self._journal.clear()  # every line of it is in SQLite

    def _again(self) -> None:
        self._retry = None
        if self._pending and not self._ingesting and self._journal is not None:
            self._ingest()

    async def flush(self) -> None:
        """Wait until every journaled message is in SQLite (or failed to go in)."""
        if self._pending:
            self._ingest()
        while self._ingesting:
            await asyncio.wait(set(self._ingesting))

    async def _query(self, where: str, params: list[Any], before: int | None,
                     after: int | None, limit: int) -> list[StoredMessage]:
        if before is not None:
            where += " AND id < ?"
            params.append(before)
        if after is not None:
            where += " AND id > ?"
            params.append(after)
        # With "after" we want the oldest ones after it (catching up, in order);
        # otherwise the newest ones (scrolling back), returned in id order.
        order = "ASC" if after is not None else "DESC"
        sql = (f"SELECT {_COLUMNS} FROM messages WHERE {where} AND kind IS NOT 'deleted' "
               f"ORDER BY id {order} LIMIT ?")
        params.append(limit)

        def q() -> list[StoredMessage]:
            rows = [_row(r) for r in self.db.execute(sql, params)]
            if any(m.kind == "file" for m in rows):
                rows = self._with_files(rows)
            return rows if order == "ASC" else rows[::-1]

        result: list[StoredMessage] = await self._run(q)
        return result

    async def room_history(self, room: str, *, before: int | None = None,
                           after: int | None = None, limit: int) -> list[StoredMessage]:
        return await self._query("room = ?", [room], before, after, limit)

    async def private_history(self, user: str, peer: str | None, *, before: int | None = None,
                              after: int | None = None, limit: int,
                              since: int = 0) -> list[StoredMessage]:
        params: list[Any]
        if peer is None:
            where, params = "room IS NULL AND (user = ? OR to_user = ?)", [user, user]
        else:
            where = "room IS NULL AND ((user = ? AND to_user = ?) OR (user = ? AND to_user = ?))"
            params = [user, peer, peer, user]
        if since:
            where += " AND id > ?"
            params.append(since)
        return await self._query(where, params, before, after, limit)

    async def recent(self, limit: int) -> list[StoredMessage]:
        return await self._query("1", [], None, None, limit)

    # -- files (the ``files`` table; the bytes are the FileStore's) ---------------------

    def _with_files(self, rows: list[StoredMessage]) -> list[StoredMessage]:
        """File messages with their FileInfo (SQLite thread)."""
        ids = [m.id for m in rows if m.kind == "file"]
        found: dict[int, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            sql = (f"SELECT {_FILE_COLUMNS} FROM files WHERE message IN "
                   f"({','.join('?' * len(part))})")
            for r in self.db.execute(sql, part):
                rec = FileRecord(*r)
                if rec.message is not None:
                    found[rec.message] = rec.info()
        return [replace(m, file=found[m.id]) if m.id in found else m for m in rows]

    async def add_file(self, rec: FileRecord) -> None:
        row = (rec.id, rec.sha256, rec.name, rec.size, rec.mime, rec.user, rec.room, rec.to,
               rec.created, rec.w, rec.h, rec.thumb_w, rec.thumb_h, rec.message, rec.gone)

        def w() -> None:
            with self.db:
                self.db.execute(f"INSERT INTO files ({_FILE_COLUMNS}) VALUES "
                                f"({','.join('?' * 15)})", row)

        await self._run(w)

    async def link_files(self, pairs: list[tuple[int, str]]) -> None:
        """Which message posts which file, (message id, file id): committed before those
        messages are appended (a message in the journal always has its file; a link to a
        message that never got stored is cleared at the next start: FileService.start)."""
        def w() -> None:
            with self.db:
                self.db.executemany("UPDATE files SET message = ? WHERE id = ?", pairs)

        await self._run(w)

    async def file(self, file_id: str) -> FileRecord | None:
        def q() -> FileRecord | None:
            r = self.db.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?",
                                (file_id,)).fetchone()
            return None if r is None else FileRecord(*r)

        result: FileRecord | None = await self._run(q)
        return result

    async def files_used(self, user: str) -> int:
        """Bytes of the live files ``user`` (casefolded) posted."""
        def q() -> int:
            (n,) = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE gone IS NULL "
                                   "AND user = ?", (user,)).fetchone()
            return int(n)

        result: int = await self._run(q)
        return result

    async def file_refs(self, sha256: str) -> int:
        """Live files of this content."""
        def q() -> int:
            (n,) = self.db.execute("SELECT COUNT(*) FROM files WHERE sha256 = ? AND gone IS "
                                   "NULL", (sha256,)).fetchone()
            return int(n)

        result: int = await self._run(q)
        return result

    async def files_gone(self, ids: list[str], why: str) -> None:
        def w() -> None:
            with self.db:
                self.db.executemany("UPDATE files SET gone = ? WHERE id = ? AND gone IS NULL",
                                    [(why, i) for i in ids])

        await self._run(w)

    async def files_where(self, where: str, params: list[Any]) -> list[FileRecord]:
        """Live files matching ``where`` (a fixed SQL condition of the caller's)."""
        def q() -> list[FileRecord]:
            return [FileRecord(*r) for r in self.db.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE gone IS NULL AND ({where})", params)]

        result: list[FileRecord] = await self._run(q)
        return result

    async def message(self, message_id: int) -> StoredMessage | None:
        def q() -> StoredMessage | None:
            r = self.db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id = ? AND kind IS NOT "
                                "'deleted'", (message_id,)).fetchone()
            return None if r is None else _row(r)

        result: StoredMessage | None = await self._run(q)
        return result

    async def delete_message(self, message_id: int) -> None:
        """Out of history: its text is blanked and it is marked deleted (kept as a row, so
        that the journal, replayed at a start, cannot bring it back)."""
        def w() -> None:
            with self.db:
                self.db.execute("UPDATE messages SET text = '', kind = 'deleted' WHERE id = ?",
                                (message_id,))

        await self._run(w)

    async def rooms(self) -> list[str]:
        def q() -> list[str]:
            return [r[0] for r in self.db.execute("SELECT name FROM rooms ORDER BY name")]

        result: list[str] = await self._run(q)
        return result

    async def add_room(self, room: str) -> None:
        def w() -> None:
            self.db.execute("INSERT OR IGNORE INTO rooms (name) VALUES (?)", (room,))

        await self._run(w)

    async def close(self) -> None:
        if self._db is not None:
            await self.flush()
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            if self._journal is not None:
                if not self._pending:  # all in SQLite; else the next start puts it in
                    self._journal.clear()
                self._journal.close()
                self._journal = None
            self._pending = []
            await self._run(self.db.close)
            self._db = None
        self._executor.shutdown(wait=True)
