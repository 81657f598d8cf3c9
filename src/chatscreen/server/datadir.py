"""The server's data directory: private to its owner, writable, and its database sound.

It holds every message (private ones included), the password hashes and the TLS key, so the
directory is made 0700 and every file in it 0600; looser modes an operator left are warned
about at start (with the ``chmod`` that fixes them), not changed. Whatever is wrong with the
directory or the database at start is a :class:`StorageError`: one line naming the file and
what to do, for ``chatscreen server`` and ``chatscreen admin`` alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sqlite3
import stat
import time
from pathlib import Path

from chatscreen.errors import ChatscreenError

log = logging.getLogger("chatscreen.server")

DIR_MODE = 0o700
FILE_MODE = 0o600
CHECKS = ("quick", "full", "off")  # PRAGMA quick_check, integrity_check, or none
BUSY_TIMEOUT_MS = 5000  # another process (`chatscreen admin`) holding the write lock
# not secret: only its write bits matter (the key next to it is checked like any file)
PUBLIC_FILES = frozenset({"tls-cert.pem"})
# Held (shared) by a running server: `chatscreen admin` knows from it whether one runs; the
# kernel drops it however the server ends.
RUNNING_LOCK = "server.lock"
_MOVE_ASIDE = ("restore it from a backup, or move it aside (with its -wal and -shm files) to "
               "start afresh")


class StorageError(ChatscreenError):
    """The data directory or the database cannot be used; the message says what to do."""


def reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def prepare(data_dir: Path) -> None:
    """Create ``data_dir`` (0700) if need be and make sure the server can write in it."""
    if data_dir.exists() and not data_dir.is_dir():
        raise StorageError(f"the data directory {data_dir} is not a directory: move it aside, "
                           "or give another one (--data-dir)")
    try:
        data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the data directory {data_dir}: {reason(exc)}: "
                           "create it, or give another one (--data-dir)") from None
    probe = data_dir / f".write-test-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         FILE_MODE))
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"cannot write to {data_dir}/: {reason(exc)}: the server keeps its "
                           "messages there; make it writable, or give another one "
                           "(--data-dir)") from None


def loose_modes(data_dir: Path) -> list[tuple[Path, int, int]]:
    """(path, mode, the mode it should have) of the directory and of every file in it that
    other users may read or write."""
    found: list[tuple[Path, int, int]] = []
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(data_dir.stat().st_mode)
        if mode & 0o077:
            found.append((data_dir, mode, DIR_MODE))
    with contextlib.suppress(OSError), os.scandir(data_dir) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                st = entry.stat()
                mode = stat.S_IMODE(st.st_mode)
                others = 0o022 if entry.name in PUBLIC_FILES else 0o077
                if mode & others:
                    want = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
                    found.append((Path(entry.path), mode, want))
    return found


def warn_loose_modes(data_dir: Path) -> None:
    for path, mode, want in loose_modes(data_dir):
        what = "directory" if want == DIR_MODE else "file"
        log.warning("%s %s is open to other users (mode %04o); it holds private messages and "
                    "password hashes; run: chmod %o %s", what, path, mode, want,
                    shlex.quote(str(path)))


def create_private(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists (SQLite gives its -wal and -shm
    files the database file's mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))


def describe(path: Path, exc: sqlite3.Error, *, schema: bool = False) -> str:
    """One line for what SQLite said about ``path``, with what to do about it (``schema``:
    it said so when creating chatscreen's tables, a plain error means some other database)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or (schema and name == "SQLITE_ERROR"):
        return f"{path} is not a valid chatscreen database ({exc}): {_MOVE_ASIDE}"
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        return (f"cannot write to {path} ({exc}): make it, its -wal and -shm files and "
                f"{path.parent}/ writable by the server")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"{path} is locked ({exc}): is another server or `chatscreen admin` using it?"
    if name.startswith("SQLITE_FULL"):
        return f"cannot write to {path} ({exc}): free some disk space"
    if name.startswith("SQLITE_CANTOPEN"):
        return (f"cannot open {path} ({exc}): check that it, its -wal and -shm files and "
                f"{path.parent}/ can be read and written")
    return f"cannot use {path} ({exc}): check the disk, or {_MOVE_ASIDE}"


def open_database(path: Path, *, check: str = "quick") -> sqlite3.Connection:
    """The database at ``path`` (created 0600 if missing), in WAL mode, checked writable
    and (``check``: "quick", "full" or "off") sound; else a :class:`StorageError`."""
    try:
        size: int | None = path.stat().st_size
    except FileNotFoundError:
        size = None
    try:
        create_private(path)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {reason(exc)}") from None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:  # a directory, say
        raise StorageError(describe(path, exc)) from None
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if check != "off":  # first: nothing is written to a damaged file
            _check_sound(db, path, check)
        db.execute("PRAGMA journal_mode=WAL")
        _check_writable(db)
    except sqlite3.Error as exc:
        db.close()
        raise StorageError(describe(path, exc)) from None
    except BaseException:
        db.close()
        raise
    if size == 0:
        log.warning("%s was empty (0 bytes): starting with no history and no accounts; if it "
                    "held any, stop the server and restore it from a backup", path)
    elif size is None:
        log.info("storage: created %s", path)
    return db


def _check_writable(db: sqlite3.Connection) -> None:
    """SQLite opens a file it cannot write read-only without a word, and would then refuse
    every message; a write rolled back tells."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE chatscreen_write_test (x)")
    finally:
        db.execute("ROLLBACK")


def _check_sound(db: sqlite3.Connection, path: Path, check: str) -> None:
    pragma = "quick_check" if check == "quick" else "integrity_check"
    t0 = time.perf_counter()
    problems = [str(r[0]) for r in db.execute(f"PRAGMA {pragma}(10)")]
    ms = 1e3 * (time.perf_counter() - t0)
    if problems != ["ok"]:
        first = " ".join(problems[0].split())
        raise StorageError(f"{path} is damaged ({pragma}: {first}"
                           f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}): "
                           f"{_MOVE_ASIDE}")
    size = path.stat().st_size
    log.info("storage: %s of %s (%.1f MB): ok in %.0f ms", pragma, path, size / 1e6, ms)


def hold_running_lock(data_dir: Path) -> int | None:
    """Take the running server's lock on ``data_dir``; returns its descriptor (close it to
    let go), or None where locks cannot be had (no flock, or the file cannot be made)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    try:
        fd = os.open(data_dir / RUNNING_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def server_running(data_dir: Path) -> bool | None:
    """Whether a server runs on ``data_dir`` (None: cannot tell)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(data_dir / RUNNING_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # no server ever ran here since locks were taken (or it was removed)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # (which also drops the lock, if it was had)
    return False
