"""Recording CPU at 1080p typing (issue 18): what ``chatscreen view --record`` costs.

A 1920x1080x24 Xvfb shows bench/screen_workloads.py's ``typing`` (one character per tick,
30 ticks/s), shared by ``chatscreen share --allow-record all``. Two viewers watch the same
share at the same time, as separate processes: ``chatscreen view --record FILE --no-window``
and a plain viewer that does the same minus recording (this module with ``--watch-only``:
the same watch loop, each frame applied to the viewer's picture). The recording's CPU is
the difference of their process CPU (user + system, all threads) over the window, in % of
one core. The target (issue 18): at most 25 %.

``python -m bench.bench_record`` (``BENCH_RECORD_RUNS``, default 3; ``BENCH_RECORD_SECONDS``,
default 10).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.server import ServerProcess  # noqa: E402
from tests.helpers.xvfb import run_xvfb  # noqa: E402

from bench.bench_share import child, cpu_seconds, stop_process, wait_line  # noqa: E402

RUNS = int(os.environ.get("BENCH_RECORD_RUNS", "3"))
WINDOW_S = float(os.environ.get("BENCH_RECORD_SECONDS", "10"))
WARMUP_S = 1.0
RATE = 30.0  # characters typed a second
HOST = "127.0.0.1"
WORKLOAD = REPO_ROOT / "bench" / "screen_workloads.py"
START_TIMEOUT_S = 20.0


@dataclass
class Run:
    with_record: float  # CPU % of the recording viewer
    without: float  # CPU % of the plain viewer
    frames_per_s: float  # pictures in the file per second of it
    kbytes_per_s: float  # the file's size per second of it

    @property
    def recording(self) -> float:
        return self.with_record - self.without


def client_args(server: ServerProcess, command: str, user: str) -> list[str]:
    return [sys.executable, "-m", "chatscreen", command, "--server",
            f"{HOST}:{server.chat_port}", "--screen-port", str(server.screen_port),
            "--user", user]


def one_run(display: str, server: ServerProcess, out: Path) -> Run:
    work = subprocess.Popen([sys.executable, str(WORKLOAD), "typing", "--rate", str(RATE),
                             "--seconds", str(WINDOW_S + 3 * WARMUP_S), "--max-seconds", "300"],
                            cwd=REPO_ROOT, env={**os.environ, "DISPLAY": display},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_line(work, r"ready", START_TIMEOUT_S)
        sharer_args = [*client_args(server, "share", "sharer"), "--allow-record", "all",
                       "--fps", str(RATE)]
        with child(sharer_args, r"Sharing \d+x\d+", {"DISPLAY": display},
                   stop_signal=signal.SIGINT), \
                child([*client_args(server, "view", "recorder"), "--from", "sharer",
                       "--record", str(out), "--no-window"],
                    r"Recording sharer's share", stop_signal=signal.SIGINT) as (rec, _), \
                child([sys.executable, "-m", "bench.bench_record", "--watch-only",
                       str(server.chat_port), str(server.screen_port)], r"watching",
                      stop_signal=signal.SIGINT) as (plain, _):
            assert work.stdin is not None
            work.stdin.write(b"go\n")
            work.stdin.flush()
            time.sleep(WARMUP_S)  # a benchmark's window, not a test waiting for something
            start = time.monotonic()
            cpu0 = cpu_seconds(rec.pid), cpu_seconds(plain.pid)
            time.sleep(WINDOW_S)
            cpu1 = cpu_seconds(rec.pid), cpu_seconds(plain.pid)
            elapsed = time.monotonic() - start
            summary = stop_process(rec, signal.SIGINT)
    finally:
        work.kill()
        work.wait()
    found = re.search(r"Recorded \d+x\d+, ([\d.]+) s, (\d+) frames", summary)
    if found is None:
        raise RuntimeError(f"no summary from the recorder: {summary!r}")
    seconds, frames = float(found[1]), int(found[2])
    return Run((cpu1[0] - cpu0[0]) / elapsed * 100, (cpu1[1] - cpu0[1]) / elapsed * 100,
               frames / seconds, out.stat().st_size / seconds / 1000)


def render(runs: list[Run]) -> str:
    head = ["run", "viewer --record CPU %", "viewer without CPU %", "recording CPU %",
            "frames/s recorded", "file kB/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]

    def row(name: str, r: Run) -> str:
        return (f"| {name} | {r.with_record:.1f} | {r.without:.1f} | {r.recording:.1f} | "
                f"{r.frames_per_s:.1f} | {r.kbytes_per_s:.0f} |")

    for i, r in enumerate(runs, 1):
        lines.append(row(str(i), r))
    med = Run(*(statistics.median(getattr(r, f) for r in runs)
                for f in ("with_record", "without", "frames_per_s", "kbytes_per_s")))
    rec = statistics.median(r.recording for r in runs)
    lines.append(f"| **median** | {med.with_record:.1f} | {med.without:.1f} | **{rec:.1f}** | "
                 f"{med.frames_per_s:.1f} | {med.kbytes_per_s:.0f} |")
    return "\n".join(lines)


async def watch_only(chat_port: int, screen_port: int) -> None:
    """The plain viewer: what ``view --record --no-window`` does, minus the recording."""
    from chatscreen.client import Client, ScreenChannel
    from chatscreen.protocol import Message
    from chatscreen.screen.codec import Canvas
    from chatscreen.screen.resume import keep_watching
    from chatscreen.screen.sharing import find_share, frame_rects

    client = await Client(HOST, "plain", chat_port=chat_port, screen_port=screen_port
                          ).connect()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    share = await find_share(client, "sharer", START_TIMEOUT_S)
    canvas = Canvas(share["w"], share["h"])

    async def show(msg: Message, _screen: ScreenChannel) -> None:
        if msg.type == "frame":
            canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))

    print("watching", flush=True)
    watching = asyncio.ensure_future(keep_watching(client, share, show, cursor_messages=True))
    await asyncio.wait({watching, asyncio.ensure_future(stop.wait())},
                       return_when=asyncio.FIRST_COMPLETED)
    watching.cancel()
    await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watch-only", nargs=2, type=int, metavar=("CHAT_PORT", "SCREEN_PORT"))
    args = parser.parse_args(argv)
    if args.watch_only:
        asyncio.run(watch_only(*args.watch_only))
        return 0
    print("# bench_record\n")
    print(f"1920x1080x24 Xvfb, bench/screen_workloads.py typing at {RATE:g} characters/s, "
          f"shared with --fps {RATE:g}; {RUNS} runs, a {WINDOW_S:g} s window after "
          f"{WARMUP_S:g} s; {os.cpu_count()} CPUs. CPU: % of one core, process (all threads), "
          "user + system.\n", flush=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp, \
            run_xvfb("1920x1080x24") as display:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            for i in range(RUNS):
                r = one_run(display, server, Path(tmp) / f"rec{i}.mp4")
                runs.append(r)
                print(f"<!-- run {i + 1}: with {r.with_record:.1f} %, without {r.without:.1f} "
                      f"%, {r.frames_per_s:.1f} frames/s -->", flush=True)
        finally:
            server.stop()
    print()
    print(render(runs))
    rec = statistics.median(r.recording for r in runs)
    print(f"\nrecording CPU (median of the differences): {rec:.1f} % of a core; target <= 25 %: "
          f"{'met' if rec <= 25 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
