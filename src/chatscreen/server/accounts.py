"""Owned usernames, roles, bans and the moderation log, in the server's SQLite database.

:class:`AccountDB` is the synchronous SQL, usable on its own (``chatscreen admin`` works on
the data directory with no server running). :class:`SQLiteAccounts` runs the same calls on
the message store's one SQLite thread, so the event loop never waits on disk. Passwords are
hashed with argon2id (:func:`hash_password`, :func:`verify_password`); both take tens of
milliseconds and are meant to run off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chatscreen.protocol.lookalike import name_skeleton
from chatscreen.protocol.schema import MIN_PASSWORD as MIN_PASSWORD  # the server's, too
from chatscreen.server.datadir import StorageError, describe, open_database, prepare

if TYPE_CHECKING:
    from chatscreen.server.storage import SQLiteStore

ROLES = ("admin", "moderator", "member")
RANK = {"admin": 3, "moderator": 2, "member": 1, "guest": 0}

_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class Account:
    key: str  # the casefolded name
    name: str  # as the owner spelled it
    hash: str
    role: str
    created: str
    skeleton: str  # what the name looks like (protocol.lookalike.name_skeleton)
    since: int | None  # private messages of ids above this are the account's; None: the
    # server sets it (to its last message id) when it first sees the account


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """What `chatscreen admin` asked of the running server (see ``admin_requests``)."""

    id: int
    action: str
    kind: str
    target: str
    reason: str


# an answer of the running server that starts so says the request failed (`admin kick` of
# someone not connected): the command exits 1 with the rest
ADMIN_FAILED = "! "
ANSWERED_KEPT = 3600.0  # s: answers nobody read (the admin command was killed) are dropped


@dataclass(frozen=True, slots=True)
class Ban:
    kind: str  # "account" or "mute" (target: a casefolded name), "address" (target: an IP)
    target: str
    until: float | None  # Unix time; None: for ever
    reason: str
    by: str
    created: str
    by_role: str = "admin"  # the role of who placed it (`chatscreen admin`: admin)

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now

    def until_text(self) -> str:
        if self.until is None:
            return "for ever"
        return "until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.until))


SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name    TEXT PRIMARY KEY,          -- casefolded
    display TEXT NOT NULL,
    hash    TEXT NOT NULL,             -- argon2id
    role    TEXT NOT NULL DEFAULT 'member',
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    skeleton TEXT,                     -- name_skeleton(display): look-alikes share it
    since   INTEGER DEFAULT 0          -- see Account.since
);
CREATE TABLE IF NOT EXISTS bans (
    kind    TEXT NOT NULL,             -- 'account', 'address' or 'mute' (an account's)
    target  TEXT NOT NULL,
    until   REAL,                      -- Unix time, NULL: for ever
    reason  TEXT NOT NULL DEFAULT '',
    by_user TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    by_role TEXT NOT NULL DEFAULT 'admin',  -- the role by_user had: a ban binds lower ranks
    PRIMARY KEY (kind, target)
);
CREATE TABLE IF NOT EXISTS kicks (         -- no longer used (admin_requests replaced it)
    target  TEXT NOT NULL,
    reason  TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS admin_requests (  -- asked by `chatscreen admin`, answered by the
    id      INTEGER PRIMARY KEY,             -- running server with what it did
    action  TEXT NOT NULL,             -- kick, or the change made with it: ban, unban, mute ...
    kind    TEXT NOT NULL DEFAULT 'account',  -- 'address': target is an IP
    target  TEXT NOT NULL,             -- casefolded name, or the IP
    reason  TEXT NOT NULL DEFAULT '',
    asked   REAL NOT NULL,             -- Unix time
    done    REAL,                      -- when the server answered (NULL: not yet)
    result  TEXT
);
CREATE TABLE IF NOT EXISTS private_rooms (
    room    TEXT PRIMARY KEY,
    owner   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS invitations (
    room    TEXT NOT NULL,
    user    TEXT NOT NULL,             -- casefolded
    PRIMARY KEY (room, user)
);
CREATE TABLE IF NOT EXISTS memberships (   -- the rooms an account is in (joined, not left)
    user    TEXT NOT NULL,             -- casefolded
    room    TEXT NOT NULL,
    PRIMARY KEY (user, room)
);
CREATE TABLE IF NOT EXISTS read_markers (  -- the last message id an account has read ...
    user    TEXT NOT NULL,             -- casefolded
    conv    TEXT NOT NULL,             -- ... in '#room' or in '@peer' (casefolded)
    id      INTEGER NOT NULL,
    PRIMARY KEY (user, conv)
);
CREATE TABLE IF NOT EXISTS moderation (
    id      INTEGER PRIMARY KEY,
    ts      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
"""


_ACCOUNT = "SELECT name, display, hash, role, created, skeleton, since FROM accounts"
_BAN_COLUMNS = "kind, target, until, reason, by_user, created, by_role"


class AccountDB:
    """The SQL, on one sqlite3 connection (call it from one thread at a time)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Databases made before accounts had a skeleton and a since: add the columns (an
        account made then keeps all its private messages), and the skeletons of the
        accounts that have none (made by an older version of chatscreen); before bans had
        by_role: theirs count as an admin's."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # `chatscreen admin` may be at it too
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(accounts)")}
            if "skeleton" not in columns:
                self.db.execute("ALTER TABLE accounts ADD COLUMN skeleton TEXT")
            if "since" not in columns:
                self.db.execute("ALTER TABLE accounts ADD COLUMN since INTEGER DEFAULT 0")
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(bans)")}
            if "by_role" not in columns:  # bans from before they knew who placed them
                self.db.execute("ALTER TABLE bans ADD COLUMN by_role TEXT NOT NULL "
                                "DEFAULT 'admin'")
            self.db.execute("CREATE INDEX IF NOT EXISTS accounts_skeleton "
                            "ON accounts (skeleton)")
            rows = self.db.execute("SELECT name, display FROM accounts "
                                   "WHERE skeleton IS NULL").fetchall()
            self.db.executemany("UPDATE accounts SET skeleton = ? WHERE name = ?",
                                [(name_skeleton(display), key) for key, display in rows])

    def update_skeletons(self) -> int:
        """Compute every account's skeleton again (Unicode's data may have changed since
        they were stored); returns how many changed."""
        rows = self.db.execute("SELECT name, display, skeleton FROM accounts").fetchall()
        changed = [(skel, key) for key, display, old in rows
                   if (skel := name_skeleton(display)) != old]
        if changed:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("UPDATE accounts SET skeleton = ? WHERE name = ?", changed)
        return len(changed)

    @classmethod
    def open(cls, data_dir: Path) -> AccountDB:
        """The accounts in ``data_dir`` (made 0700, its database 0600, if new); a damaged or
        read-only one is a :class:`~chatscreen.server.datadir.StorageError`."""
        prepare(data_dir)
        path = data_dir / "chatscreen.db"
        db = open_database(path, check="off")  # a server checks it at start
        try:
            return cls(db)
        except sqlite3.Error as exc:
            db.close()
            raise StorageError(describe(path, exc, schema=True)) from None

    def accounts(self) -> list[Account]:
        rows = self.db.execute(f"{_ACCOUNT} ORDER BY name")
        return [Account(*r) for r in rows]

    def get(self, key: str) -> Account | None:
        row = self.db.execute(f"{_ACCOUNT} WHERE name = ?", (key.casefold(),)).fetchone()
        return Account(*row) if row else None

    def lookalike(self, name: str) -> Account | None:
        """An account whose name is ``name`` or looks like it (by the index on skeletons)."""
        row = (self.db.execute(f"{_ACCOUNT} WHERE name = ?", (name.casefold(),)).fetchone()
               or self.db.execute(f"{_ACCOUNT} WHERE skeleton = ? LIMIT 1",
                                  (name_skeleton(name),)).fetchone())
        return Account(*row) if row else None

    def create(self, name: str, hash_: str, role: str = "member",
               since: int | None = None) -> str | None:
        """Create an account, unless an account has this name or one that looks like it:
        then return that account's name."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            taken = self.lookalike(name)
            if taken is not None:
                return taken.name
            self.db.execute("INSERT INTO accounts (name, display, hash, role, skeleton, since) "
                            "VALUES (?,?,?,?,?,?)",
                            (name.casefold(), name, hash_, role, name_skeleton(name), since))
        return None

    def add(self, name: str, hash_: str, role: str = "member") -> bool:
        """Create an account; False if the name, or one that looks like it, is taken."""
        return self.create(name, hash_, role) is None

    def settle(self, since: int) -> int:
        """Accounts made by `chatscreen admin` have their private messages from ``since``
        on (the running server's last message id); returns how many there were."""
        cur = self.db.execute("UPDATE accounts SET since = ? WHERE since IS NULL", (since,))
        return cur.rowcount

    def set_role(self, key: str, role: str) -> bool:
        cur = self.db.execute("UPDATE accounts SET role = ? WHERE name = ?",
                              (role, key.casefold()))
        return cur.rowcount > 0

    def bans(self) -> list[Ban]:
        rows = self.db.execute("SELECT " + _BAN_COLUMNS + " FROM bans "
                               "ORDER BY kind, target")
        return [Ban(*r) for r in rows]

    def ban(self, kind: str, target: str, until: float | None, reason: str, by: str,
            by_role: str = "admin") -> Ban:
        target = target.casefold() if kind != "address" else target
        self.db.execute("INSERT OR REPLACE INTO bans (kind, target, until, reason, by_user, "
                        "by_role) VALUES (?,?,?,?,?,?)",
                        (kind, target, until, reason, by, by_role))
        row = self.db.execute("SELECT " + _BAN_COLUMNS + " FROM bans "
                              "WHERE kind = ? AND target = ?", (kind, target)).fetchone()
        return Ban(*row)

    def unban(self, kind: str, target: str) -> bool:
        target = target.casefold() if kind != "address" else target
        cur = self.db.execute("DELETE FROM bans WHERE kind = ? AND target = ?", (kind, target))
        return cur.rowcount > 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit for what is done inside: the server sees all of it or none."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            yield

    def ask(self, action: str, kind: str, target: str, reason: str = "") -> int:
        """A request for the running server (`chatscreen admin`); returns its id."""
        target = target.casefold() if kind != "address" else target
        cur = self.db.execute("INSERT INTO admin_requests (action, kind, target, reason, asked) "
                              "VALUES (?,?,?,?,?)", (action, kind, target, reason, time.time()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def answer_of(self, request: int) -> str | None:
        """The server's answer to a request, once it gave one."""
        row = self.db.execute("SELECT result FROM admin_requests WHERE id = ? AND done IS NOT "
                              "NULL", (request,)).fetchone()
        return str(row[0]) if row else None

    def withdraw(self, request: int) -> bool:
        """Take a request back, unless the server answered it; True if it was taken back."""
        cur = self.db.execute("DELETE FROM admin_requests WHERE id = ? AND done IS NULL",
                              (request,))
        return cur.rowcount > 0

    def forget(self, request: int) -> None:
        self.db.execute("DELETE FROM admin_requests WHERE id = ?", (request,))

    def pending_requests(self) -> list[AdminRequest]:
        """The requests not answered yet, oldest first."""
        rows = self.db.execute("SELECT id, action, kind, target, reason FROM admin_requests "
                               "WHERE done IS NULL ORDER BY id")
        return [AdminRequest(*r) for r in rows]

    def answer_requests(self, answers: list[tuple[int, str]]) -> None:
        """The server's answers: (request id, what it did)."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE admin_requests SET done = ?, result = ? WHERE id = ?",
                                [(now, result, rid) for rid, result in answers])
            self.db.execute("DELETE FROM admin_requests WHERE done < ?", (now - ANSWERED_KEPT,))

    def log(self, actor: str, action: str, target: str, detail: str = "") -> None:
        self.db.execute("INSERT INTO moderation (actor, action, target, detail) VALUES (?,?,?,?)",
                        (actor, action, target, detail))

    def moderation_log(self, limit: int = 100) -> list[tuple[str, str, str, str, str]]:
        rows = self.db.execute("SELECT ts, actor, action, target, detail FROM moderation "
                               "ORDER BY id DESC LIMIT ?", (limit,))
        return [tuple(r) for r in rows][::-1]

    def private_rooms(self) -> dict[str, set[str]]:
        """Private room -> the (casefolded) names invited to it."""
        out: dict[str, set[str]] = {r: set() for (r,) in
                                    self.db.execute("SELECT room FROM private_rooms")}
        for room, user in self.db.execute("SELECT room, user FROM invitations"):
            out.setdefault(room, set()).add(user)
        return out

    def add_private_room(self, room: str, owner: str, owner_invited: bool = True) -> None:
        """A private room; its owner is invited unless a guest (whose invitation is not its
        name's: see chatscreen.server.session.Guest)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR IGNORE INTO private_rooms (room, owner) VALUES (?,?)",
                            (room, owner))
            if owner_invited:
                self.db.execute("INSERT OR IGNORE INTO invitations (room, user) VALUES (?,?)",
                                (room, owner.casefold()))

    def invite(self, room: str, user: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO invitations (room, user) VALUES (?,?)",
                        (room, user.casefold()))

    def uninvite(self, room: str, user: str) -> None:
        self.db.execute("DELETE FROM invitations WHERE room = ? AND user = ?",
                        (room, user.casefold()))

    def state(self, key: str) -> tuple[list[str], dict[str, int]]:
        """An account's rooms and read markers (conversation -> last id read)."""
        rooms = [r for (r,) in self.db.execute(
            "SELECT room FROM memberships WHERE user = ? ORDER BY room", (key,))]
        marks = {c: int(i) for c, i in self.db.execute(
            "SELECT conv, id FROM read_markers WHERE user = ?", (key,))}
        return rooms, marks

    def set_member(self, key: str, room: str, member: bool) -> None:
        """Put an account in a room, or take it out (and forget its marker there)."""
        if member:
            self.db.execute("INSERT OR IGNORE INTO memberships (user, room) VALUES (?,?)",
                            (key, room))
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM memberships WHERE user = ? AND room = ?", (key, room))
            self.db.execute("DELETE FROM read_markers WHERE user = ? AND conv = ?",
                            (key, f"#{room}"))

    def set_marker(self, key: str, conv: str, id_: int, dropped: list[str]) -> None:
        """Move a read marker forward (never back); forget those in ``dropped``."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO read_markers (user, conv, id) VALUES (?,?,?) "
                            "ON CONFLICT (user, conv) DO UPDATE SET id = MAX(id, excluded.id)",
                            (key, conv, id_))
            self.db.executemany("DELETE FROM read_markers WHERE user = ? AND conv = ?",
                                [(key, c) for c in dropped])

    def version(self) -> int:
        """Changes when another connection (``chatscreen admin``) committed something."""
        (value,) = self.db.execute("PRAGMA data_version").fetchone()
        return int(value)

    def close(self) -> None:
        self.db.close()


class AccountStore(Protocol):
    """Accounts, bans and the moderation log, as the chat service uses them."""

    async def accounts(self) -> list[Account]: ...

    async def add(self, name: str, hash_: str, role: str = "member") -> bool: ...

    async def create(self, name: str, hash_: str, role: str = "member",
                     since: int | None = None) -> str | None: ...

    async def settle(self, since: int) -> int: ...

    async def update_skeletons(self) -> int: ...

    async def set_role(self, key: str, role: str) -> bool: ...

    async def bans(self) -> list[Ban]: ...

    async def ban(self, kind: str, target: str, until: float | None, reason: str,
                  by: str, by_role: str = "admin") -> Ban: ...

    async def unban(self, kind: str, target: str) -> bool: ...

    async def log(self, actor: str, action: str, target: str, detail: str = "") -> None: ...

    async def pending_requests(self) -> list[AdminRequest]: ...

    async def answer_requests(self, answers: list[tuple[int, str]]) -> None: ...

    async def version(self) -> int: ...

    async def private_rooms(self) -> dict[str, set[str]]: ...

    async def add_private_room(self, room: str, owner: str,
                               owner_invited: bool = True) -> None: ...

    async def invite(self, room: str, user: str) -> None: ...

    async def uninvite(self, room: str, user: str) -> None: ...

    async def state(self, key: str) -> tuple[list[str], dict[str, int]]: ...

    async def set_member(self, key: str, room: str, member: bool) -> None: ...

    async def set_marker(self, key: str, conv: str, id_: int, dropped: list[str]) -> None: ...


class SQLiteAccounts:
    """:class:`AccountDB` on the message store's SQLite thread and connection."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self._db: AccountDB | None = None

    async def open(self) -> SQLiteAccounts:
        def make() -> AccountDB:
            return AccountDB(self.store.db)

        self._db = await self.store._run(make)
        return self

    async def _call(self, name: str, *args: Any) -> Any:
        assert self._db is not None, "SQLiteAccounts.open() was not awaited"
        return await self.store._run(getattr(self._db, name), *args)

    async def accounts(self) -> list[Account]:
        result: list[Account] = await self._call("accounts")
        return result

    async def add(self, name: str, hash_: str, role: str = "member") -> bool:
        return bool(await self._call("add", name, hash_, role))

    async def create(self, name: str, hash_: str, role: str = "member",
                     since: int | None = None) -> str | None:
        result: str | None = await self._call("create", name, hash_, role, since)
        return result

    async def settle(self, since: int) -> int:
        return int(await self._call("settle", since))

    async def update_skeletons(self) -> int:
        return int(await self._call("update_skeletons"))

    async def set_role(self, key: str, role: str) -> bool:
        return bool(await self._call("set_role", key, role))

    async def bans(self) -> list[Ban]:
        result: list[Ban] = await self._call("bans")
        return result

    async def ban(self, kind: str, target: str, until: float | None, reason: str,
                  by: str, by_role: str = "admin") -> Ban:
        result: Ban = await self._call("ban", kind, target, until, reason, by, by_role)
        return result

    async def unban(self, kind: str, target: str) -> bool:
        return bool(await self._call("unban", kind, target))

    async def log(self, actor: str, action: str, target: str, detail: str = "") -> None:
        await self._call("log", actor, action, target, detail)

    async def pending_requests(self) -> list[AdminRequest]:
        result: list[AdminRequest] = await self._call("pending_requests")
        return result

    async def answer_requests(self, answers: list[tuple[int, str]]) -> None:
        await self._call("answer_requests", answers)

    async def version(self) -> int:
        return int(await self._call("version"))

    async def private_rooms(self) -> dict[str, set[str]]:
        result: dict[str, set[str]] = await self._call("private_rooms")
        return result

    async def add_private_room(self, room: str, owner: str,
                               owner_invited: bool = True) -> None:
        await self._call("add_private_room", room, owner, owner_invited)

    async def invite(self, room: str, user: str) -> None:
        await self._call("invite", room, user)

    async def uninvite(self, room: str, user: str) -> None:
        await self._call("uninvite", room, user)

    async def state(self, key: str) -> tuple[list[str], dict[str, int]]:
        result: tuple[list[str], dict[str, int]] = await self._call("state", key)
        return result

    async def set_member(self, key: str, room: str, member: bool) -> None:
        await self._call("set_member", key, room, member)

    async def set_marker(self, key: str, conv: str, id_: int, dropped: list[str]) -> None:
        await self._call("set_marker", key, conv, id_, dropped)
