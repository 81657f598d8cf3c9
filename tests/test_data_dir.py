"""The data directory on real files, with the real server and CLI processes: it is private to
its owner, and a broken database, a read-only directory or a damaged journal gives one clear
line (or a warning) instead of a traceback or silent loss."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatscreen.client import Client
from chatscreen.server.storage import SQLiteStore, StoredMessage
from tests.helpers.server import REPO, TIMEOUT, ServerProcess, running_server

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) ")
SERVER = ("server", "--host", "127.0.0.1", "--chat-port", "0", "--screen-port", "0",
          "--no-tls")


def chatscreen(*args: str, prefix: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; a server that comes up (which it should not) is stopped by the timeout."""
    return subprocess.run([*prefix, sys.executable, "-m", "chatscreen", *args],
                          capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO,
                          env={**os.environ, **(env or {})})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(data: Path) -> dict[str, int]:
    """The mode of every file in ``data``, in its directories too (``files/...``), by
    path; a directory's as ``name/``."""
    return {str(p.relative_to(data)) + ("/" if p.is_dir() else ""): mode(p)
            for p in data.rglob("*")}


def one_clear_line(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The process failed with one line naming what it was given (and no traceback)."""
    assert out.returncode not in (0, None), (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert "Cannot listen" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), out.stderr
    return lines[0]


def connect(srv: ServerProcess, user: str) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT, reconnect=False)


def history(srv: ServerProcess, room: str = "general") -> list[str]:
    async def read() -> list[str]:
        async with connect(srv, "reader") as c:
            page = await c.history(room=room, limit=100)
            return [m["text"] for m in page["messages"]]

    return asyncio.run(asyncio.wait_for(read(), 3 * TIMEOUT))


def make_database(db: Path, n: int = 2000) -> None:
    """A real chatscreen database of several hundred pages (accounts tables included)."""
    from chatscreen.server.accounts import AccountDB

    async def fill() -> None:
        store = await SQLiteStore(db).open()
        await store.append([StoredMessage(i, "2026-12-07T10:00:00.000Z", "alice",
                                          f"message {i} " + "x" * 200, "general")
                            for i in range(1, n + 1)])
        await store.close()

    asyncio.run(fill())
    with contextlib.closing(sqlite3.connect(db)) as conn:
        AccountDB(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# -- item 8: private to its owner ---------------------------------------------------------


def test_a_fresh_data_dir_and_every_file_in_it_are_private(tmp_path: Path) -> None:
    """Messages, password hashes and the TLS key: the directory is 0700 and every file the
    server (or `chatscreen admin`) creates in it 0600, the SQLite -wal and -shm included."""
    data = tmp_path / "fresh"
    # the helper creates its data_dir itself: give the server another one (the last flag wins)
    with running_server(tmp_path / "unused", "--data-dir", str(data)) as srv:
        async def talk() -> None:
            async with connect(srv, "alice") as alice:
                await alice.join("general")
                await alice.say("general", "hello")
                await alice.pm("alice", "a note to self")

        asyncio.run(asyncio.wait_for(talk(), 3 * TIMEOUT))
        assert history(srv) == ["hello"]
        found = modes(data)
    assert {"chatscreen.db", "chatscreen.db-wal", "chatscreen.db-shm", "chatscreen.journal",
            "tls-cert.pem", "tls-key.pem"} <= set(found), found
    assert mode(data) == 0o700
    assert {name: m for name, m in found.items()
            if m != (0o700 if name.endswith("/") else 0o600)} == {}

    admin = tmp_path / "admin-made"
    out = chatscreen("admin", "--data-dir", str(admin), "add-user", "bob",
                     env={"CHATSCREEN_PASSWORD": "correct horse"})
    assert out.returncode == 0, out.stderr
    assert mode(admin) == 0o700
    assert {name: m for name, m in modes(admin).items() if m != 0o600} == {}


def test_a_data_dir_others_can_read_is_warned_about_with_the_fix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data):
        pass
    data.chmod(0o755)
    (data / "chatscreen.db").chmod(0o644)
    (data / "chatscreen.journal").chmod(0o660)
    (data / "tls-cert.pem").chmod(0o644)  # public: only writing it matters
    with running_server(data) as srv:
        err = srv.stderr_text()
    assert f"chmod 700 {data}" in err, err
    assert f"chmod 600 {data / 'chatscreen.db'}" in err, err
    assert f"chmod 600 {data / 'chatscreen.journal'}" in err, err
    assert "tls-key.pem" not in err and "tls-cert.pem" not in err, err
    assert [line for line in err.splitlines() if "chmod" in line and "WARNING" not in line] == []


# -- item 10: bad storage -----------------------------------------------------------------


def _random(db: Path) -> None:
    db.write_bytes(os.urandom(db.stat().st_size))


def _truncated(db: Path) -> None:
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 3)


def _page_corrupted(db: Path) -> None:
    (page_size,) = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()
    pages = db.stat().st_size // page_size
    with db.open("r+b") as f:  # the header stays whole: SQLite opens it happily
        for page in (pages // 2, pages // 2 + 1, 3):
            f.seek(page * page_size)
            f.write(os.urandom(page_size))


def _text(db: Path) -> None:
    db.write_text("this is not a database\n" * 100)


@pytest.mark.parametrize("damage", [_random, _truncated, _page_corrupted, _text],
                         ids=["random", "truncated", "page-corrupted", "text"])
def test_a_damaged_database_is_one_clear_line_naming_it(tmp_path: Path, damage: object) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    db = data / "chatscreen.db"
    make_database(db)
    damage(db)  # type: ignore[operator]
    before = db.read_bytes()
    out = chatscreen(*SERVER, "--data-dir", str(data))
    line = one_clear_line(out, str(db))
    assert "backup" in line, line
    assert db.read_bytes() == before  # nothing was written over it


def test_another_programs_database_is_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    db = data / "chatscreen.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE messages (subject TEXT, body TEXT)")
        conn.commit()
    out = chatscreen(*SERVER, "--data-dir", str(data))
    assert "not a valid chatscreen database" in one_clear_line(out, str(db))


def test_a_journal_that_cannot_be_read_is_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "chatscreen.journal").mkdir(mode=0o700, parents=True)
    out = chatscreen(*SERVER, "--data-dir", str(data))
    one_clear_line(out, str(data / "chatscreen.journal"))


@pytest.mark.parametrize("damage", [_random, _text], ids=["random", "text"])
def test_admin_on_a_damaged_database_is_one_clear_line(tmp_path: Path, damage: object) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    db = data / "chatscreen.db"
    make_database(db, 10)
    damage(db)  # type: ignore[operator]
    out = chatscreen("admin", "--data-dir", str(data), "list")
    assert "backup" in one_clear_line(out, str(db))


def test_the_integrity_check_at_start_is_timed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    make_database(data / "chatscreen.db")
    with running_server(data) as srv:
        err = srv.stderr_text()
    assert f"quick_check of {data / 'chatscreen.db'}" in err and " ms" in err, err


def test_a_zero_length_database_starts_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "chatscreen.db").touch()
    with running_server(data) as srv:
        err = srv.stderr_text()
    warned = [line for line in err.splitlines() if "WARNING" in line and "empty" in line]
    assert len(warned) == 1 and str(data / "chatscreen.db") in warned[0], err


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[tuple[str, ...]]:
    """A command prefix under which ``path`` is on a read-only mount (root ignores mode
    bits, so it gets a private mount namespace with a read-only bind mount); skips where
    that cannot be had."""
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield ()
        finally:
            path.chmod(0o700)
        return
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount the data directory read-only")
    prefix = ("unshare", "-m", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"',
              str(path))
    probe = subprocess.run([*prefix, "sh", "-c", f"touch '{path}/x'"], capture_output=True,
                           text=True, timeout=TIMEOUT)
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot mount {path} read-only here: {probe.stderr.strip()}")
    yield prefix


@pytest.mark.parametrize("existing", [False, True], ids=["empty", "with-a-database"])
def test_a_read_only_data_dir_is_one_clear_line(tmp_path: Path, existing: bool) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    if existing:
        with running_server(data):
            pass
    for tls in ((), ("--no-tls",)):
        with read_only(data) as prefix:
            out = chatscreen(*SERVER[:-1], *tls, "--data-dir", str(data), prefix=prefix)
        line = one_clear_line(out, str(data))
        assert "read-only" in line.lower(), line
    # (in a directory with no database, `admin list` has nothing to read: add-user writes one)
    command = ["list"] if existing else ["add-user", "bob"]
    with read_only(data) as prefix:
        out = chatscreen("admin", "--data-dir", str(data), *command, prefix=prefix,
                         env={"CHATSCREEN_PASSWORD": "correct horse"})
    assert "read-only" in one_clear_line(out, str(data)).lower()


def test_a_read_only_database_file_is_one_clear_line(tmp_path: Path) -> None:
    """A database the server could open but not write (here immutable, which binds root
    too) would take messages into the journal and never store them."""
    data = tmp_path / "data"
    with running_server(data):
        pass
    db = data / "chatscreen.db"
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here")
    try:
        out = chatscreen(*SERVER, "--data-dir", str(data))
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    one_clear_line(out, str(db))


def journal_line(i: int, text: str) -> bytes:
    row = [i, "2026-12-07T10:00:00.000Z", "alice", text, "general", None, f"c-{i}"]
    return json.dumps(row).encode() + b"\n"


def test_a_bad_journal_line_is_skipped_and_every_other_line_recovered(tmp_path: Path) -> None:
    """A damaged line in the middle of the journal (a bad disk block, a stray edit): the
    lines after it are not lost, the unreadable ones are kept in a private copy, and the
    log says which lines; a last line cut short (kill -9 mid-write) is only noted."""
    data = tmp_path / "data"
    with running_server(data):
        pass
    bad = [b'[3,"2026-12-07T10:00:00.000Z","alice","dam\x00\xffaged",\n',
           b'{"not": "a message"}\n', b'[5,null,"alice","no time","general",null,null]\n']
    (data / "chatscreen.journal").write_bytes(
        journal_line(1, "one") + journal_line(2, "two") + bad[0] + journal_line(4, "four")
        + bad[1] + bad[2] + journal_line(6, "six") + b'[7,"2026-12-07T10:00:00.0')
    with running_server(data) as srv:
        assert history(srv) == ["one", "two", "four", "six"]
        err = srv.stderr_text()
    copies = list(data.glob("chatscreen.journal.bad-*"))
    assert len(copies) == 1, list(data.iterdir())
    assert copies[0].read_bytes() == b"".join(bad)
    assert mode(copies[0]) == 0o600
    warned = [line for line in err.splitlines() if "WARNING" in line and "journal" in line]
    assert len(warned) == 1, err
    assert "lines 3, 5, 6" in warned[0] and str(copies[0]) in warned[0], warned
    assert (data / "chatscreen.journal").read_bytes() == b""
    with running_server(data) as srv:  # the copy is made once: the journal was emptied
        assert history(srv) == ["one", "two", "four", "six"]
    assert len(list(data.glob("chatscreen.journal.bad-*"))) == 1


def test_a_journal_whose_last_line_was_cut_short_is_quiet(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data):
        pass
    (data / "chatscreen.journal").write_bytes(journal_line(1, "one")
                                              + b'[2,"2026-12-07T10:00:00.0')
    with running_server(data) as srv:
        assert history(srv) == ["one"]
        err = srv.stderr_text()
    assert "WARNING" not in err, err
    assert not list(data.glob("chatscreen.journal.bad-*"))
