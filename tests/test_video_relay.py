"""H.264 through the real relay: round trip, a viewer joining mid-stream, a throttled viewer,
bad data from a sharer, and the relay never decoding (real server process, real sockets)."""

from __future__ import annotations

import asyncio
import time
import zlib
from pathlib import Path

import numpy as np

from chatscreen.client import Client, OutRect, ScreenChannel
from chatscreen.protocol import Message
from chatscreen.protocol.annexb import is_idr
from chatscreen.screen.codec import Canvas, DecodeError, psnr
from chatscreen.screen.sharing import frame_rects, snapshot
from chatscreen.screen.video import H264Encoder
from tests.helpers.server import TIMEOUT, ServerProcess, run
from tests.test_screen import RawViewer, sharer_channel, viewer
from tests.test_video import photo, rgb

W, H = 1920, 1080
BX, BY, BW, BH = 640, 320, 512, 320  # the moving region


def key_frame() -> list[OutRect]:
    return [OutRect(0, 0, W, H, "zlib", zlib.compress(bytes(W * H * 3)))]


class Sharer:
    """Sends a grey key frame, then the moving region as H.264, keeping the truth."""

    def __init__(self, screen: ScreenChannel, box: tuple[int, int, int, int] = (BX, BY, BW, BH),
                 noise: float = 0.0, crf: int = 22) -> None:
        self.screen = screen
        self.box = box
        self.noise = noise  # new noise every picture: big P-frames
        self.enc = H264Encoder(box[2], box[3], crf=crf, maxrate=100_000_000)
        self.k = 0
        self.sent: list[bytes] = []

    async def start(self) -> None:
        await self.screen.send_frame(W, H, key_frame(), key=True)

    async def step(self, n: int = 1, fps: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(n):
            if fps is not None:
                await asyncio.sleep(max(0.0, start + i / fps - loop.time()))
            idr = self.screen.idr_requested.is_set()
            self.screen.idr_requested.clear()
            x, y, w, h = self.box
            pic = photo(self.k, w, h)
            if self.noise:
                noisy = pic.astype(np.int16) + np.random.default_rng(self.k).normal(
                    0, self.noise, pic.shape).astype(np.int16)
                pic = np.clip(noisy, 0, 255).astype(np.uint8)
            data = self.enc.encode(pic, idr=idr)
            self.k += 1
            self.sent.append(data)
            await self.screen.send_frame(W, H, [OutRect(x, y, w, h, "h264", data)], key=False)

    def truth(self) -> np.ndarray:
        return rgb(photo(self.k - 1, BW, BH))


def region(canvas: Canvas) -> np.ndarray:
    return canvas.pixels[BY : BY + BH, BX : BX + BW]


async def follow(screen: ScreenChannel, canvas: Canvas, until: float = 0.5,
                 h264: list[bytes] | None = None) -> None:
    """Apply frames until none came for ``until`` seconds."""
    while True:
        try:
            msg = await screen.next_frame(timeout=until)
        except TimeoutError:
            return
        if h264 is not None:
            h264 += [d for *_, enc, d in frame_rects(msg) if enc == "h264"]
        canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))


def test_h264_round_trip_through_the_real_server(server: ServerProcess) -> None:
    async def scenario() -> None:
        c, screen = await sharer_channel(server, "vsharer")
        sharer = Sharer(screen)
        await sharer.start()
        v, vscreen, _ = await viewer(server, "vviewer", "vsharer")
        canvas = Canvas(W, H)
        got: list[bytes] = []
        task = asyncio.create_task(follow(vscreen, canvas, 1.0, got))
        await sharer.step(30, fps=30)
        await task
        assert psnr(region(canvas), sharer.truth()) >= 32
        assert canvas.pixels[:BY].max() == 0  # the rest of the screen untouched
        # the relay passed the sharer's bytes on as they were, in order
        assert got == sharer.sent[-len(got):] and got[0] in sharer.sent
        await v.close()
        await c.close()

    run(scenario())


def test_a_viewer_joining_mid_stream_decodes_the_current_picture(server: ServerProcess) -> None:
    async def scenario() -> None:
        c, screen = await sharer_channel(server, "msharer")
        sharer = Sharer(screen)
        await sharer.start()
        await sharer.step(20)  # IDR + 19 P-frames before anyone watches
        v, vscreen, _ = await viewer(server, "late", "msharer")
        msg = await vscreen.next_frame(timeout=TIMEOUT)
        assert msg["key"]
        units = [d for *_, enc, d in frame_rects(msg) if enc == "h264"]
        assert is_idr(units[0]) and len(units) == 20  # the chain since the IDR, kept alive
        canvas = Canvas(W, H)
        canvas.apply(W, H, True, frame_rects(msg))
        assert psnr(region(canvas), sharer.truth()) >= 32
        # the relay asked the sharer for an IDR to shorten the chain; it comes next
        async with asyncio.timeout(TIMEOUT):
            await screen.idr_requested.wait()
        await sharer.step(3)
        assert is_idr(sharer.sent[-3])
        await follow(vscreen, canvas)
        assert psnr(region(canvas), sharer.truth()) >= 32
        # a viewer joining now gets only the new chain
        v2, vscreen2, _ = await viewer(server, "later", "msharer")
        msg = await vscreen2.next_frame(timeout=TIMEOUT)
        assert len([1 for r in msg["rects"] if r.enc == "h264"]) == 3
        for x in (v, v2, c):
            await x.close()

    run(scenario())


def test_a_long_chain_makes_the_relay_ask_for_an_idr(server: ServerProcess) -> None:
    async def scenario() -> None:
        c, screen = await sharer_channel(server, "lsharer")
        sharer = Sharer(screen)
        await sharer.start()
        for _ in range(100):
            await sharer.step()
            await asyncio.sleep(0)  # let a need_idr in
        idrs = [i for i, d in enumerate(sharer.sent) if is_idr(d)]
        # asked once the chain passed 60 pictures, then 1 s apart at most (rate limit)
        assert idrs[0] == 0 and 61 <= idrs[1] <= 80, idrs
        await c.close()

    run(scenario())


def test_a_throttled_viewer_still_decodes_current_pictures(server: ServerProcess) -> None:
    """Noisy pictures, ~2-3 MB/s; one viewer reads 600 kB/s. Newest wins cannot skip a
    P-frame, but the relay asks for an IDR once the chain passes 2 MB, and the slow viewer
    then starts from it: it gets fewer frames and bytes, decodes every one of them, and ends
    on exactly the picture the healthy viewer shows."""

    async def scenario() -> None:
        c, screen = await sharer_channel(server, "tsharer")
        sharer = Sharer(screen, (256, 192, 1024, 640), noise=8.0, crf=16)
        await sharer.start()
        v, vscreen, share_id = await viewer(server, "healthy", "tsharer")
        slow = await asyncio.to_thread(RawViewer, server, "slow", share_id, 6e5)
        healthy = Canvas(W, H)
        htask = asyncio.create_task(follow(vscreen, healthy, 2.0))
        loop = asyncio.get_running_loop()
        await sharer.step(60, fps=30)
        await htask
        want = healthy.pixels.copy()
        await loop.run_in_executor(None, slow.read_until, want, time.monotonic() + 4 * TIMEOUT)
        slow.close()
        assert np.array_equal(slow.canvas.pixels, want)  # decoded to the very same picture
        sent = sum(map(len, sharer.sent))
        assert sum(map(is_idr, sharer.sent)) >= 2  # the relay asked for an IDR
        assert slow.frames < 60 and slow.bytes < 0.8 * sent, (slow.frames, slow.bytes, sent)
        await v.close()
        await c.close()

    run(scenario())


def test_bad_h264_from_a_sharer_does_not_crash_viewers(server: ServerProcess) -> None:
    async def scenario() -> None:
        c, screen = await sharer_channel(server, "bsharer")
        sharer = Sharer(screen)
        await sharer.start()
        v, vscreen, _ = await viewer(server, "bviewer", "bsharer")
        await sharer.step(2)
        bad = [b"junk", bytes(5000), b"\x00\x00\x00\x01\x67\x42" + b"\xff" * 300,
               sharer.sent[0][:200], b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 8]
        for data in bad:
            await screen.send_frame(W, H, [OutRect(BX, BY, BW, BH, "h264", data)], key=False)
        sharer.enc.idr_next = True
        await sharer.step(3)
        canvas = Canvas(W, H)
        errors = 0
        async with asyncio.timeout(TIMEOUT):
            while True:
                msg: Message = await vscreen.next_frame()
                try:
                    canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                except DecodeError:
                    errors += 1
                if msg["seq"] == screen._seq:
                    break
        assert errors >= 1
        assert psnr(region(canvas), sharer.truth()) >= 32  # recovered at the next IDR
        # a viewer joining now (snapshot) gets a complete, correct picture
        w = await Client("127.0.0.1", "snap", chat_port=server.chat_port,
                         screen_port=server.screen_port, timeout=TIMEOUT).connect()
        snap = await snapshot(w, "bsharer", timeout=TIMEOUT)
        assert psnr(region(snap), sharer.truth()) >= 32
        for x in (v, w, c):
            await x.close()

    run(scenario())


def test_the_relay_never_decodes(server: ServerProcess) -> None:
    async def scenario() -> None:
        c, screen = await sharer_channel(server, "nsharer")
        sharer = Sharer(screen)
        await sharer.start()
        v, vscreen, _ = await viewer(server, "nviewer", "nsharer")
        canvas = Canvas(W, H)
        task = asyncio.create_task(follow(vscreen, canvas))
        await sharer.step(10)
        await task
        assert psnr(region(canvas), sharer.truth()) >= 32
        assert server.proc is not None
        maps = await asyncio.to_thread(Path(f"/proc/{server.proc.pid}/maps").read_text)
        assert "libavcodec" not in maps and "libx264" not in maps and "/av/" not in maps
        await v.close()
        await c.close()

    run(scenario())
