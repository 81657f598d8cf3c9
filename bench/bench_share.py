"""Screen sharing end to end: chatscreen vs the original pipeline, on a private Xvfb.

Run ``python -m bench.bench_share`` from the repository root (or ``make bench``). Output is
Markdown. For every case, 3 runs; every figure is the median of the runs.

Each run starts a fresh server (the real one, or ``bench.baseline_original``), puts a picture on
a 1920x1080 Xvfb (``bench/screen_animation.py``: the desktop-like test picture with a square
moving ~30 times a second, or the picture alone for the idle cases), starts the sharer as a
subprocess (``chatscreen share`` / ``baseline_original share``) and watches in this process:

* chatscreen: ``chatscreen.client`` (log in, find the share, open the screen connection, watch),
  every frame that reaches the application is decoded onto a ``chatscreen.screen.codec.Canvas``;
* original: a socket reading ``>L``-framed pickles, each one unpickled and ``cv2.imdecode``-d,
  as the original's receiver did.

Measured over the window (after a 1 s warm-up): frames received by the viewer's connection,
frames decoded, wire bytes received, CPU of the sharer and server processes (utime + stime from
``/proc/PID/stat``, % of one core), and PSNR of what the viewer has against a screen grab taken
right after (the original's 800x600 picture is scaled back to 1920x1080 first, as a viewer would
have to). Environment: ``BENCH_SHARE_SECONDS`` (default 10) sets the window of the moving
cases, idle cases use half of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.display import open_mss  # noqa: E402
from tests.helpers.pictures import make_test_picture  # noqa: E402
from tests.helpers.server import ServerProcess  # noqa: E402
from tests.helpers.xvfb import run_xvfb  # noqa: E402

from bench import baseline_original as original  # noqa: E402
from chatscreen.client import Client, ScreenChannel  # noqa: E402
from chatscreen.client.link import Link  # noqa: E402
from chatscreen.protocol import Message  # noqa: E402
from chatscreen.screen.codec import Canvas, psnr  # noqa: E402
from chatscreen.screen.sharing import find_share, frame_rects  # noqa: E402

RUNS = int(os.environ.get("BENCH_SHARE_RUNS", "3"))
WINDOW_S = float(os.environ.get("BENCH_SHARE_SECONDS", "10"))
IDLE_WINDOW_S = WINDOW_S / 2
WARMUP_S = 1.0
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
PSNR_SAMPLES = 3
WIDTH, HEIGHT = 1920, 1080
ANIMATION = Path(__file__).with_name("screen_animation.py")
HOST = "127.0.0.1"
RGB = npt.NDArray[np.uint8]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from 3 (state) on
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    """Read the child's stdout until a line matches; return what was read."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, buf.decode(errors="replace")):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {pattern!r} from {proc.args!r} in {timeout} s: {buf!r} "
                               f"stderr: {_pending(proc.stderr)!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{proc.args!r} exited ({proc.wait(5)}) before {pattern!r}: "
                               f"{buf!r} {err[-2000:]}")
        buf += chunk
    return buf.decode(errors="replace")


def _pending(stream: Any) -> bytes:
    """What a child has written to a pipe so far, without waiting for more (for an error
    message: a child that hangs at start says why on stderr, if anywhere)."""
    if stream is None:
        return b""
    fd = stream.fileno()
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""
    finally:
        os.set_blocking(fd, True)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> str:
    """Signal, wait (bounded), kill if needed; return the rest of its stdout."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
    return (out or b"").decode(errors="replace")


@contextlib.contextmanager
def child(args: list[str], ready: str, env: dict[str, str] | None = None,
          stop_signal: int = signal.SIGTERM) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A child process, once it printed ``ready`` (a regex); yields it and what it printed."""
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        yield proc, wait_line(proc, ready, START_TIMEOUT_S)
    finally:
        stop_process(proc, stop_signal)


def show_screen(display: str, png: Path, *, static: bool) -> Any:
    args = [sys.executable, str(ANIMATION), str(png), "--rate", "30", "--max-seconds", "300"]
    return child(args + (["--static"] if static else []), r"ready", {"DISPLAY": display})


# -- measurements ------------------------------------------------------------------------


@dataclass
class Window:
    """What one run measured over its window."""

    seconds: float = 0.0
    frames_in: int = 0  # frames that arrived on the viewer's connection
    frames_shown: int = 0  # frames decoded by the viewer
    bytes_in: int = 0  # wire bytes received by the viewer
    sharer_cpu: float = 0.0  # % of one core
    server_cpu: float = 0.0
    psnr: list[float] = field(default_factory=list)

    @property
    def fps_in(self) -> float:
        return self.frames_in / self.seconds

    @property
    def fps_shown(self) -> float:
        return self.frames_shown / self.seconds

    @property
    def kbytes_per_s(self) -> float:
        return self.bytes_in / self.seconds / 1000


class CpuMeter:
    def __init__(self, sharer: int, server: int) -> None:
        self.pids = (sharer, server)
        self.t0 = time.monotonic()
        self.c0 = [cpu_seconds(p) for p in self.pids]

    def finish(self, window: Window) -> None:
        wall = time.monotonic() - self.t0
        c1 = [cpu_seconds(p) for p in self.pids]
        window.seconds = wall
        window.sharer_cpu = 100 * (c1[0] - self.c0[0]) / wall
        window.server_cpu = 100 * (c1[1] - self.c0[1]) / wall


class Grabber:
    """The screen as it is now, RGB, to compare the viewer's picture with."""

    def __init__(self, display: str) -> None:
        self.sct = open_mss(display)
        self.monitor = self.sct.monitors[1]

    def grab(self) -> RGB:
        bgra = np.asarray(self.sct.grab(self.monitor))
        return np.ascontiguousarray(bgra[:, :, 2::-1])

    def close(self) -> None:
        self.sct.close()


class _CountingReader:
    """Wraps the screen link's StreamReader to count wire bytes."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.count = 0

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self.count += len(data)
        return data


class _CountingScreen(ScreenChannel):
    """A ScreenChannel that counts every frame arriving, including the ones that a newer key
    frame replaces before the application takes them."""

    frames_in = 0

    def _on_message(self, msg: Message) -> None:
        if msg.type == "frame":
            self.frames_in += 1
        super()._on_message(msg)


async def _view_chatscreen(server: ServerProcess, sharer_pid: int, display: str,
                           window_s: float) -> Window:
    client = Client(HOST, "viewer", chat_port=server.chat_port, screen_port=server.screen_port,
                    reconnect=False)
    await client.connect()
    grabber = Grabber(display)
    screen: _CountingScreen | None = None
    try:
        share = await find_share(client, "sharer", START_TIMEOUT_S)
        link = await Link.open(HOST, server.screen_port, client.timeout, token=client.token)
        counter = _CountingReader(link.reader)
        link.reader = counter  # type: ignore[assignment]
        screen = _CountingScreen(link)
        await screen.watch(share["id"])
        canvas = Canvas(share["w"], share["h"])

        def apply(msg: Message) -> None:
            if msg["share"] == share["id"]:
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))

        async with asyncio.timeout(START_TIMEOUT_S):
            while not canvas.complete:
                apply(await screen.next_frame())
        warm_end = time.monotonic() + WARMUP_S
        while (left := warm_end - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                apply(await screen.next_frame(timeout=left))

        win = Window()
        screen.frames_in, counter.count = 0, 0
        meter = CpuMeter(sharer_pid, server.proc.pid if server.proc else 0)
        start = meter.t0
        sample_at = [start + window_s * (k + 0.5) / PSNR_SAMPLES for k in range(PSNR_SAMPLES)]
        pairs: list[tuple[RGB, RGB]] = []
        end = start + window_s
        while (now := time.monotonic()) < end:
            wait = min(end, sample_at[0] if sample_at else end) - now
            try:
                apply(await screen.next_frame(timeout=max(wait, 0.001)))
                win.frames_shown += 1
            except TimeoutError:
                pass
            if sample_at and time.monotonic() >= sample_at[0]:
                sample_at.pop(0)
                pairs.append((canvas.pixels.copy(), grabber.grab()))
        meter.finish(win)
        win.frames_in, win.bytes_in = screen.frames_in, counter.count
        win.psnr = [psnr(a, b) for a, b in pairs]
        return win
    finally:
        if screen is not None:
            await screen.close()
        await client.close()
        grabber.close()


def run_chatscreen(display: str, png: Path, *, static: bool, fps: float | None) -> Window:
    window_s = IDLE_WINDOW_S if static else WINDOW_S
    with tempfile.TemporaryDirectory(prefix="bench-share-") as tmp, \
            show_screen(display, png, static=static):
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            args = [sys.executable, "-m", "chatscreen", "share", "--server",
                    f"{HOST}:{server.chat_port}", "--screen-port", str(server.screen_port),
                    "--user", "sharer"]
            if fps is not None:
                args += ["--fps", str(fps)]
            with child(args, r"Sharing \d+x\d+", {"DISPLAY": display},
                       stop_signal=signal.SIGINT) as (sharer, _):
                win = asyncio.run(_view_chatscreen(server, sharer.pid, display, window_s))
                if sharer.poll() is not None:
                    raise RuntimeError(f"chatscreen share exited early ({sharer.returncode})")
            return win
        finally:
            server.stop()


def _view_original(screen_port: int, pids: tuple[int, int], display: str,
                   window_s: float) -> Window:
    grabber = Grabber(display)
    try:
        with socket.create_connection((HOST, screen_port), timeout=START_TIMEOUT_S) as sock:
            sock.settimeout(STOP_TIMEOUT_S)
            original.decode_frame(original.recv_frame(sock))  # first frame
            warm_end = time.monotonic() + WARMUP_S
            while time.monotonic() < warm_end:
                original.decode_frame(original.recv_frame(sock))
            win = Window()
            meter = CpuMeter(*pids)
            start = meter.t0
            sample_at = [start + window_s * (k + 0.5) / PSNR_SAMPLES
                         for k in range(PSNR_SAMPLES)]
            pairs: list[tuple[Any, RGB]] = []
            while time.monotonic() < start + window_s:
                body = original.recv_frame(sock)
                win.frames_in += 1
                win.bytes_in += original.LEN.size + len(body)
                bgr = original.decode_frame(body)
                win.frames_shown += 1
                if sample_at and time.monotonic() >= sample_at[0]:
                    sample_at.pop(0)
                    pairs.append((bgr, grabber.grab()))
            meter.finish(win)
        for bgr, screen in pairs:
            big = cv2.resize(bgr, (screen.shape[1], screen.shape[0]),
                             interpolation=cv2.INTER_LINEAR)
            win.psnr.append(psnr(np.ascontiguousarray(big[:, :, ::-1]), screen))
        return win
    finally:
        grabber.close()


def run_original(display: str, png: Path, *, static: bool) -> Window:
    window_s = IDLE_WINDOW_S if static else WINDOW_S
    base = [sys.executable, "-m", "bench.baseline_original"]
    with show_screen(display, png, static=static), \
            child([*base, "server", "--chat-port", "0", "--screen-port", "0",
                          "--max-seconds", "300"], r"screen \d+") as (server, banner):
        found = re.search(r"screen (\d+)", banner)
        assert found, banner
        port = int(found.group(1))
        with child([*base, "share", "--screen-port", str(port), "--max-seconds", "300"],
                   r"", {"DISPLAY": display}) as (sharer, _):
            win = _view_original(port, (sharer.pid, server.pid), display, window_s)
            if sharer.poll() is not None:
                raise RuntimeError(f"baseline sharer exited early ({sharer.returncode})")
        return win


# -- the cases -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    run: Callable[[], Window]
    baseline: str | None  # the case it is compared with
    windows: list[Window] = field(default_factory=list)


def med(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def summary(case: Case) -> dict[str, float]:
    ws = case.windows
    return {
        "fps_in": med([w.fps_in for w in ws]),
        "fps_shown": med([w.fps_shown for w in ws]),
        "kBps": med([w.kbytes_per_s for w in ws]),
        "sharer_cpu": med([w.sharer_cpu for w in ws]),
        "server_cpu": med([w.server_cpu for w in ws]),
        "psnr": med([med(w.psnr) if w.psnr else math.nan for w in ws]),
    }


def ratio(a: float, b: float) -> str:
    if b == 0 or math.isnan(a) or math.isnan(b):
        return "–"
    return f"{a / b:.2f}×"


def render(cases: list[Case]) -> str:
    sums = {c.name: summary(c) for c in cases}
    head = ["case", "frames/s received", "frames/s decoded", "kB/s", "sharer CPU %",
            "server CPU %", "PSNR dB", "frames/s vs base", "kB/s vs base", "sharer CPU vs base"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in cases:
        s = sums[c.name]
        b = sums[c.baseline] if c.baseline else None
        cells = [c.name, f"{s['fps_in']:.1f}", f"{s['fps_shown']:.1f}", f"{s['kBps']:.0f}",
                 f"{s['sharer_cpu']:.0f}", f"{s['server_cpu']:.0f}", f"{s['psnr']:.1f}"]
        if b is None:
            cells += ["1×", "1×", "1×"]
        else:
            cells += [ratio(s["fps_in"], b["fps_in"]), ratio(s["kBps"], b["kBps"]),
                      ratio(s["sharer_cpu"], b["sharer_cpu"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    print("# bench_share\n")
    print(f"1920x1080x24 Xvfb, loopback; {RUNS} runs per case, medians; window {WINDOW_S:g} s "
          f"(idle cases {IDLE_WINDOW_S:g} s) after a {WARMUP_S:g} s warm-up; "
          f"{os.cpu_count()} CPUs.\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-share-") as tmp, \
            run_xvfb(f"{WIDTH}x{HEIGHT}x24") as display:
        png = make_test_picture(WIDTH, HEIGHT, Path(tmp) / "desktop.png")
        base, base_idle = "original (baseline), moving", "original (baseline), idle"
        cases = [
            Case(base, lambda: run_original(display, png, static=False), None),
            Case("chatscreen default (15 fps), moving",
                 lambda: run_chatscreen(display, png, static=False, fps=None), base),
            Case("chatscreen --fps 30, moving",
                 lambda: run_chatscreen(display, png, static=False, fps=30), base),
            Case(base_idle, lambda: run_original(display, png, static=True), None),
            Case("chatscreen default (15 fps), idle",
                 lambda: run_chatscreen(display, png, static=True, fps=None), base_idle),
        ]
        for run in range(RUNS):
            for case in cases:
                t = time.monotonic()
                win = case.run()
                case.windows.append(win)
                print(f"<!-- run {run + 1} {case.name}: {win.fps_in:.1f} frames/s in, "
                      f"{win.fps_shown:.1f} decoded, {win.kbytes_per_s:.0f} kB/s, sharer "
                      f"{win.sharer_cpu:.0f} %, server {win.server_cpu:.0f} %, PSNR "
                      f"{', '.join(f'{p:.1f}' for p in win.psnr)} "
                      f"({time.monotonic() - t:.1f} s) -->", flush=True)
    print()
    print(render(cases))
    print(
        "\nframes/s received: frames arriving on the viewer's connection; decoded: frames the "
        "viewer decoded (chatscreen's client keeps only the newest key frame when the "
        "application is behind). kB/s: wire bytes at the viewer. CPU: % of one core. PSNR: "
        "the viewer's picture vs a grab of the screen right after (moving cases include the "
        "motion since capture; idle cases measure the codec alone; the original's 800x600 is "
        "scaled back to 1920x1080). The baseline captures with mss, not PyAutoGUI (not "
        "installed), which flatters it; JPEG quality 80 is a guess (the README gives none)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
