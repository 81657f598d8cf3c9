"""Issue 4: screen sharing workloads against the issue's targets, and against the original.

``python -m bench.bench_screen`` (part of ``make bench``). For each workload of
``bench/screen_workloads.py`` (idle, typing, typing-scroll, scrolling, video, drag) on a private
1920x1080 Xvfb: a fresh server, the sharer as a subprocess (``chatscreen share --fps 30``, or the
original's pipeline from ``bench.baseline_original``), one viewer in this process decoding
everything it receives. The workload draws a tick number on the screen and prints when each
tick reached the X server, so the viewer measures:

* updates/s: new ticks decoded per second, against the workload's changes/s;
* latency p50/p95: from the tick on the display to the viewer having decoded it;
* kB/s at the viewer, sharer and server CPU (% of one core, /proc utime+stime);
* PSNR while moving: the viewer's picture against a grab of the screen taken right after, kept
  only when the grab shows the same tick (so it measures the codec, not the motion);
  for ``video`` inside the video region only;
* after the window the workload stops: "exact after": how long until the viewer's picture is
  pixel-exact (lossless refresh), or the PSNR it stays at.

Environment: ``BENCH_SCREEN_SECONDS`` (window, default 20), ``BENCH_SCREEN_RUNS`` (default 3),
``BENCH_SCREEN_WORKLOADS`` (comma-separated subset; empty: none), ``BENCH_SCREEN_ENCODING``
(the sharer's ``--encoding``, default auto), ``BENCH_SCREEN_BASELINE=0`` to skip the
original, ``BENCH_SCREEN_BIN=0`` for a viewer that takes frames as JSON (default: the
binary form, as the app and the CLI). Figures are medians over the runs.

Fan-out (``BENCH_SCREEN_FANOUT=0`` skips it): one sharer of ``BENCH_SCREEN_FANOUT_WORKLOAD``
(default scrolling) watched by 1 viewer, by ``BENCH_SCREEN_FANOUT_VIEWERS`` (default 10), and
by as many plus one **stalled** viewer (it asks to watch, then never reads: a 4 kB receive
buffer). One viewer (the probe) decodes and measures updates/s and latency; every viewer
counts the frames that reach it. The sharer's CPU must not grow with the viewers, and the
stalled one must change the others' frames/s by less than 10 %.

Throttled (``BENCH_SCREEN_THROTTLED=0`` skips it): one sharer of the ``video`` workload
watched by ``BENCH_SCREEN_FANOUT_VIEWERS`` viewers that count frames and one more that reads
at most ``BENCH_SCREEN_THROTTLE`` bytes/s (default 300000; a 4 kB receive buffer) and decodes:
its frames/s, new ticks/s, latency and PSNR in the video region, with the sharer's low
quality layer (``--layers 2``, the default) and without (``--layers 1``), and the others'
frames/s and the sharer's and server's CPU beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.pictures import make_test_picture  # noqa: E402
from tests.helpers.server import ServerProcess, frame, raw_socket  # noqa: E402
from tests.helpers.throttle import read_frames  # noqa: E402
from tests.helpers.xvfb import run_xvfb  # noqa: E402

from bench import baseline_original as original  # noqa: E402
from bench.bench_share import (  # noqa: E402
    RGB,
    Grabber,
    _CountingReader,
    _CountingScreen,
    child,
    cpu_seconds,
    stop_process,
    wait_line,
)
from bench.screen_workloads import VIDEO_BOX, read_marker  # noqa: E402
from chatscreen.client import Client  # noqa: E402
from chatscreen.client.link import Link  # noqa: E402
from chatscreen.protocol import Message  # noqa: E402
from chatscreen.protocol.binform import BIN_VERSION  # noqa: E402
from chatscreen.screen.codec import Canvas, psnr  # noqa: E402
from chatscreen.screen.cursor import Cursor, composite  # noqa: E402
from chatscreen.screen.sharing import find_share, frame_rects  # noqa: E402

RUNS = int(os.environ.get("BENCH_SCREEN_RUNS", "3"))
BIN = os.environ.get("BENCH_SCREEN_BIN", "1") != "0"
WINDOW_S = float(os.environ.get("BENCH_SCREEN_SECONDS", "20"))
DEFAULT_WORKLOADS = "idle,typing,typing-scroll,scrolling,video,drag"
WORKLOADS = [w for w in os.environ.get("BENCH_SCREEN_WORKLOADS", DEFAULT_WORKLOADS).split(",")
             if w]
BASELINE = os.environ.get("BENCH_SCREEN_BASELINE", "1") != "0"
FANOUT = os.environ.get("BENCH_SCREEN_FANOUT", "1") != "0"
FANOUT_VIEWERS = int(os.environ.get("BENCH_SCREEN_FANOUT_VIEWERS", "10"))
FANOUT_WORKLOAD = os.environ.get("BENCH_SCREEN_FANOUT_WORKLOAD", "scrolling")
THROTTLED = os.environ.get("BENCH_SCREEN_THROTTLED", "1") != "0"
THROTTLE = float(os.environ.get("BENCH_SCREEN_THROTTLE", "300000"))
RATE = 30.0
STILL_S = 3.0  # after the window: how long we wait for the pixel-exact picture
START_TIMEOUT_S = 30.0
HOST = "127.0.0.1"
W, H = 1920, 1080
SCRIPT = Path(__file__).with_name("screen_workloads.py")
TARGETS = {  # updates/s, latency p50 ms, bytes/s, fidelity
    "idle": ("–", "–", "≤ 1 kB/s", "pixel-exact"),
    "typing": ("≥ 30", "≤ 10", "≤ 60 kB/s", "pixel-exact once still"),
    "typing-scroll": ("≥ 30", "≤ 10", "≤ 60 kB/s", "pixel-exact once still"),
    "scrolling": ("≥ 30", "≤ 20", "≤ 1 MB/s", "≥ 38 dB moving"),
    "video": ("≥ 30", "≤ 20", "≤ 1.2 MB/s", "≥ 32 dB in region"),
    "drag": ("–", "–", "–", "–"),
}


@dataclass
class Result:
    seconds: float = 0.0
    ticks: int = 0  # changes made on screen in the window
    updates: int = 0  # new ticks decoded by the viewer
    latency: list[float] = field(default_factory=list)  # seconds
    bytes_in: int = 0
    sharer_cpu: float = 0.0
    server_cpu: float = 0.0
    psnr: list[float] = field(default_factory=list)
    exact_after: float = math.nan  # seconds after the end until pixel-exact; nan: never
    still_psnr: float = math.nan


class CursorGrabber(Grabber):
    """The screen with the pointer drawn in, as the sharer captures it."""

    def __init__(self, display: str) -> None:
        import mss

        self.sct = mss.MSS(display=display, with_cursor=True)
        self.monitor = self.sct.monitors[1]


class Workload:
    """The workload process; collects its tick times on a thread."""

    def __init__(self, display: str, name: str, png: Path, rate: float = RATE,
                 seconds: float = WINDOW_S + 2.0) -> None:
        self.name = name
        self.ticks: dict[int, float] = {}
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), name, "--desktop", str(png), "--rate", str(rate),
             "--seconds", str(seconds)], cwd=REPO_ROOT,
            env={**os.environ, "DISPLAY": display}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_line(self.proc, r"ready", START_TIMEOUT_S)
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        assert self.proc.stdin is not None
        self._reader.start()
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.match(rb"tick (\d+) ([\d.]+)", line)
            if m:
                self.ticks[int(m.group(1))] = float(m.group(2))

    def close(self) -> None:
        stop_process(self.proc)


def region(rgb: RGB, name: str) -> RGB:
    if name != "video":
        return rgb
    x0, y0, x1, y1 = VIDEO_BOX
    return rgb[y0:y1, x0:x1]


class Meter:
    def __init__(self, pids: tuple[int, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.c0 = [cpu_seconds(p) for p in pids]

    def finish(self, r: Result) -> None:
        wall = time.monotonic() - self.t0
        c1 = [cpu_seconds(p) for p in self.pids]
        r.seconds = wall
        r.sharer_cpu = 100 * (c1[0] - self.c0[0]) / wall
        r.server_cpu = 100 * (c1[1] - self.c0[1]) / wall


class Tracker:
    """What the viewer sees: updates, latencies, PSNR samples."""

    def __init__(self, work: Workload, grabber: Grabber, scale: tuple[float, float]) -> None:
        self.work, self.grabber, self.scale = work, grabber, scale
        self.last = -1
        self.seen: list[tuple[int, float]] = []  # (tick, decoded at)
        self.next_sample = 0.0
        self.psnr: list[float] = []

    def shown(self, rgb: RGB, full: RGB | None = None, pointer: Cursor | None = None) -> None:
        """``rgb``: the viewer's picture (maybe scaled); ``full``: it at 1920x1080;
        ``pointer``: the sharer's pointer, drawn over it for the PSNR sample."""
        now = time.monotonic()
        tick = read_marker(rgb, *self.scale)
        if tick > self.last:
            self.last = tick
            self.seen.append((tick, now))
        if now >= self.next_sample and tick > 0:
            self.next_sample = now + 0.5
            screen = self.grabber.grab()
            if read_marker(screen) == tick:
                pic = full if full is not None else rgb
                if pointer is not None:
                    pic = composite(pic, pointer)
                self.psnr.append(psnr(region(pic, self.work.name),
                                      region(screen, self.work.name)))

    def result(self, r: Result, start: float, end: float) -> None:
        ticks = self.work.ticks
        r.ticks = sum(1 for t in ticks.values() if start <= t < end)
        for tick, at in self.seen:
            if tick in ticks and start <= ticks[tick] < end:
                r.updates += 1
                r.latency.append(at - ticks[tick])
        r.psnr = self.psnr


async def _view_chatscreen(server: ServerProcess, sharer_pid: int, work: Workload,
                           display: str) -> Result:
    client = Client(HOST, "viewer", chat_port=server.chat_port, screen_port=server.screen_port,
                    reconnect=False)
    await client.connect()
    grabber = CursorGrabber(display)
    screen: _CountingScreen | None = None
    try:
        share = await find_share(client, "sharer", START_TIMEOUT_S)
        # the binary form of frames, as the app and the CLI ask for (BENCH_SCREEN_BIN=0: JSON)
        link = await Link.open(HOST, server.screen_port, client.timeout,
                               getattr(client, "tls", None), token=client.token,
                               bin=BIN_VERSION if BIN else None)
        counter = _CountingReader(link.reader)
        link.reader = counter  # type: ignore[assignment]
        screen = _CountingScreen(link)
        await screen.watch(share["id"])
        canvas = Canvas(share["w"], share["h"])
        track = Tracker(work, grabber, (1.0, 1.0))
        async with asyncio.timeout(START_TIMEOUT_S):
            while not canvas.complete:
                msg = await screen.next_frame()
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        r = Result()
        work.start()
        meter = Meter((sharer_pid, server.proc.pid if server.proc else 0))
        counter.count = 0
        start, end = meter.t0, meter.t0 + WINDOW_S
        while (left := end - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                msg = await screen.next_frame(timeout=left)
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                track.shown(canvas.pixels, pointer=screen.cursors.get(share["id"]))
        meter.finish(r)
        r.bytes_in = counter.count
        track.result(r, start, end)
        # the workload stops ticking at WINDOW_S + 2 s: wait for it, then for exactness
        still_from = start + WINDOW_S + 2.0
        deadline = still_from + STILL_S
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                msg = await screen.next_frame(timeout=min(left, 0.1))
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
            if time.monotonic() >= still_from:
                shot = grabber.grab()
                seen = composite(canvas.pixels, screen.cursors.get(share["id"]))
                if np.array_equal(seen, shot):
                    r.exact_after = time.monotonic() - still_from
                    break
                r.still_psnr = psnr(seen, shot)
        return r
    finally:
        if screen is not None:
            await screen.close()
        await client.close()
        grabber.close()


def sharer_args(server: ServerProcess, *extra: str) -> list[str]:
    """The real ``chatscreen share`` command line, at 30 updates/s, to ``server``."""
    return [sys.executable, "-m", "chatscreen", "share", "--server",
            f"{HOST}:{server.chat_port}", "--screen-port", str(server.screen_port),
            "--user", "sharer", "--fps", "30", *extra]


def run_chatscreen(display: str, name: str, png: Path) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
        work = Workload(display, name, png)
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            args = sharer_args(server, "--encoding",
                               os.environ.get("BENCH_SCREEN_ENCODING", "auto"))
            with child(args, r"Sharing \d+x\d+", {"DISPLAY": display},
                       stop_signal=signal.SIGINT) as (sharer, _):
                return asyncio.run(_view_chatscreen(server, sharer.pid, work, display))
        finally:
            server.stop()
            work.close()


def run_original(display: str, name: str, png: Path) -> Result:
    work = Workload(display, name, png)
    base = [sys.executable, "-m", "bench.baseline_original"]
    grabber = CursorGrabber(display)
    try:
        with child([*base, "server", "--chat-port", "0", "--screen-port", "0",
                    "--max-seconds", "300"], r"screen \d+") as (server, banner):
            found = re.search(r"screen (\d+)", banner)
            assert found, banner
            port = int(found.group(1))
            with child([*base, "share", "--screen-port", str(port), "--max-seconds", "300"],
                       r"", {"DISPLAY": display}) as (sharer, _):
                import socket

                with socket.create_connection((HOST, port), timeout=START_TIMEOUT_S) as sock:
                    original.decode_frame(original.recv_frame(sock))
                    sx, sy = original.FRAME_SIZE[0] / W, original.FRAME_SIZE[1] / H
                    track = Tracker(work, grabber, (sx, sy))
                    r = Result()
                    work.start()
                    meter = Meter((sharer.pid, server.pid))
                    start, end = meter.t0, meter.t0 + WINDOW_S
                    while time.monotonic() < end:
                        body = original.recv_frame(sock)
                        r.bytes_in += original.LEN.size + len(body)
                        rgb = np.ascontiguousarray(original.decode_frame(body)[:, :, ::-1])
                        now = time.monotonic()
                        if now >= track.next_sample:
                            big = np.asarray(cv2.resize(rgb, (W, H),
                                                        interpolation=cv2.INTER_LINEAR),
                                             dtype=np.uint8)
                            track.shown(rgb, big)
                        else:
                            track.shown(rgb)
                    meter.finish(r)
                    track.result(r, start, end)
                    return r
    finally:
        grabber.close()
        work.close()


# -- one sharer, many viewers, one of them stalled ---------------------------------------------


@dataclass
class Fanout:
    """One run of the fan-out scenario: the probe viewer decodes and measures updates and
    latency; the others only count the frames that reach them."""

    probe: Result = field(default_factory=Result)
    frames: list[int] = field(default_factory=list)  # per viewer (probe included) in the window


def stalled_socket(server: ServerProcess, name: str, share_id: int) -> list[Any]:
    """A viewer that logs in, asks to watch, and never reads again (a 4 kB receive buffer)."""
    chat = raw_socket(server, server.chat_port)
    chat.sendall(frame({"type": "hello", "v": 1, "user": name}))
    data = b""
    while b'"token"' not in data:
        data += chat.recv(65536)
    hlen = int.from_bytes(data[4:8], "big")
    token = json.loads(data[8 : 8 + hlen])["token"]
    scr = raw_socket(server, server.screen_port, rcvbuf=4096)
    scr.sendall(frame({"type": "hello", "v": 1, "token": token}))
    scr.sendall(frame({"type": "watch", "share": share_id}))
    return [chat, scr]


async def _counting_viewer(server: ServerProcess, name: str) -> tuple[Client, _CountingScreen,
                                                                      dict[str, Any]]:
    client = Client(HOST, name, chat_port=server.chat_port, screen_port=server.screen_port,
                    reconnect=False)
    await client.connect()
    share = await find_share(client, "sharer", START_TIMEOUT_S)
    link = await Link.open(HOST, server.screen_port, client.timeout,
                           getattr(client, "tls", None), token=client.token)
    screen = _CountingScreen(link)
    await screen.watch(share["id"])
    return client, screen, share


async def _view_fanout(server: ServerProcess, sharer_pid: int, work: Workload, display: str,
                       viewers: int, stalled: bool) -> tuple[Fanout, Result]:
    grabber = CursorGrabber(display)
    opened = [await _counting_viewer(server, f"viewer{i}") for i in range(viewers)]
    socks: list[Any] = []
    drains: list[asyncio.Task[None]] = []
    try:
        _, probe, share = opened[0]
        if stalled:
            socks = await asyncio.to_thread(stalled_socket, server, "stalled", share["id"])
        canvas = Canvas(share["w"], share["h"])
        async with asyncio.timeout(START_TIMEOUT_S):
            while not canvas.complete:
                msg = await probe.next_frame()
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))

        async def drain(screen: _CountingScreen) -> None:
            while True:
                await screen.next_frame()

        drains = [asyncio.create_task(drain(s)) for _, s, _ in opened[1:]]
        track = Tracker(work, grabber, (1.0, 1.0))
        track.next_sample = math.inf  # no PSNR sampling here
        r = Result()
        work.start()
        meter = Meter((sharer_pid, server.proc.pid if server.proc else 0))
        counts0 = [s.frames_in for _, s, _ in opened]
        start, end = meter.t0, meter.t0 + WINDOW_S
        while (left := end - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                msg = await probe.next_frame(timeout=left)
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                track.shown(canvas.pixels)
        meter.finish(r)
        track.result(r, start, end)
        out = Fanout(r, [s.frames_in - c for (_, s, _), c in zip(opened, counts0, strict=True)])
        return out, r
    finally:
        for t in drains:
            t.cancel()
        for sock in socks:
            sock.close()
        for client, screen, _ in opened:
            await screen.close()
            await client.close()
        grabber.close()


def run_fanout(display: str, name: str, png: Path, viewers: int, stalled: bool) -> Fanout:
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
        work = Workload(display, name, png)
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            args = sharer_args(server)
            with child(args, r"Sharing \d+x\d+", {"DISPLAY": display},
                       stop_signal=signal.SIGINT) as (sharer, _):
                out, _ = asyncio.run(_view_fanout(server, sharer.pid, work, display, viewers,
                                                  stalled))
                return out
        finally:
            server.stop()
            work.close()


FANOUT_CASES = [("1 viewer", 1, False), (f"{FANOUT_VIEWERS} viewers", FANOUT_VIEWERS, False),
                (f"{FANOUT_VIEWERS} viewers + 1 stalled", FANOUT_VIEWERS, True)]


def render_fanout(results: dict[str, list[Fanout]]) -> str:
    head = ["case", "probe updates/s", "probe p50 ms", "p95 ms", "viewers' frames/s (mean)",
            "slowest viewer frames/s", "sharer CPU %", "server CPU %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for case, _, _ in FANOUT_CASES:
        rs = results.get(case)
        if not rs:
            continue
        lines.append("| " + " | ".join([
            case,
            fmt(med([f.probe.updates / f.probe.seconds for f in rs])),
            fmt(med([pct(f.probe.latency, 0.5) * 1000 for f in rs]), ".0f"),
            fmt(med([pct(f.probe.latency, 0.95) * 1000 for f in rs]), ".0f"),
            fmt(med([statistics.mean(f.frames) / f.probe.seconds for f in rs])),
            fmt(med([min(f.frames) / f.probe.seconds for f in rs])),
            fmt(med([f.probe.sharer_cpu for f in rs]), ".0f"),
            fmt(med([f.probe.server_cpu for f in rs]), ".0f"),
        ]) + " |")
    return "\n".join(lines)


# -- one viewer on a slow link, with and without the low quality layer -----------------------


class ThrottledViewer:
    """A viewer reading at most ``rate`` bytes a second on its own thread (a slow link),
    decoding every frame and tracking ticks and PSNR like the probe viewer."""

    def __init__(self, server: ServerProcess, share_id: int, rate: float, work: Workload,
                 display: str) -> None:
        self.socks = stalled_socket(server, "throttled", share_id)
        self.rate, self.work, self.display = rate, work, display
        self.frames = 0
        self.bytes = 0
        self.track: Tracker | None = None
        self.stop = threading.Event()
        self.measuring = threading.Event()
        self.ready = threading.Event()  # it has a complete picture
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        grabber = CursorGrabber(self.display)  # mss: one per thread
        self.track = track = Tracker(self.work, grabber, (1.0, 1.0))
        canvas = Canvas(W, H)

        def on_frame(msg: Message) -> None:
            canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
            if canvas.complete:
                self.ready.set()
            if self.measuring.is_set():
                self.frames += 1
                self.bytes += len(msg.payload)
                track.shown(canvas.pixels)

        try:
            read_frames(self.socks[1], lambda: self.rate, self.stop, on_frame, 65536.0)
        finally:
            grabber.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.socks:
            sock.close()


@dataclass
class Throttled:
    """One run: the throttled viewer (frames, updates, latency, PSNR), the others' frames."""

    viewer: Result = field(default_factory=Result)
    frames: int = 0  # the throttled viewer's frames in the window
    others: list[int] = field(default_factory=list)  # per counting viewer


async def _view_throttled(server: ServerProcess, sharer_pid: int, work: Workload, display: str,
                          viewers: int, rate: float) -> Throttled:
    opened = [await _counting_viewer(server, f"viewer{i}") for i in range(viewers)]
    share = opened[0][2]
    slow = await asyncio.to_thread(ThrottledViewer, server, share["id"], rate, work, display)

    async def drain(screen: _CountingScreen) -> None:
        while True:
            await screen.next_frame()

    drains = [asyncio.create_task(drain(s)) for _, s, _ in opened]
    try:
        if not await asyncio.to_thread(slow.ready.wait, START_TIMEOUT_S):
            raise TimeoutError("the throttled viewer got no complete picture")
        r = Result()
        counts0 = [s.frames_in for _, s, _ in opened]
        work.start()
        meter = Meter((sharer_pid, server.proc.pid if server.proc else 0))
        slow.measuring.set()
        start, end = meter.t0, meter.t0 + WINDOW_S
        await asyncio.sleep(WINDOW_S)
        slow.measuring.clear()
        meter.finish(r)
        assert slow.track is not None
        slow.track.result(r, start, end)
        r.bytes_in = slow.bytes
        return Throttled(r, slow.frames,
                         [s.frames_in - c for (_, s, _), c in zip(opened, counts0, strict=True)])
    finally:
        for t in drains:
            t.cancel()
        await asyncio.to_thread(slow.close)
        for client, screen, _ in opened:
            await screen.close()
            await client.close()


def run_throttled(display: str, png: Path, viewers: int, layers: int) -> Throttled:
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
        work = Workload(display, "video", png)
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            args = sharer_args(server, "--layers", str(layers))
            with child(args, r"Sharing \d+x\d+", {"DISPLAY": display},
                       stop_signal=signal.SIGINT) as (sharer, _):
                return asyncio.run(_view_throttled(server, sharer.pid, work, display, viewers,
                                                   THROTTLE))
        finally:
            server.stop()
            work.close()


THROTTLED_CASES = [("without low layer (--layers 1)", 1), ("with low layer (--layers 2)", 2)]


def render_throttled(results: dict[str, list[Throttled]]) -> str:
    head = ["case", "changes/s on screen", "throttled frames/s", "throttled updates/s", "p50 ms",
            "PSNR dB (region)",
            "throttled kB/s", "others' frames/s (mean)", "slowest other frames/s",
            "sharer CPU %", "server CPU %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for case, _ in THROTTLED_CASES:
        rs = results.get(case)
        if not rs:
            continue
        lines.append("| " + " | ".join([
            case,
            fmt(med([t.viewer.ticks / t.viewer.seconds for t in rs])),
            fmt(med([t.frames / t.viewer.seconds for t in rs])),
            fmt(med([t.viewer.updates / t.viewer.seconds for t in rs])),
            fmt(med([pct(t.viewer.latency, 0.5) * 1000 for t in rs]), ".0f"),
            fmt(med([med(t.viewer.psnr) if t.viewer.psnr else math.nan for t in rs])),
            fmt(med([t.viewer.bytes_in / t.viewer.seconds / 1000 for t in rs]), ".0f"),
            fmt(med([statistics.mean(t.others) / t.viewer.seconds for t in rs])),
            fmt(med([min(t.others) / t.viewer.seconds for t in rs])),
            fmt(med([t.viewer.sharer_cpu for t in rs]), ".0f"),
            fmt(med([t.viewer.server_cpu for t in rs]), ".0f"),
        ]) + " |")
    return "\n".join(lines)


# -- report ----------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarise(rs: list[Result]) -> dict[str, float]:
    return {
        "changes": med([r.ticks / r.seconds for r in rs]),
        "updates": med([r.updates / r.seconds for r in rs]),
        "p50": med([pct(r.latency, 0.5) * 1000 for r in rs]),
        "p95": med([pct(r.latency, 0.95) * 1000 for r in rs]),
        "kBps": med([r.bytes_in / r.seconds / 1000 for r in rs]),
        "sharer": med([r.sharer_cpu for r in rs]),
        "server": med([r.server_cpu for r in rs]),
        "psnr": med([med(r.psnr) if r.psnr else math.nan for r in rs]),
        "exact": med([r.exact_after * 1000 for r in rs]),
        "exact_runs": sum(not math.isnan(r.exact_after) for r in rs),
        "still_psnr": med([r.still_psnr for r in rs]),
    }


def fmt(v: float, spec: str = ".1f") -> str:
    return "–" if math.isnan(v) else format(v, spec)


def render(results: dict[tuple[str, str], list[Result]]) -> str:
    head = ["workload", "system", "changes/s", "updates/s", "latency p50 ms", "p95 ms", "kB/s",
            "sharer CPU %", "server CPU %", "PSNR moving dB", "still: exact after",
            "kB/s vs orig", "updates/s vs orig", "targets (upd/s, p50, bytes, fidelity)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name in WORKLOADS:
        base = summarise(results[(name, "original")]) if (name, "original") in results else None
        for system in ("chatscreen", "original"):
            rs = results.get((name, system))
            if not rs:
                continue
            s = summarise(rs)
            if system == "original":
                still = "never (lossy, 800x600)"
            elif s["exact_runs"] == len(rs):
                still = f"{s['exact']:.0f} ms"
            else:
                still = f"{s['exact_runs']}/{len(rs)} runs; else {fmt(s['still_psnr'])} dB"
            ratio_k = ratio_u = "–"
            if base is not None and system == "chatscreen":
                ratio_k = (f"{s['kBps'] / base['kBps']:.2f}×" if base["kBps"] else "–")
                ratio_u = (f"{s['updates'] / base['updates']:.2f}×" if base["updates"]
                           else "–")
            target = ", ".join(TARGETS[name]) if system == "chatscreen" else ""
            lines.append("| " + " | ".join([
                name, system, fmt(s["changes"]), fmt(s["updates"]), fmt(s["p50"], ".0f"),
                fmt(s["p95"], ".0f"), fmt(s["kBps"], ".1f"), fmt(s["sharer"], ".0f"),
                fmt(s["server"], ".0f"), fmt(s["psnr"]), still, ratio_k, ratio_u, target,
            ]) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def display() -> Iterator[str]:
    with run_xvfb(f"{W}x{H}x24") as d:
        yield d


def main() -> int:
    print("# bench_screen (issue 4)\n")
    print(f"1920x1080x24 Xvfb, loopback; {RUNS} runs per case, medians; window "
          f"{WINDOW_S:g} s; workloads change the screen {RATE:g} times a second; "
          f"{os.cpu_count()} CPUs.\n", flush=True)
    results: dict[tuple[str, str], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp, display() as d:
        png = make_test_picture(W, H, Path(tmp) / "desktop.png")
        systems = [("chatscreen", run_chatscreen)]
        if BASELINE:
            systems.append(("original", run_original))
        for run in range(RUNS):
            for name in WORKLOADS:
                for system, fn in systems:
                    t = time.monotonic()
                    r = fn(d, name, png)
                    results.setdefault((name, system), []).append(r)
                    print(f"<!-- run {run + 1} {name} {system}: {r.ticks} changes, "
                          f"{r.updates} updates, p50 {fmt(pct(r.latency, 0.5) * 1000, '.0f')}"
                          f" ms, {r.bytes_in / r.seconds / 1000:.1f} kB/s, sharer "
                          f"{r.sharer_cpu:.0f} %, server {r.server_cpu:.0f} %, PSNR "
                          f"{fmt(med(r.psnr))}, exact after {fmt(r.exact_after, '.2f')} s "
                          f"({time.monotonic() - t:.0f} s) -->", flush=True)
        fanout: dict[str, list[Fanout]] = {}
        if FANOUT:
            for run in range(RUNS):
                for case, viewers, stalled in FANOUT_CASES:
                    t = time.monotonic()
                    f = run_fanout(d, FANOUT_WORKLOAD, png, viewers, stalled)
                    fanout.setdefault(case, []).append(f)
                    print(f"<!-- run {run + 1} fan-out {FANOUT_WORKLOAD}, {case}: probe "
                          f"{f.probe.updates} updates, p50 "
                          f"{fmt(pct(f.probe.latency, 0.5) * 1000, '.0f')} ms, frames "
                          f"{f.frames}, sharer {f.probe.sharer_cpu:.0f} %, server "
                          f"{f.probe.server_cpu:.0f} % ({time.monotonic() - t:.0f} s) -->",
                          flush=True)
        throttled: dict[str, list[Throttled]] = {}
        if THROTTLED:
            for run in range(RUNS):
                for case, layers in THROTTLED_CASES:
                    t = time.monotonic()
                    th = run_throttled(d, png, FANOUT_VIEWERS, layers)
                    throttled.setdefault(case, []).append(th)
                    v = th.viewer
                    print(f"<!-- run {run + 1} throttled video, {case}: {v.ticks} changes, "
                          f"{th.frames} frames, "
                          f"{v.updates} updates, PSNR {fmt(med(v.psnr))}, others {th.others}, "
                          f"sharer {v.sharer_cpu:.0f} %, server {v.server_cpu:.0f} % "
                          f"({time.monotonic() - t:.0f} s) -->", flush=True)
    print()
    print(render(results))
    if fanout:
        print(f"\nOne sharer, {FANOUT_WORKLOAD} workload, several viewers (the probe viewer "
              "decodes; the others count the frames reaching them):\n")
        print(render_fanout(fanout))
    if throttled:
        print(f"\nOne sharer, video workload, {FANOUT_VIEWERS} viewers and one more reading at "
              f"most {THROTTLE / 1000:g} kB/s (it decodes; the others count frames):\n")
        print(render_throttled(throttled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
