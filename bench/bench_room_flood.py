"""The room flood (issue 15, item 6): guests from one address creating rooms, against a chat
user's round trip on another address.

Run ``python -m bench.bench_room_flood`` from the repository root (``make bench`` runs it
with the defaults). Output is Markdown.

* The server is the real one (TLS, default settings) in a process of its own; the flood
  (``tests.helpers.room_flood``) is another process: ``--connections`` guests (default 32,
  the per-address connection limit) from 127.0.0.2, each sending ``join`` for a new room
  name ``--rate`` times a second (default 19: just under the per-connection rate limit, so
  that only what is counted per address can stop it) for ``--duration`` seconds (default 10;
  the issue's figures are for ``--duration 40``).
* The chat user (``chatscreen.client.Client`` on 127.0.0.1, in this process) sends a
  message to ``general`` and waits for its echo, then waits ``PAUSE`` s, over and over: for
  ``--idle`` seconds before the flood (the baseline, in the same run) and all through it.
  The table gives the median, 95th percentile and maximum round trip of each phase.
* After the flood: the rooms the server holds, and how long a ``rooms`` request takes to be
  answered (median of ``LISTINGS``: the first answer, and the whole listing page by page).
* At the cap (``--rooms``, default 10,000: ``max_rooms``): a second server, whose limits on
  creating rooms are lifted, is filled with that many rooms by one connection; then the same
  ``rooms`` timings, a ``join`` of an existing room (named in other letter case: the lookup),
  of a new room, and the chat round trip, each the median of ``LISTINGS`` (round trips: of 50).
* ``--server-src DIR``: run the server from another source tree (e.g. the code before the
  fix), for a comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.server import NO_RATE_LIMITS, ServerProcess  # noqa: E402

from chatscreen.client import Client  # noqa: E402
from chatscreen.protocol import encode_frame  # noqa: E402

# s between a round trip's echo and the next message: about 10 messages a second, a busy user
# well under the per-connection rate limit (20/s; faster, the limiter's pacing is measured)
PAUSE = 0.1
LISTINGS = 5
TIMEOUT_S = 30.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


class Flood:
    """``tests.helpers.room_flood`` as a child process."""

    def __init__(self, port: int, args: argparse.Namespace) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.room_flood", "--port", str(port),
             "--source", "127.0.0.2", "--connections", str(args.connections),
             "--duration", str(args.duration), "--rate", str(args.rate)],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if "started" not in json.loads(self.proc.stdout.readline() or "{}"):
            raise RuntimeError("the flood could not log in")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out: dict[str, Any] = json.loads(self.proc.stdout.readline())
        self.proc.wait(TIMEOUT_S)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


async def round_trips(c: Client, until: asyncio.Future[Any] | float) -> list[float]:
    """Say -> echo round trips (s) until ``until`` (a time, or a future that is done)."""
    out: list[float] = []
    loop = asyncio.get_running_loop()
    while (loop.time() < until) if isinstance(until, float) else not until.done():
        t = time.perf_counter()
        await asyncio.wait_for(c.say("general", f"round trip {len(out)}"), TIMEOUT_S)
        out.append(time.perf_counter() - t)
        await asyncio.sleep(PAUSE)
    return out


async def listing_times(c: Client) -> tuple[float, float, int]:
    """Median seconds of the first ``rooms`` answer and of the whole listing; rooms held."""
    first, whole, held = [], [], 0
    for _ in range(LISTINGS):
        t = time.perf_counter()
        await c.rooms_page()
        first.append(time.perf_counter() - t)
        t = time.perf_counter()
        held = len(await c.list_rooms())
        whole.append(time.perf_counter() - t)
    return statistics.median(first), statistics.median(whole), held


async def scenario(srv: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    assert srv.proc is not None
    pid = srv.proc.pid
    async with Client("127.0.0.1", "calm", chat_port=srv.chat_port,
                      screen_port=srv.screen_port, timeout=TIMEOUT_S) as calm:
        await calm.join("general")
        await round_trips(calm, asyncio.get_running_loop().time() + 1)  # warm up
        rss0 = rss_mb(pid)
        idle = await round_trips(calm, asyncio.get_running_loop().time() + args.idle)
        flood = await asyncio.to_thread(Flood, srv.chat_port, args)
        try:
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            flood.go()
            waiting = asyncio.ensure_future(asyncio.to_thread(flood.result))
            during = await round_trips(calm, waiting)
            result = await waiting
            cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        finally:
            flood.close()
        first, whole, held = await listing_times(calm)
        return {"idle": idle, "during": during, "flood": result, "cpu": cpu, "first": first,
                "whole": whole, "held": held, "rss0": rss0, "rss1": rss_mb(pid)}


async def fill(port: int, n: int) -> None:
    """Create rooms fill0 ... (n of them) over one connection, requests pipelined."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   local_addr=("127.0.0.3", 0))
    writer.write(encode_frame({"type": "hello", "v": 1, "user": "filler"}))
    writer.write(b"".join(encode_frame({"type": "join", "room": f"fill{i}"}) for i in range(n)))
    joined = 0
    while joined < n:
        body, hlen = struct.unpack(">II", await reader.readexactly(8))
        header = json.loads((await reader.readexactly(body - 4))[:hlen])
        if header["type"] == "error":
            raise RuntimeError(f"filling: {header}")
        joined += header["type"] == "joined"
    writer.close()


async def at_the_cap(srv: ServerProcess, n: int) -> dict[str, Any]:
    await fill(srv.chat_port, n)
    async with Client("127.0.0.1", "calm", chat_port=srv.chat_port,
                      screen_port=srv.screen_port, timeout=TIMEOUT_S) as calm:
        await calm.join("general")
        first, whole, held = await listing_times(calm)
        joins, news = [], []
        for i in range(LISTINGS):
            t = time.perf_counter()
            await calm.join(f"FILL{n - 1 - i}")  # the newest: last in the rooms' dict
            joins.append(time.perf_counter() - t)
            t = time.perf_counter()
            await calm.join(f"new{i}")
            news.append(time.perf_counter() - t)
        loop = asyncio.get_running_loop()
        trips = await round_trips(calm, loop.time() + 5)
        return {"first": first, "whole": whole, "held": held, "join": statistics.median(joins),
                "new": statistics.median(news),
                "trip": statistics.median(trips)}


def row(name: str, samples: list[float], base: float) -> str:
    med = statistics.median(samples)
    return (f"| {name} | {len(samples)} | {med * 1e3:.2f} | {percentile(samples, 0.95) * 1e3:.2f} "
            f"| {max(samples) * 1e3:.2f} | {med / base:.2f}x |")


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    f = r["flood"]
    print(f"Room flood: {args.connections} guests from 127.0.0.2, {args.rate:g} joins of new "
          f"rooms a second each, for {args.duration:g} s; a chat user on 127.0.0.1 sends and "
          f"waits for its echo (then {PAUSE * 1e3:.0f} ms), idle for {args.idle:g} s first. "
          f"Server: {args.server_src or 'this tree'}, TLS, default settings.\n")
    base = statistics.median(r["idle"])
    print("| chat round trip | samples | median ms | p95 ms | max ms | median vs idle |")
    print("|---|---|---|---|---|---|")
    print(row("idle", r["idle"], base))
    print(row("during the flood", r["during"], base))
    errors = ", ".join(f"{k} {v}" for k, v in sorted(f["errors"].items())) or "none"
    print(f"\n| flood | value |\n|---|---|\n| joins sent | {f['sent']} |\n"
          f"| rooms it got (joined) | {f['joined']} |\n| refused | {errors} |\n"
          f"| connections cut | {len(f['fatal'])} ({', '.join(f['fatal']) or '-'}) |\n"
          f"| rooms held after | {r['held']} |\n"
          f"| `rooms` first answer, median ms | {r['first'] * 1e3:.1f} |\n"
          f"| whole listing, median ms | {r['whole'] * 1e3:.1f} |\n"
          f"| server CPU during the flood | {r['cpu']:.2f} s/s |\n"
          f"| server RSS before / after | {r['rss0']:.0f} / {r['rss1']:.0f} MB |")
    c = r.get("cap")
    if c:
        print(f"\nWith {c['held']:,} rooms held (filled with the limits on creating lifted):\n")
        print(f"| measure | median ms |\n|---|---|\n"
              f"| `rooms` first answer | {c['first'] * 1e3:.1f} |\n"
              f"| whole listing | {c['whole'] * 1e3:.1f} |\n"
              f"| `join` of an existing room, other letter case | {c['join'] * 1e3:.1f} |\n"
              f"| `join` of a new room | {c['new'] * 1e3:.1f} |\n"
              f"| chat round trip | {c['trip'] * 1e3:.2f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="s of flood (issue: 40)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rate", type=float, default=19.0, help="new rooms/s per connection")
    p.add_argument("--idle", type=float, default=5.0, help="s of baseline before the flood")
    p.add_argument("--rooms", type=int, default=10_000, help="rooms for the cap part; 0: skip")
    p.add_argument("--server-src", default=None, help="run the server from this src dir")
    args = p.parse_args(argv)
    env = {"PYTHONPATH": str(Path(args.server_src).resolve())} if args.server_src else {}
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerProcess(Path(tmp) / "data", env=env).start()
        try:
            result = asyncio.run(scenario(srv, args))
        finally:
            srv.stop()
        if args.rooms:
            lifted = {**env, **NO_RATE_LIMITS, "CHATSCREEN_CREATE_RATE": "1e9",
                      "CHATSCREEN_CREATE_BURST": "1000000000",
                      "CHATSCREEN_MAX_ROOMS_PER_GUEST": str(args.rooms + 10),
                      "CHATSCREEN_MAX_ROOMS": str(args.rooms + 10),
                      "CHATSCREEN_MAX_JOINED": str(args.rooms + 10)}
            srv = ServerProcess(Path(tmp) / "cap", env=lifted).start()
            try:
                result["cap"] = asyncio.run(at_the_cap(srv, args.rooms))
            finally:
                srv.stop()
    report(result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
