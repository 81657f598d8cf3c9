"""What durability costs: messages stored a second by ``SQLiteStore``, and how long a burst
waits for its acknowledgement.

The chat service hands each burst of messages to ``append`` and acknowledges them once it
returns. This measures, on a real SQLite file in a temporary directory on this machine's
disk, how many messages a second end up in SQLite with bursts of 1, 10 and 100 messages
(timed until the last one is in), and the median time ``append`` takes, for ``durability =
normal`` (the default: the burst is written to the journal, and SQLite, WAL with
``synchronous=NORMAL``, takes what was journaled in one transaction on its thread; survives
kill -9) and ``full`` (``synchronous=FULL``: an fsync per commit before ``append`` returns;
survives a power cut). Ratios are against ``normal`` with the same burst size, measured in
the same run.

``python -m bench.bench_storage``; ``BENCH_STORAGE_SECONDS`` (default 2) per cell,
``BENCH_STORAGE_RUNS`` (default 3) runs, medians reported.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from chatscreen.server.storage import SQLiteStore, StoredMessage

SECONDS = float(os.environ.get("BENCH_STORAGE_SECONDS", "2"))
RUNS = int(os.environ.get("BENCH_STORAGE_RUNS", "3"))
BURSTS = (1, 10, 100)
TEXT = "a chat message of a typical length, some sixty characters or so."


async def rate(path: Path, durability: str, burst: int) -> tuple[float, float]:
    """(messages into SQLite a second, median ms per ``append``) for ``SECONDS``."""
    store = await SQLiteStore(path, durability=durability).open()
    try:
        next_id = await store.last_id() + 1
        stored, appends = 0, []
        start = time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            batch = [StoredMessage(next_id + i, "2026-11-26T10:00:00.000Z", "bench", TEXT,
                                   "general", None, f"bench-{next_id + i}")
                     for i in range(burst)]
            t0 = time.perf_counter()
            await store.append(batch)
            appends.append(time.perf_counter() - t0)
            next_id += burst
            stored += burst
            await asyncio.sleep(0)  # what a server does between bursts: its loop goes on
        await store.flush()  # all of it in SQLite
        return stored / (time.perf_counter() - start), statistics.median(appends) * 1000
    finally:
        await store.close()


def main() -> int:
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-storage-", dir=Path.cwd()) as tmp:
        for run in range(RUNS):
            for durability in ("normal", "full"):
                for burst in BURSTS:
                    path = Path(tmp) / f"{durability}-{burst}-{run}.db"
                    results.setdefault((durability, burst), []).append(
                        asyncio.run(rate(path, durability, burst)))
    print(f"SQLiteStore.append on {Path.cwd()}'s disk, {SECONDS:g} s a cell, "
          f"median of {RUNS} runs\n")
    print("| durability | burst | messages/s | ms per append | vs normal |")
    print("|---|---|---|---|---|")
    for burst in BURSTS:
        base = statistics.median(r for r, _ in results[("normal", burst)])
        for durability in ("normal", "full"):
            cell = results[(durability, burst)]
            per_s = statistics.median(r for r, _ in cell)
            ms = statistics.median(m for _, m in cell)
            print(f"| {durability} | {burst} | {per_s:,.0f} | {ms:.2f} | {per_s / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
