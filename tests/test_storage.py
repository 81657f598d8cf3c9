"""The message store on real SQLite files: the journal that acknowledges a message before
SQLite has it, what a restart makes of a journal, and that queries never miss a message."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from chatscreen.server import storage
from chatscreen.server.storage import Journal, SQLiteStore, StoredMessage

TIMEOUT = 10.0


def msgs(first: int, n: int, room: str = "general") -> list[StoredMessage]:
    return [StoredMessage(i, "2026-11-26T10:00:00.000Z", "alice", f"m{i} \n\x00 ünï", room,
                          None, f"s-{i}") for i in range(first, first + n)]


def stored_ids(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM messages ORDER BY id")]


async def until(done: Callable[[], bool], what: str) -> None:
    """Poll ``done`` until it holds, for at most TIMEOUT seconds."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {TIMEOUT} s: {what}")
        await asyncio.sleep(0.01)


def refuse_inserts(db: Path) -> sqlite3.Connection:
    """Make SQLite refuse inserts into messages (as a broken file would) until the returned
    connection drops the trigger."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("CREATE TRIGGER refuse BEFORE INSERT ON messages "
                  "BEGIN SELECT RAISE(FAIL, 'refused for the test'); END")
    return other


def run(coro: object) -> object:
    async def bounded() -> object:
        async with asyncio.timeout(TIMEOUT):
            return await coro  # type: ignore[misc]

    return asyncio.run(bounded())


def test_an_appended_message_is_in_the_journal_and_then_in_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "chatscreen.db"

    async def scenario() -> None:
        store = await SQLiteStore(db).open()
        batch = msgs(1, 3)
        await store.append(batch)
        # acknowledged: on disk before SQLite has seen it
        assert [r[0] for r in Journal.read(store.journal_path)] == [1, 2, 3]
        assert Journal.read(store.journal_path)[0][3] == "m1 \n\x00 ünï"
        # a query issued now runs behind the insert: it sees all three, whole
        assert await store.room_history("general", limit=10) == batch
        await store.close()

    run(scenario())
    assert stored_ids(db) == [1, 2, 3]
    assert Journal.read(db.with_suffix(".journal")) == []  # closed cleanly: emptied


def test_a_restart_puts_what_the_journal_holds_into_sqlite(tmp_path: Path) -> None:
    """What a killed server had acknowledged (in the journal, not yet in SQLite) is there
    after a restart, including messages SQLite already had (no duplicates); a line cut short
    at the end (a power loss mid-write) is ignored."""
    db = tmp_path / "chatscreen.db"

    async def first() -> None:
        store = await SQLiteStore(db).open()
        await store.append(msgs(1, 2))
        await store.flush()
        await store.close()

    run(first())
    journal = Journal(db.with_suffix(".journal"))
    journal.write([(m.id, m.ts, m.user, m.text, m.room, m.to, m.cid, m.kind) for m in msgs(2, 3)])
    journal.close()
    with db.with_suffix(".journal").open("ab") as f:
        f.write(b'[5,"2026-11-26T10:00:00.000Z","alice","cut sh')

    async def second() -> list[int]:
        store = await SQLiteStore(db).open()
        try:
            assert await store.last_id() == 4
            return [m.id for m in await store.room_history("general", limit=10)]
        finally:
            await store.close()

    assert run(second()) == [1, 2, 3, 4]
    assert db.with_suffix(".journal").read_bytes() == b""


def test_full_durability_commits_before_append_returns_and_keeps_no_journal(
        tmp_path: Path) -> None:
    db = tmp_path / "chatscreen.db"
    journal = Journal(db.with_suffix(".journal"))  # left over from a run with "normal"
    journal.write([(m.id, m.ts, m.user, m.text, m.room, m.to, m.cid, m.kind) for m in msgs(1, 1)])
    journal.close()

    async def scenario() -> None:
        store = await SQLiteStore(db, durability="full").open()
        assert not db.with_suffix(".journal").exists()
        await store.append(msgs(2, 2))
        assert stored_ids(db) == [1, 2, 3]  # committed, from another connection's view
        assert not db.with_suffix(".journal").exists()
        await store.close()

    run(scenario())


def test_the_journal_is_emptied_once_all_of_it_is_in_sqlite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "JOURNAL_TRIM", 1000)
    db = tmp_path / "chatscreen.db"

    async def scenario() -> None:
        store = await SQLiteStore(db).open()
        path = store.journal_path
        sizes = []
        for i in range(1, 60):
            await store.append(msgs(i, 1))
            sizes.append(path.stat().st_size)
            await store.flush()
        assert max(sizes) < 1000 + 200  # one message past the mark at most
        assert min(sizes[20:]) < 200  # it was emptied along the way
        assert [m.id for m in await store.room_history("general", limit=100)] == list(
            range(1, 60))
        await store.close()

    run(scenario())


def test_messages_sqlite_refused_go_in_later_and_are_kept_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """SQLite refuses the insert (here a trigger, as a full disk or a broken file would):
    the acknowledged messages stay in the journal, are tried again, and go in once SQLite
    takes them; nothing after them is lost or reordered. Past MAX_PENDING waiting, new
    messages are refused (not acknowledged) instead of piling up."""
    monkeypatch.setattr(storage, "INGEST_RETRY", 0.05)
    monkeypatch.setattr(storage, "MAX_PENDING", 3)
    db = tmp_path / "chatscreen.db"

    async def scenario() -> None:
        store = await SQLiteStore(db).open()
        other = refuse_inserts(db)
        with caplog.at_level(logging.ERROR, logger="chatscreen.server"):
            await store.append(msgs(1, 2))
            await until(lambda: "not stored in SQLite yet" in caplog.text, "the refusal")
        await store.append(msgs(3, 1))
        with pytest.raises(OSError, match="SQLite has not taken"):  # past MAX_PENDING
            await store.append(msgs(4, 1))
        assert [r[0] for r in Journal.read(store.journal_path)] == [1, 2, 3]
        other.execute("DROP TRIGGER refuse")
        other.close()
        await until(lambda: stored_ids(db) == [1, 2, 3], "the messages in SQLite")
        assert [m.id for m in await store.room_history("general", limit=10)] == [1, 2, 3]
        await store.close()

    run(scenario())


def test_a_journal_write_that_fails_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    """A write cut short (here by a file size limit, as by a full disk) raises, so the
    messages are not acknowledged, and leaves no partial line that would hide later ones."""
    script = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from chatscreen.server.storage import Journal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        row = (1, "2026-11-26T10:00:00.000Z", "alice", "x" * 100, "general", None, None)
        path = Path({str(tmp_path / "chatscreen.journal")!r})
        j = Journal(path)
        j.write([row])
        size = path.stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 200, size + 200))
        try:
            j.write([row, row])
        except OSError as exc:
            print("refused:", exc)
        assert path.stat().st_size == size, path.stat().st_size
        j.write([row])  # fits: the file ends with whole lines
        assert len(Journal.read(path)) == 2
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=TIMEOUT, check=False)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and out.stdout.strip().endswith("ok")


def test_closing_while_sqlite_refuses_leaves_the_messages_to_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(storage, "INGEST_RETRY", 0.01)
    db = tmp_path / "chatscreen.db"

    async def first() -> None:
        store = await SQLiteStore(db).open()
        other = refuse_inserts(db)
        await store.append(msgs(1, 2))
        await store.close()  # tries once more, then leaves them in the journal
        other.execute("DROP TRIGGER refuse")
        other.close()

    with caplog.at_level(logging.ERROR):
        run(first())
    assert [r[0] for r in Journal.read(db.with_suffix(".journal"))] == [1, 2]
    assert not [r for r in caplog.records if r.name == "asyncio"]  # no callback after close

    async def second() -> list[int]:
        store = await SQLiteStore(db).open()
        try:
            return [m.id for m in await store.room_history("general", limit=10)]
        finally:
            await store.close()

    assert run(second()) == [1, 2]


def test_a_journal_line_that_is_not_a_message_is_skipped_and_kept_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lines SQLite would refuse or Python could not hand it (an id out of SQLite's range, a
    lone surrogate, a boolean, a missing time) do not stop the start nor hide the lines after
    them; with durability "full" too, which then removes the journal."""
    db = tmp_path / "chatscreen.db"
    good = [(m.id, m.ts, m.user, m.text, m.room, m.to, m.cid) for m in msgs(1, 2)]
    bad = [b'[18446744073709551616,"t","alice","big","general",null,null]',
           b'[3,"t","alice","\\ud800","general",null,null]',
           b'[true,"t","alice","bool","general",null,null]',
           b'[4,null,"alice","no time","general",null,null]',
           b'[0,"t","alice","zero","general",null,null]']
    lines = [json.dumps(good[0]).encode(), *bad, json.dumps(good[1]).encode()]
    db.with_suffix(".journal").write_bytes(b"\n".join(lines) + b"\n")

    async def scenario() -> list[int]:
        store = await SQLiteStore(db, durability="full").open()
        try:
            return [m.id for m in await store.room_history("general", limit=10)]
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING, logger="chatscreen.server"):
        assert run(scenario()) == [1, 2]
    assert "lines 2, 3, 4, 5, 6 are not messages" in caplog.text
    [copy] = tmp_path.glob("chatscreen.journal.bad-*")
    assert copy.read_bytes() == b"".join(line + b"\n" for line in bad)
    assert not db.with_suffix(".journal").exists()


def test_a_database_and_journal_from_before_message_kinds_are_read_and_upgraded(
        tmp_path: Path) -> None:
    """Moderation notices are messages of kind "notice" (a new column): a database made
    before it gets the column (its messages are ordinary ones), and an older journal's
    seven-field lines still count."""
    db = tmp_path / "chatscreen.db"
    old = sqlite3.connect(db)
    old.executescript("CREATE TABLE messages (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, "
                      "user TEXT NOT NULL, text TEXT NOT NULL, room TEXT, to_user TEXT, "
                      "cid TEXT);")
    old.execute("INSERT INTO messages VALUES (1, '2026-12-07T21:00:00.000Z', 'ann', 'hi', "
                "'general', NULL, 'c-1')")
    old.commit()
    old.close()
    db.with_suffix(".journal").write_text(
        '[2,"2026-12-07T21:00:01.000Z","bob","yo","general",null,null]\n')

    async def scenario() -> None:
        store = await SQLiteStore(db).open()
        notice = StoredMessage(3, "2026-12-07T21:00:02.000Z", "mod", "mod kicked bob",
                               "general", kind="notice")
        await store.append([notice])
        got = await store.room_history("general", limit=10)
        assert [(m.id, m.kind) for m in got] == [(1, None), (2, None), (3, "notice")]
        assert got[2].to_wire()["kind"] == "notice" and "kind" not in got[0].to_wire()
        await store.close()

    run(scenario())
    assert stored_ids(db) == [1, 2, 3]
