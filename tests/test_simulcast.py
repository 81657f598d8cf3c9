"""Quality layers through the real relay: a viewer on a slow link is moved to the sharer's low
layer and gets more, current, complete pictures, a fast viewer keeps the full quality, and
the slow one goes back up when its link recovers (real server process, real sockets); the
real sharer's low layer on Xvfb; the sharer's low layer encoder on its own."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from chatscreen.client import Client, OutRect, ScreenChannel
from chatscreen.protocol import Message
from chatscreen.screen.codec import Canvas
from chatscreen.screen.sharing import frame_rects
from tests.helpers.display import make_test_picture
from tests.helpers.server import TIMEOUT, ServerProcess, run
from tests.helpers.throttle import read_frames
from tests.test_screen import stalled_viewer, viewer

W, H = 1920, 1080
X, Y, S = 640, 320, 256  # the moving region: 256x256, raw at full quality (196 kB a frame)
FPS = 30.0


def full_rect(n: int) -> OutRect:
    return OutRect(X, Y, S, S, "raw", bytes([n % 251]) * (S * S * 3))


def low_rect(n: int) -> OutRect:
    return OutRect(X, Y, S, S, "zlib", zlib.compress(bytes([n % 251]) * (S * S * 3)))


class Sharer:
    """A sharer that can send a low layer: its region at full quality as 196 kB of ``raw``,
    and, while the relay asks, the same picture as a few hundred bytes of ``zlib``."""

    def __init__(self, screen: ScreenChannel) -> None:
        self.screen = screen
        self.n = 0
        self.low_frames = 0

    async def start(self) -> None:
        key = [OutRect(0, 0, W, H, "zlib", zlib.compress(bytes(W * H * 3)))]
        await self.screen.send_frame(W, H, key, key=True)

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(int(seconds * FPS)):
            await asyncio.sleep(max(0.0, start + i / FPS - loop.time()))
            self.n += 1
            if self.screen.low_rate is None:
                rects = [full_rect(self.n)]
            else:
                self.low_frames += 1
                f, lo = full_rect(self.n), low_rect(self.n)
                rects = [OutRect(f.x, f.y, f.w, f.h, f.enc, f.data, "full"),
                         OutRect(lo.x, lo.y, lo.w, lo.h, lo.enc, lo.data, "low")]
            await self.screen.send_frame(W, H, rects, key=False)


class SlowViewer:
    """A viewer on a bare socket (4 kB receive buffer) reading at most ``rate`` bytes a second
    (a slow link; raise ``rate`` and the link recovers), on its own thread, applying what it
    gets to a canvas and noting each frame's encoding and picture number."""

    def __init__(self, srv: ServerProcess, name: str, share_id: int, rate: float) -> None:
        self.chat, self.sock = stalled_viewer(srv, name, share_id)
        self.rate = rate
        self.canvas = Canvas(W, H)
        self.frames: list[tuple[float, str, int]] = []  # (when, enc, picture number % 251)
        self.h264: list[int] = []  # the size of each h264 picture received
        self.first_key_complete: bool | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=read_frames, args=(self.sock, lambda: self.rate, self._stop, self._on_frame),
            daemon=True)
        self._thread.start()

    def _on_frame(self, msg: Message) -> None:
        self.canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        if msg["key"] and self.first_key_complete is None:
            self.first_key_complete = self.canvas.complete
        self.h264 += [r.len for r in msg["rects"] if r.enc == "h264"]
        for r in msg["rects"]:
            if (r.x, r.y) == (X, Y):
                self.frames.append((time.monotonic(), r.enc, self.picture()))

    def picture(self) -> int:
        return int(self.canvas.pixels[Y, X, 0])

    def count(self, enc: str, since: float = 0.0) -> int:
        return sum(1 for t, e, _ in self.frames if e == enc and t >= since)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.sock.close()
        self.chat.close()


async def until(what: Callable[[], Any], timeout: float, why: str) -> None:
    """Poll ``what`` until it is true, with a deadline."""
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.05)


async def share(srv: ServerProcess, name: str, layers: int) -> tuple[Client, Sharer]:
    c = await Client("127.0.0.1", name, chat_port=srv.chat_port, screen_port=srv.screen_port,
                     timeout=TIMEOUT).connect()
    screen = await c.open_screen()
    await screen.share(W, H, layers=layers)
    sharer = Sharer(screen)
    await sharer.start()
    return c, sharer


async def follow(screen: ScreenChannel, canvas: Canvas, encs: list[str]) -> None:
    while True:
        msg = await screen.next_frame()
        assert all(r.layer is None for r in msg["rects"])  # viewers never see layers
        canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        encs += [r.enc for r in msg["rects"] if (r.x, r.y) == (X, Y)]


SLOW = 600_000.0  # bytes/s: 3 full-quality pictures a second


async def slow_frames(srv: ServerProcess, tag: str, layers: int,
                      seconds: float) -> tuple[int, int, int]:
    """A share with a fast and a slow viewer for ``seconds``: the slow viewer's pictures
    in the last half, the fast one's pictures and its full-quality ones."""
    c, sharer = await share(srv, f"sharer{tag}", layers)
    v, fast, share_id = await viewer(srv, f"fast{tag}", f"sharer{tag}")
    canvas, encs = Canvas(W, H), list[str]()
    task = asyncio.create_task(follow(fast, canvas, encs))
    slow = await asyncio.to_thread(SlowViewer, srv, f"slow{tag}", share_id, SLOW)
    try:
        await sharer.run(seconds / 2)
        half = time.monotonic()
        await sharer.run(seconds / 2)
        await until(lambda: encs and canvas.pixels[Y, X, 0] == sharer.n % 251, TIMEOUT,
                    "the fast viewer ends on the newest picture")
        if layers == 1:  # a sharer that did not offer a low layer is never asked for one
            assert sharer.screen.low_rate is None and sharer.low_frames == 0
        return (slow.count("raw", half) + slow.count("zlib", half), len(encs),
                encs.count("raw"))
    finally:
        task.cancel()
        slow.close()
        await v.close()
        await c.close()


def test_a_slow_viewer_gets_more_current_pictures_on_the_low_layer(server: ServerProcess) -> None:
    async def scenario() -> None:
        without, fast_n, _ = await slow_frames(server, "1", layers=1, seconds=6.0)
        with_low, fast_m, fast_full = await slow_frames(server, "2", layers=2, seconds=6.0)
        n = int(6.0 * FPS)
        # the fast viewer gets (nearly) every picture at full quality either way
        assert fast_n >= 0.9 * n and fast_m >= 0.9 * n and fast_full == fast_m, \
            (fast_n, fast_m, fast_full)
        # the slow one: a few full pictures a second without the low layer, many with it
        assert with_low >= 3 * max(without, 1), (without, with_low)
        assert with_low >= 0.5 * n / 2, with_low

    run(scenario())


def test_slow_viewer_moves_down_a_late_one_joins_low_and_both_go_back_up(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        c, sharer = await share(server, "ssharer", layers=2)
        v, fast, share_id = await viewer(server, "sfast", "ssharer")
        canvas, encs = Canvas(W, H), list[str]()
        task = asyncio.create_task(follow(fast, canvas, encs))
        sharing = asyncio.create_task(sharer.run(60.0))
        slow = await asyncio.to_thread(SlowViewer, server, "slow", share_id, SLOW)
        late: SlowViewer | None = None
        try:
            await until(lambda: slow.count("zlib") >= 10, 4 * TIMEOUT,
                        "the slow viewer is moved to the low layer")
            assert sharer.screen.low_rate is not None  # the relay asked for the layer
            # a viewer joining a share whose low layer runs gets there too, complete
            late = await asyncio.to_thread(SlowViewer, server, "late", share_id, SLOW)
            await until(lambda: late is not None and late.count("zlib") >= 10, 4 * TIMEOUT,
                        "the late slow viewer is moved to the low layer")
            assert late.first_key_complete and late.canvas.complete
            # current: once what was queued for it before has drained, its picture follows
            # the sharer's within a few frames
            await until(lambda: late is not None and (sharer.n - late.picture()) % 251 <= 6,
                        TIMEOUT, "the late viewer's picture is current")
            # the links recover: both go back to the full layer (a probe after a while)
            slow.rate = late.rate = 1e9
            at = time.monotonic()
            await until(lambda: slow.count("raw", at) >= 10 and late is not None
                        and late.count("raw", at) >= 10, 4 * TIMEOUT,
                        "recovered viewers go back to the full layer")
            # with nobody on it any more, the relay stops the low layer
            await until(lambda: sharer.screen.low_rate is None, 4 * TIMEOUT,
                        "the relay stops the low layer")
            assert sharer.low_frames > 0
            # the fast viewer never left the full layer
            assert set(encs) == {"raw"} and len(encs) >= 0.9 * sharer.n, (len(encs), sharer.n)
        finally:
            sharing.cancel()
            task.cancel()
            slow.close()
            if late is not None:
                late.close()
            await v.close()
            await c.close()

    run(scenario())


# -- the sharer's low layer, pure --------------------------------------------------------------


def test_low_layer_adds_a_smaller_version_of_each_lossy_region() -> None:
    """Lossless regions and copies stay common; each jpeg and h264 region is marked full and
    followed, after everything else, by a smaller low version that decodes on its own, the
    low H.264 stream's IDRs coming with the full stream's."""
    from chatscreen.protocol.annexb import is_idr
    from chatscreen.screen.codec import encode_jpeg, encode_palette, psnr
    from chatscreen.screen.encoders import Update
    from chatscreen.screen.simulcast import LowLayer
    from chatscreen.screen.video import H264Decoder, H264Encoder
    from tests.test_video import photo, rgb

    bw, bh = 320, 192
    img = np.zeros((H, W, 4), np.uint8)
    full_video = H264Encoder(bw, bh)
    layer = LowLayer(100_000)
    dec_low = H264Decoder(bw, bh)
    low_bytes = full_bytes = 0
    for k in range(12):
        img[:bh, :bw] = photo(k, bw, bh)
        img[300:364, 0:64] = photo(k + 50, 64, 64)
        flat = np.zeros((64, 64, 4), np.uint8)
        palette = encode_palette(flat)
        assert palette is not None
        regions = [
            OutRect(500, 0, 64, 64, "copy", bytes(8)),
            OutRect(600, 0, 64, 64, "palette", palette),
            OutRect(0, 300, 64, 64, "jpeg", encode_jpeg(img[300:364, 0:64], 80, "444")),
            OutRect(0, 0, bw, bh, "h264", full_video.encode(img[:bh, :bw], idr=k == 6)),
        ]
        out = layer.add(img, Update(False, regions))
        assert [(r.enc, r.layer) for r in out.regions] == [
            ("copy", None), ("palette", None), ("jpeg", "full"), ("h264", "full"),
            ("jpeg", "low"), ("h264", "low")]
        assert out.regions[:2] == regions[:2]
        assert [r.data for r in out.regions[2:4]] == [r.data for r in regions[2:]]
        low_jpeg, low_h264 = out.regions[4:]
        assert (low_jpeg.x, low_jpeg.y, low_jpeg.w, low_jpeg.h) == (0, 300, 64, 64)
        assert len(low_jpeg.data) < len(regions[2].data)
        assert is_idr(low_h264.data) == (k in (0, 6))  # with the full stream's
        got = dec_low.decode(low_h264.data)
        assert psnr(got, rgb(photo(k, bw, bh))) >= 25
        low_bytes += len(low_h264.data)
        full_bytes += len(regions[3].data)
    assert low_bytes < 0.6 * full_bytes, (low_bytes, full_bytes)
    # a key frame (lossless) and an update with nothing lossy are left as they are
    key = Update(True, [OutRect(0, 0, W, H, "palette", b"x")])
    assert layer.add(img, key) is key
    assert layer.streams == 1


# -- the real sharer on Xvfb ---------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[1]


def wait_line(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """Read the child's stdout until a line holds ``text`` (with a deadline)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            seen += line
            if text in line:
                return line
            if not line:
                break
    raise AssertionError(f"no {text!r} from {proc.args!r}: {seen}")


def test_the_real_sharer_sends_a_slow_viewer_its_low_layer_and_both_end_exact(
        server: ServerProcess, xvfb_display: str, tmp_path: Path) -> None:
    """bench/screen_workloads.py's video (1040x600 of photographic motion, 30/s) shared by
    ``chatscreen share``: a viewer read at 300 kB/s gets the low H.264 stream (smaller
    pictures, many a second, decoding), a fast one the full stream; once the motion stops,
    the lossless refresh makes both pictures the same, bit for bit."""
    desktop = make_test_picture(W, H, tmp_path / "desktop.png")
    env = {**os.environ, "DISPLAY": xvfb_display}
    work = subprocess.Popen(
        [sys.executable, "bench/screen_workloads.py", "video", "--desktop", str(desktop),
         "--rate", "30", "--seconds", "12"], cwd=REPO, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    sharer = subprocess.Popen(
        [sys.executable, "-m", "chatscreen", "share", "--server",
         f"127.0.0.1:{server.chat_port}", "--screen-port", str(server.screen_port),
         "--user", "vsharer"], env=env, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)

    async def scenario() -> None:
        v, fast, share_id = await viewer(server, "vfast", "vsharer")
        canvas, sizes = Canvas(W, H), list[int]()

        async def follow_fast() -> None:
            while True:
                msg = await fast.next_frame()
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                sizes.extend(r.len for r in msg["rects"] if r.enc == "h264")

        task = asyncio.create_task(follow_fast())
        slow = await asyncio.to_thread(SlowViewer, server, "vslow", share_id, 300_000.0)
        try:
            assert work.stdin is not None
            work.stdin.write("go\n")
            work.stdin.flush()
            start = time.monotonic()

            def on_low() -> bool:
                last = slow.h264[-30:]
                return (len(last) == 30 and len(sizes) >= 30
                        and float(np.median(last)) < 0.5 * float(np.median(sizes[-30:])))

            await until(on_low, 12.0, "the slow viewer gets the low layer's smaller pictures")
            n0, t0 = len(slow.h264), time.monotonic()
            await until(lambda: len(slow.h264) >= n0 + 20, 12.0 - (t0 - start),
                        "the slow viewer gets many low pictures a second")
            assert len(slow.h264) - n0 >= 10 * (time.monotonic() - t0), "10/s at least"
            # the motion stops after 12 s: both end on the same picture, exactly
            await until(lambda: time.monotonic() - start > 12.0 and slow.canvas.complete
                        and np.array_equal(slow.canvas.pixels, canvas.pixels), 3 * TIMEOUT,
                        "both viewers end on the same picture")
        finally:
            task.cancel()
            slow.close()
            await v.close()

    try:
        wait_line(work, "ready", TIMEOUT)
        wait_line(sharer, "Sharing", TIMEOUT)
        run(scenario())
    finally:
        for proc in (sharer, work):
            proc.terminate()
            proc.wait(TIMEOUT)
