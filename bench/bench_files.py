"""Issue 18: files in chat, against the issue's numbers (``python -m bench.bench_files``, part
of ``make bench``). The real TLS server (its own certificate, as by default), real files in a
temporary directory on the local disk, the client library and the CLI.

* **Transfers**: one server; ``BENCH_FILES_RUNS`` times, a ``BENCH_FILES_MB`` file (random
  bytes, 1000 MB = 1 GB by default) goes up with ``client.files.upload`` (SHA-256 first, as
  the protocol asks, then the chunks) and comes back with ``client.files.download`` (written,
  hashed, checked, renamed). MB/s = 10^6 bytes a second of the whole call; "on the wire"
  leaves out the upload's hashing (from its first "uploading" progress on). The server's
  memory: VmRSS (``/proc/PID/status``) once the client is logged in, against VmHWM (the peak)
  after every transfer; CPU of the server and of this process, /proc, per GB.
* **Under two uploads**: per run a new server, ``BENCH_FILES_LISTENERS`` (50) chat listeners and
  a sender posting ``BENCH_FILES_CHAT_RATE`` (20) messages a second into their room
  (``bench.room_latency``: latency send -> receive of every delivery), a sharer
  (``chatscreen share --fps 30``) of the ``BENCH_FILES_WORKLOAD`` (scrolling) workload on a
  1920x1080 Xvfb and a viewer in this process decoding every frame (updates/s: new ticks of
  the workload decoded a second). ``BENCH_FILES_QUIET_SECONDS`` (10) without uploads, then
  while two ``chatscreen send-file`` processes (two users, the same file) upload at once,
  then again as long without: the same run gives the figure and its baseline (the two
  quiet windows pooled, so that a trend in the machine's load over the run does not
  count). The targets compare the windows of each run; the table gives medians over the
  runs. **Control** (``BENCH_FILES_CONTROL=0`` skips it): each run is followed by one where
  the same two uploads go to a second server process on the same machine: what the
  uploaders' own CPU, the disk and the machine do to the room and the screen, without the
  measured server carrying the bytes.

Environment: ``BENCH_FILES_MB`` (default 1000), ``BENCH_FILES_RUNS`` (3),
``BENCH_FILES_QUIET_SECONDS`` (10), ``BENCH_FILES_LISTENERS`` (50), ``BENCH_FILES_CHAT_RATE``
(20), ``BENCH_FILES_WORKLOAD`` (scrolling), ``BENCH_FILES_SCREEN=0`` (no sharer and no
viewer: the screen row is not measured), ``BENCH_FILES_DIR`` (where the files go; default
the system's temporary directory; it needs about 5 x the file's size free),
``BENCH_FILES_CONTROL=0`` (no control runs), ``BENCH_FILES_UPLOADER_NICE=N`` (default 0:
the two ``send-file`` processes run under ``nice -n N``, for when the uploaders' own CPU
should count less, as on a real server whose uploaders are elsewhere). A short run:
``BENCH_FILES_MB=200 BENCH_FILES_RUNS=1 BENCH_FILES_QUIET_SECONDS=5``. Everything is also
written to ``bench/results/bench_files-<UTC time>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.pictures import make_test_picture  # noqa: E402
from tests.helpers.server import NO_RATE_LIMITS, ServerProcess  # noqa: E402
from tests.helpers.xvfb import run_xvfb  # noqa: E402

from bench.bench_screen import Workload, sharer_args  # noqa: E402
from bench.bench_share import child, cpu_seconds  # noqa: E402
from bench.child import LineChild  # noqa: E402
from bench.room_latency import percentile  # noqa: E402
from bench.screen_workloads import read_marker  # noqa: E402
from chatscreen.client import Client  # noqa: E402
from chatscreen.client.files import download, upload  # noqa: E402
from chatscreen.screen.codec import Canvas  # noqa: E402
from chatscreen.screen.sharing import find_share, frame_rects  # noqa: E402

MB = 1000 * 1000
SIZE = int(os.environ.get("BENCH_FILES_MB", "1000")) * MB
RUNS = int(os.environ.get("BENCH_FILES_RUNS", "3"))
QUIET_S = float(os.environ.get("BENCH_FILES_QUIET_SECONDS", "10"))
LISTENERS = int(os.environ.get("BENCH_FILES_LISTENERS", "50"))
CHAT_RATE = float(os.environ.get("BENCH_FILES_CHAT_RATE", "20"))
WORKLOAD = os.environ.get("BENCH_FILES_WORKLOAD", "scrolling")
SCREEN = os.environ.get("BENCH_FILES_SCREEN", "1") != "0"
WORK_DIR = os.environ.get("BENCH_FILES_DIR") or None
UPLOADER_NICE = int(os.environ.get("BENCH_FILES_UPLOADER_NICE", "0"))
CONTROL = os.environ.get("BENCH_FILES_CONTROL", "1") != "0"
HOST = "127.0.0.1"
ROOM = "general"
W, H = 1920, 1080
WARM_S = 2.0  # after the viewer has the whole picture, before the first window
START_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 600.0
RESULTS = REPO_ROOT / "bench" / "results"
SERVER_ENV = {**NO_RATE_LIMITS,  # the pacer's 20 messages a second are not what is measured
              # every user is on 127.0.0.1 here (on a real server, 50 addresses)
              "CHATSCREEN_MAX_CONNECTIONS_PER_ADDRESS": "1000",
              "CHATSCREEN_MAX_FILE_SIZE": str(100 * SIZE + MB),
              "CHATSCREEN_FILE_QUOTA": str(1000 * SIZE + MB)}


# -- /proc ------------------------------------------------------------------------------------


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB (10^6 bytes)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024 / MB
    return out


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def make_file(path: Path, size: int) -> Path:
    block = 8 * MB
    with path.open("wb") as f:
        for done in range(0, size, block):
            f.write(os.urandom(min(block, size - done)))
    return path


# -- transfers ----------------------------------------------------------------------------------


@dataclass
class Transfer:
    up_s: float = math.nan  # the whole upload() call
    up_wire_s: float = math.nan  # from the first "uploading" progress to the end
    down_s: float = math.nan
    server_cpu_up: float = math.nan  # s of CPU
    server_cpu_down: float = math.nan
    client_cpu_up: float = math.nan
    client_cpu_down: float = math.nan
    rss_before: float = math.nan  # MB
    hwm_after: float = math.nan
    rss_after: float = math.nan
    load: str = ""


async def transfers(server: ServerProcess, src: Path, tmp: Path) -> list[Transfer]:
    assert server.proc is not None
    pid, me = server.proc.pid, os.getpid()
    client = Client(HOST, "alice", chat_port=server.chat_port, screen_port=server.screen_port,
                    reconnect=False, timeout=START_TIMEOUT_S)
    await client.connect()
    out: list[Transfer] = []
    try:
        await client.join(ROOM)
        rss0 = memory_mb(pid)["VmRSS"]
        for run in range(RUNS):
            t = Transfer(rss_before=rss0, load=load_average())
            marks: dict[str, float] = {}

            def progress(phase: str, done: int, total: int,
                         marks: dict[str, float] = marks) -> None:
                marks.setdefault(phase, time.perf_counter())

            s0, c0, t0 = cpu_seconds(pid), cpu_seconds(me), time.perf_counter()
            info = await upload(client, src, room=ROOM, progress=progress)
            t1 = time.perf_counter()
            s1, c1 = cpu_seconds(pid), cpu_seconds(me)
            t.up_s, t.up_wire_s = t1 - t0, t1 - marks.get("uploading", t0)
            t.server_cpu_up, t.client_cpu_up = s1 - s0, c1 - c0
            dest = tmp / f"down-{run}.bin"
            t1 = time.perf_counter()
            got = await download(client, info.id, dest)
            t2 = time.perf_counter()
            t.down_s = t2 - t1
            t.server_cpu_down, t.client_cpu_down = cpu_seconds(pid) - s1, cpu_seconds(me) - c1
            if got.size != SIZE or got.sha256 != info.sha256:  # (download checked the bytes)
                raise RuntimeError(f"download: {got.size} bytes, {got.sha256}")
            dest.unlink()
            mem = memory_mb(pid)
            t.hwm_after, t.rss_after = mem["VmHWM"], mem["VmRSS"]
            out.append(t)
            print(f"<!-- transfer {run + 1}: up {SIZE / MB / t.up_s:.0f} MB/s (wire "
                  f"{SIZE / MB / t.up_wire_s:.0f}), down {SIZE / MB / t.down_s:.0f} MB/s; server "
                  f"CPU {t.server_cpu_up:.2f} s up, {t.server_cpu_down:.2f} s down; RSS "
                  f"{rss0:.0f} -> peak {t.hwm_after:.0f} MB; load {t.load} -->", flush=True)
    finally:
        await client.close()
    return out


# -- the room, the screen, and two uploads --------------------------------------------------


class RoomLatency(LineChild):
    """``bench.room_latency`` as a child process."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__("bench.room_latency", [str(port), str(count), "--tls"], START_TIMEOUT_S)

    def start(self, rate: float) -> None:
        self._command(f"start {rate}")
        self._line(START_TIMEOUT_S, "ok")

    def stop(self) -> dict[str, Any]:
        self._command("stop")
        result: dict[str, Any] = json.loads(self._line(START_TIMEOUT_S))
        return result


class Viewer:
    """Watches the share, decodes every frame, notes when each new tick is decoded."""

    def __init__(self) -> None:
        self.seen: list[float] = []  # when a new tick was decoded (time.monotonic())
        self.complete = asyncio.Event()

    async def run(self, server: ServerProcess) -> None:
        client = Client(HOST, "viewer", chat_port=server.chat_port,
                        screen_port=server.screen_port, reconnect=False)
        await client.connect()
        try:
            share = await find_share(client, "sharer", START_TIMEOUT_S)
            screen = await client.open_screen()  # binary, deflated: as the app asks
            try:
                await screen.watch(share["id"])
                canvas = Canvas(share["w"], share["h"])
                last = -1
                while True:
                    msg = await screen.next_frame()
                    canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                    if not canvas.complete:
                        continue
                    self.complete.set()
                    tick = read_marker(canvas.pixels)
                    if tick > last:
                        last = tick
                        self.seen.append(time.monotonic())
            finally:
                await screen.close()
        finally:
            await client.close()

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.seen) / (end - start)


@dataclass
class Phase:
    seconds: float = 0.0
    chat: dict[str, Any] = field(default_factory=dict)  # room_latency's answer
    updates_per_s: float = math.nan  # at the viewer
    changes_per_s: float = math.nan  # made on screen by the workload
    server_cpu_pct: float = math.nan
    load: str = ""


@dataclass
class Contention:
    quiet: Phase = field(default_factory=Phase)
    loaded: Phase = field(default_factory=Phase)
    upload_s: list[float] = field(default_factory=list)  # each send-file process, wall
    rss_before: float = math.nan
    hwm_after: float = math.nan


def send_file(server: ServerProcess, src: Path, user: str) -> subprocess.Popen[bytes]:
    nice = ["nice", "-n", str(UPLOADER_NICE)] if UPLOADER_NICE else []
    return subprocess.Popen(
        [*nice, sys.executable, "-m", "chatscreen", "send-file", str(src), "--room", ROOM,
         "--server", f"{HOST}:{server.chat_port}", "--screen-port", str(server.screen_port),
         "--user", user], cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)


def finish_upload(proc: subprocess.Popen[bytes], t0: float) -> float:
    out, err = proc.communicate(timeout=UPLOAD_TIMEOUT_S)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"send-file failed ({proc.returncode}): {err.decode()[-2000:]}")
    return time.monotonic() - t0


class Window:
    def __init__(self, pid: int, work: Workload | None) -> None:
        self.pid, self.work = pid, work
        self.t0, self.c0, self.load = time.monotonic(), cpu_seconds(pid), load_average()

    def close(self, phase: Phase, viewer: Viewer | None, chat: dict[str, Any]) -> None:
        t1 = time.monotonic()
        phase.seconds = t1 - self.t0
        phase.chat = chat
        phase.server_cpu_pct = 100 * (cpu_seconds(self.pid) - self.c0) / phase.seconds
        phase.load = self.load
        if viewer is not None and self.work is not None:
            phase.updates_per_s = viewer.rate(self.t0, t1)
            phase.changes_per_s = sum(self.t0 <= t < t1 for t in self.work.ticks.values()
                                      ) / phase.seconds


async def quiet(room: RoomLatency, pid: int, work: Workload | None,
                viewer: Viewer | None) -> Phase:
    phase = Phase()
    window = Window(pid, work)
    await asyncio.to_thread(room.start, CHAT_RATE)
    await asyncio.sleep(QUIET_S)  # a quiet window: nothing to wait for but time
    window.close(phase, viewer, await asyncio.to_thread(room.stop))
    return phase


def pooled(a: Phase, b: Phase) -> Phase:
    """Two windows as one: latencies pooled, rates weighted by time."""
    seconds = a.seconds + b.seconds
    ms = a.chat.get("ms", []) + b.chat.get("ms", [])

    def mean(get: Callable[[Phase], float]) -> float:
        return (get(a) * a.seconds + get(b) * b.seconds) / seconds

    chat: dict[str, Any] = {
        "sent": a.chat["sent"] + b.chat["sent"],
        "expected": a.chat["expected"] + b.chat["expected"],
        "delivered": a.chat["delivered"] + b.chat["delivered"],
        "p50": percentile(ms, 0.50), "p99": percentile(ms, 0.99),
        "max": max(ms, default=math.nan), "ms": ms}
    return Phase(seconds, chat, mean(lambda p: p.updates_per_s),
                 mean(lambda p: p.changes_per_s), mean(lambda p: p.server_cpu_pct),
                 f"{a.load} / {b.load}")


async def measure(server: ServerProcess, target: ServerProcess, src: Path,
                  work: Workload | None) -> Contention:
    assert server.proc is not None
    pid = server.proc.pid
    c = Contention()
    room = await asyncio.to_thread(RoomLatency, server.chat_port, LISTENERS)
    viewer = Viewer() if work is not None else None
    task = asyncio.create_task(viewer.run(server)) if viewer is not None else None
    try:
        if viewer is not None and work is not None and task is not None:
            work.start()
            done, _ = await asyncio.wait({task, asyncio.create_task(viewer.complete.wait())},
                                         timeout=START_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises what stopped the viewer
            if not viewer.complete.is_set():
                raise TimeoutError("the viewer never had the whole picture")
            await asyncio.sleep(WARM_S)  # the workload under way before the window opens
        before = await quiet(room, pid, work, viewer)
        c.rss_before = memory_mb(pid)["VmRSS"]
        window = Window(pid, work)
        await asyncio.to_thread(room.start, CHAT_RATE)
        t0 = time.monotonic()
        procs = [send_file(target, src, f"uploader{i}") for i in (1, 2)]
        c.upload_s = list(await asyncio.gather(
            *(asyncio.to_thread(finish_upload, p, t0) for p in procs)))
        window.close(c.loaded, viewer, await asyncio.to_thread(room.stop))
        c.hwm_after = memory_mb(pid)["VmHWM"]
        c.quiet = pooled(before, await quiet(room, pid, work, viewer))
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(room.close)
    return c


def contention_run(src: Path, tmp: Path, display: str | None, png: Path | None,
                   elsewhere: bool = False) -> Contention:
    """One run; ``elsewhere``: the control, the two uploads go to another server process
    on the same machine (the same clients, bytes and disk writes; not through this one)."""
    with tempfile.TemporaryDirectory(prefix="bench-files-", dir=tmp) as data:
        server = ServerProcess(Path(data) / "data", env=SERVER_ENV).start()
        other = (ServerProcess(Path(data) / "other", env=SERVER_ENV).start() if elsewhere
                 else server)
        try:
            if display is None or png is None:
                return asyncio.run(measure(server, other, src, None))
            work = Workload(display, WORKLOAD, png, seconds=UPLOAD_TIMEOUT_S)
            try:
                with child(sharer_args(server), r"Sharing \d+x\d+", {"DISPLAY": display},
                           stop_signal=signal.SIGINT):
                    return asyncio.run(measure(server, other, src, work))
            finally:
                work.close()
        finally:
            server.stop()
            if other is not server:
                other.stop()


# -- output -------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


@dataclass
class Row:
    what: str
    value: str
    target: str
    met: bool | None  # None: not measured


def p99_ratio(cs: list[Contention]) -> float:
    return med([float(c.loaded.chat.get("p99", math.nan)) / c.quiet.chat.get("p99", math.nan)
                for c in cs])


def screen_ratio(cs: list[Contention]) -> float:
    return med([c.loaded.updates_per_s / c.quiet.updates_per_s for c in cs
                if c.quiet.updates_per_s > 0])


def issue_rows(ts: list[Transfer], cs: list[Contention], control: list[Contention]
               ) -> list[Row]:
    up = med([SIZE / MB / t.up_s for t in ts])
    down = med([SIZE / MB / t.down_s for t in ts])
    growth = max((t.hwm_after - t.rss_before for t in ts), default=math.nan)
    p99, screen = p99_ratio(cs), screen_ratio(cs)

    def row(what: str, value: float, shown: str, target: str,
            test: Callable[[float], bool]) -> Row:
        return Row(what, shown, target, None if math.isnan(value) else test(value))

    return [
        row("upload, 1 file of the size above", up, f"{up:.0f} MB/s", "≥ 300 MB/s",
            lambda v: v >= 300),
        row("download, the same file", down, f"{down:.0f} MB/s", "≥ 300 MB/s",
            lambda v: v >= 300),
        row("server RSS growth (peak, all transfers)", growth, f"{growth:.1f} MB", "≤ 50 MB",
            lambda v: v <= 50),
        row(f"chat p99, {LISTENERS}-user room, during two uploads / without", p99,
            f"{p99:.2f}×", "≤ 2×", lambda v: v <= 2),
        row("screen viewer updates/s during the uploads / without", screen,
            f"{100 * screen:.0f} %", "≥ 90 %", lambda v: v >= 0.9),
    ] + ([
        Row("control: chat p99 during the same uploads to another server process / without",
            f"{p99_ratio(control):.2f}×", "(what the machine alone does)", None),
        Row("control: viewer updates/s during them / without",
            f"{100 * screen_ratio(control):.0f} %", "(what the machine alone does)", None),
    ] if control else [])


def render_rows(rows: list[Row]) -> str:
    lines = ["| measure | value | target | result |", "|---|---|---|---|"]
    for r in rows:
        verdict = "–" if r.met is None else "MET" if r.met else "MISSED"
        lines.append(f"| {r.what} | {r.value} | {r.target} | {verdict} |")
    return "\n".join(lines)


def render_transfers(ts: list[Transfer]) -> str:
    gb = SIZE / 1e9

    def cell(values: list[float], form: str = ".0f") -> str:
        return f"{med(values):{form}}"

    return "\n".join([
        "| | upload | download |", "|---|---|---|",
        f"| MB/s, whole call | {cell([SIZE / MB / t.up_s for t in ts])} | "
        f"{cell([SIZE / MB / t.down_s for t in ts])} |",
        f"| MB/s, on the wire (upload: after hashing) | "
        f"{cell([SIZE / MB / t.up_wire_s for t in ts])} | "
        f"{cell([SIZE / MB / t.down_s for t in ts])} |",
        f"| server CPU s per GB | {cell([t.server_cpu_up / gb for t in ts], '.2f')} | "
        f"{cell([t.server_cpu_down / gb for t in ts], '.2f')} |",
        f"| client (this process) CPU s per GB | "
        f"{cell([t.client_cpu_up / gb for t in ts], '.2f')} | "
        f"{cell([t.client_cpu_down / gb for t in ts], '.2f')} |",
    ])


def render_contention(cs: list[Contention]) -> str:
    def both(get: Callable[[Phase], float], form: str) -> str:
        q, lo = med([get(c.quiet) for c in cs]), med([get(c.loaded) for c in cs])
        return f"{q:{form}} | {lo:{form}}"

    def delivered(p: Phase) -> float:
        return float(p.chat.get("delivered", 0) / max(1.0, p.chat.get("expected", 0)))

    up = med([SIZE / MB / s for c in cs for s in c.upload_s])
    growth = max((c.hwm_after - c.rss_before for c in cs), default=math.nan)
    return "\n".join([
        "| | without uploads | during two uploads |", "|---|---|---|",
        f"| windows, s (without: before and after, pooled) | "
        f"{both(lambda p: p.seconds, '.1f')} |",
        f"| chat p50, ms | {both(lambda p: p.chat.get('p50', math.nan), '.2f')} |",
        f"| chat p99, ms | {both(lambda p: p.chat.get('p99', math.nan), '.2f')} |",
        f"| chat max, ms | {both(lambda p: p.chat.get('max', math.nan), '.1f')} |",
        f"| chat deliveries, fraction | {both(delivered, '.4f')} |",
        f"| viewer updates/s | {both(lambda p: p.updates_per_s, '.1f')} |",
        f"| workload's changes on screen/s | {both(lambda p: p.changes_per_s, '.1f')} |",
        f"| server CPU, % of a core | {both(lambda p: p.server_cpu_pct, '.0f')} |",
        "",
        f"Each upload (a `chatscreen send-file` process, start to exit, hashing included): "
        f"{up:.0f} MB/s median; server RSS growth during the two: {growth:.1f} MB.",
    ])


def without_ms(doc: dict[str, Any]) -> dict[str, Any]:
    """The runs without every latency (the percentiles stay)."""
    for phase in ("quiet", "loaded"):
        doc[phase]["chat"].pop("ms", None)
    return doc


def write_json(ts: list[Transfer], cs: list[Contention], control: list[Contention],
               rows: list[Row], wall: float) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_files-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    doc = {"size": SIZE, "runs": RUNS, "quiet_s": QUIET_S, "listeners": LISTENERS,
           "chat_rate": CHAT_RATE, "workload": WORKLOAD if SCREEN else None,
           "cpus": os.cpu_count(), "wall_s": wall,
           "transfers": [asdict(t) for t in ts], "contention": [without_ms(asdict(c)) for c in cs],
           "control": [without_ms(asdict(c)) for c in control],
           "issue_18": [asdict(r) for r in rows]}
    path.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")
    return path


@contextlib.contextmanager
def screen_setup(tmp: Path) -> Iterator[tuple[str | None, Path | None]]:
    if not SCREEN:
        yield None, None
        return
    with run_xvfb(f"{W}x{H}x24") as display:
        yield display, make_test_picture(W, H, tmp / "desktop.png")


def main() -> int:
    print("# bench_files (issue 18: files)\n")
    base = Path(WORK_DIR or tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < 5 * SIZE:
        print(f"{base} has {free / 1e9:.1f} GB free; this needs {5 * SIZE / 1e9:.1f} GB "
              "(set BENCH_FILES_MB lower, or BENCH_FILES_DIR)", file=sys.stderr)
        return 1
    print(f"Loopback, TLS, {os.cpu_count()} CPUs, a {SIZE / MB:.0f} MB file in {base} "
          f"({free / 1e9:.0f} GB free); {RUNS} runs, medians; load average at the start "
          f"{load_average()}.\n", flush=True)
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-files-", dir=base) as tmp_name:
        tmp = Path(tmp_name)
        src = make_file(tmp / "one-gigabyte.bin", SIZE)
        server = ServerProcess(tmp / "data", env=SERVER_ENV).start()
        try:
            ts = asyncio.run(transfers(server, src, tmp))
        finally:
            server.stop()
        shutil.rmtree(tmp / "data", ignore_errors=True)
        cs: list[Contention] = []
        control: list[Contention] = []
        with screen_setup(tmp) as (display, png):
            for run in range(RUNS):
                for elsewhere in (False, True) if CONTROL else (False,):
                    t = time.monotonic()
                    c = contention_run(src, tmp, display, png, elsewhere)
                    (control if elsewhere else cs).append(c)
                    print(f"<!-- {'control' if elsewhere else 'contention'} {run + 1}: chat "
                          f"p99 {c.quiet.chat.get('p99', 0):.2f} -> "
                          f"{c.loaded.chat.get('p99', 0):.2f} ms, viewer "
                          f"{c.quiet.updates_per_s:.1f} -> {c.loaded.updates_per_s:.1f} "
                          f"updates/s, uploads {', '.join(f'{s:.1f} s' for s in c.upload_s)},"
                          f" load {c.quiet.load} / {c.loaded.load} "
                          f"({time.monotonic() - t:.0f} s) -->", flush=True)
    wall = time.monotonic() - t_all
    rows = issue_rows(ts, cs, control)
    print("\n### Transfers\n")
    print(render_transfers(ts))
    print(f"\n### A {LISTENERS}-user room ({CHAT_RATE:g} messages/s) and a screen share "
          f"({WORKLOAD if SCREEN else 'none'}), without and during two uploads\n")
    print(render_contention(cs))
    if control:
        print("\nControl, same runs: the two uploads go to another server process on the same "
              "machine (same clients, bytes and disk writes), not through the measured one:\n")
        print(render_contention(control))
    print("\n### Issue 18's numbers\n")
    print(render_rows(rows))
    path = write_json(ts, cs, control, rows, wall)
    print(f"\nWhole run {wall:.0f} s; load average at the end {load_average()}. "
          f"JSON: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
