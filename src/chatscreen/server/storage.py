"""Message history behind a small interface; SQLite (WAL) is the embedded default.

The server assigns ids itself (``last_id()`` at start, then counting up) so that it can order
messages without a round trip to storage, and only acknowledges a message once ``append`` has
committed it. A Redis or PostgreSQL store implements the same four methods.

SQLite runs on one dedicated thread: every call is handed to it, so the event loop never waits
on disk, and all writes are serialised in submission order. With ``synchronous=NORMAL`` in WAL
mode a commit survives the process being killed (kill -9); only a power loss can drop the last
commits. ``durability="full"`` makes every commit survive that too, at the cost of an fsync.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    ts: str  # ISO 8601 UTC, millisecond precision, e.g. 2026-11-26T07:42:21.123Z
    user: str
    text: str
    room: str | None = None  # a room message ...
    to: str | None = None  # ... or a private one
    cid: str | None = None  # the sender's own id for it, for de-duplication

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "ts": self.ts, "user": self.user, "text": self.text}
        if self.room is not None:
            out["room"] = self.room
        if self.to is not None:
            out["to"] = self.to
        if self.cid is not None:
            out["cid"] = self.cid
        return out


class MessageStore(Protocol):
    async def last_id(self) -> int: ...

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        """Store messages durably; returns once they are committed."""

    async def room_history(
        self, room: str, *, before: int | None = None, after: int | None = None, limit: int
    ) -> list[StoredMessage]:
        """Messages of a room in id order: the newest ``limit`` before ``before``, or the
        oldest ``limit`` after ``after``."""

    async def private_history(
        self, user: str, peer: str | None, *, before: int | None = None,
        after: int | None = None, limit: int,
    ) -> list[StoredMessage]:
        """Private messages to or from ``user`` (with ``peer`` only, when given)."""

    async def rooms(self) -> list[str]: ...

    async def add_room(self, room: str) -> None: ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id      INTEGER PRIMARY KEY,
    ts      TEXT NOT NULL,
    user    TEXT NOT NULL,
    text    TEXT NOT NULL,
    room    TEXT,
    to_user TEXT,
    cid     TEXT
);
CREATE INDEX IF NOT EXISTS messages_room ON messages (room, id) WHERE room IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_private ON messages (user, to_user, id) WHERE room IS NULL;
CREATE INDEX IF NOT EXISTS messages_private_to ON messages (to_user, id) WHERE room IS NULL;
CREATE TABLE IF NOT EXISTS rooms (
    name    TEXT PRIMARY KEY,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""

_COLUMNS = "id, ts, user, text, room, to_user, cid"


def _row(row: tuple[Any, ...]) -> StoredMessage:
    return StoredMessage(*row)


class SQLiteStore:
    def __init__(self, path: Path, *, durability: str = "normal") -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._durability = "FULL" if durability == "full" else "NORMAL"

    async def open(self) -> SQLiteStore:
        await self._run(self._open)
        return self

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._durability}")
        db.executescript(_SCHEMA)
        self._db = db

    async def _run(self, fn: Any, *args: Any) -> Any:
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
        rows = [(m.id, m.ts, m.user, m.text, m.room, m.to, m.cid) for m in messages]

        def write() -> None:
            with self.db:  # one transaction per batch
                self.db.execute("BEGIN")
                self.db.executemany(
                    f"INSERT INTO messages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)", rows)

        await self._run(write)

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
        sql = f"SELECT {_COLUMNS} FROM messages WHERE {where} ORDER BY id {order} LIMIT ?"
        params.append(limit)

        def q() -> list[StoredMessage]:
            rows = [_row(r) for r in self.db.execute(sql, params)]
            return rows if order == "ASC" else rows[::-1]

        result: list[StoredMessage] = await self._run(q)
        return result

    async def room_history(self, room: str, *, before: int | None = None,
                           after: int | None = None, limit: int) -> list[StoredMessage]:
        return await self._query("room = ?", [room], before, after, limit)

    async def private_history(self, user: str, peer: str | None, *, before: int | None = None,
                              after: int | None = None, limit: int) -> list[StoredMessage]:
        if peer is None:
            where, params = "room IS NULL AND (user = ? OR to_user = ?)", [user, user]
        else:
            where = "room IS NULL AND ((user = ? AND to_user = ?) OR (user = ? AND to_user = ?))"
            params = [user, peer, peer, user]
        return await self._query(where, params, before, after, limit)

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
            await self._run(self.db.close)
            self._db = None
        self._executor.shutdown(wait=True)
