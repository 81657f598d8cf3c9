"""What the database check at start costs: ``PRAGMA quick_check`` (the default,
``storage_check = quick``) and ``integrity_check`` (``full``) on a chatscreen database of
``BENCH_CHECK_MESSAGES`` messages (default 1,000,000, some 60 characters each, in 20 rooms
and private conversations), built in a temporary directory on this machine's disk.

Timed as the server does it (``open_database``), with the file in the page cache (a first
start after a reboot reads it from disk too: add the disk's read time for its size).

``python -m bench.bench_storage_check``
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from chatscreen.server.datadir import open_database
from chatscreen.server.storage import _INSERT, _SCHEMA

MESSAGES = int(os.environ.get("BENCH_CHECK_MESSAGES", "1000000"))
TEXT = "a chat message of a typical length, some sixty characters or so."


def build(path: Path, n: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(_SCHEMA)
    db.execute("BEGIN")
    db.executemany(_INSERT, ((i, "2026-12-07T10:00:00.000Z", f"user{i % 50}", TEXT,
                              f"room{i % 20}" if i % 5 else None,
                              None if i % 5 else f"user{i % 7}", f"c-{i}")
                             for i in range(1, n + 1)))
    db.execute("COMMIT")
    db.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chatscreen.db"
        build(path, MESSAGES)
        print(f"{MESSAGES} messages, {path.stat().st_size / 1e6:.0f} MB")
        for check in ("quick", "full"):
            t0 = time.perf_counter()
            open_database(path, check=check).close()
            print(f"storage_check = {check}: open and check in "
                  f"{1e3 * (time.perf_counter() - t0):.0f} ms")


if __name__ == "__main__":
    main()
