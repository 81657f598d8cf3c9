"""Screen sharing end to end: real server, real share/view commands, real Xvfb display."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chatscreen.client import Client, OutRect, ScreenChannel
from chatscreen.errors import ConnectError, ServerError
from chatscreen.protocol import FrameDecoder, Limits, Message
from chatscreen.protocol.schema import Rect
from chatscreen.screen.capture import ScreenCapture
from chatscreen.screen.codec import Canvas, psnr
from chatscreen.screen.cursor import composite
from chatscreen.screen.sharing import frame_rects
from tests.helpers.display import make_test_picture, show_picture
from tests.helpers.server import (
    TIMEOUT,
    ServerProcess,
    frame,
    raw_socket,
    read_headers_until,
    run,
)
from tests.helpers.sharing import watched_share


def cli(*args: str, display: str | None = None) -> list[str]:
    return [sys.executable, "-m", "chatscreen", *args]


def test_shared_picture_arrives_at_full_size_and_quality(
    server: ServerProcess, xvfb_display: str, tmp_path: Path
) -> None:
    source = make_test_picture(1920, 1080, tmp_path / "source.png")
    env = {**os.environ, "DISPLAY": xvfb_display}
    ports = ["--server", f"127.0.0.1:{server.chat_port}", "--screen-port", str(server.screen_port)]
    with show_picture(xvfb_display, source):
        sharer = subprocess.Popen(cli("share", *ports, "--user", "sharer"), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert sharer.stdout is not None
            line = sharer.stdout.readline()  # "Sharing 1920x1080 at ..." once the share is up
            assert "Sharing 1920x1080" in line, line + (sharer.stderr.read() if sharer.stderr
                                                        else "")
            snap = tmp_path / "snap.png"
            view = subprocess.run(
                cli("view", *ports, "--user", "viewer", "--from", "sharer", "--snapshot",
                    str(snap), "--timeout", str(TIMEOUT)),
                capture_output=True, text=True, timeout=3 * TIMEOUT)
            assert view.returncode == 0, view.stderr
            assert "Saved 1920x1080 picture" in view.stdout
        finally:
            sharer.terminate()
            out, err = sharer.communicate(timeout=TIMEOUT)
    assert sharer.returncode == 0, err
    assert "frames/s" in out  # the summary line
    got = np.asarray(Image.open(snap).convert("RGB"))
    want = np.asarray(Image.open(source).convert("RGB"))
    assert got.shape == want.shape == (1080, 1920, 3)
    assert psnr(got, want) >= 35.0


def test_view_without_a_share_times_out_with_a_clear_error(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    view = subprocess.run(
        cli("view", "--server", f"127.0.0.1:{server.chat_port}", "--screen-port",
            str(server.screen_port), "--user", "v", "--snapshot", str(tmp_path / "x.png"),
            "--timeout", "0.5"), capture_output=True, text=True, timeout=3 * TIMEOUT)
    assert view.returncode == 1
    assert view.stderr.strip() == "Nobody is sharing a screen you can watch (waited 0.5 s)"


# -- the relay, driven by the client library with synthetic frames ---------------------------

FRAME = 1920 * 1080 // 10  # bytes of "JPEG" per synthetic frame (the relay does not decode)


async def sharer_channel(srv: ServerProcess, name: str) -> tuple[Client, ScreenChannel]:
    c = await Client("127.0.0.1", name, chat_port=srv.chat_port, screen_port=srv.screen_port,
                     timeout=TIMEOUT).connect()
    screen = await c.open_screen()
    await screen.share(1920, 1080)
    return c, screen


async def send_frames(screen: ScreenChannel, n: int, size: int = FRAME,
                      fps: float | None = None) -> None:
    """Send n frames, as fast as the link takes them or paced at fps (the workload's rate)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        if fps is not None:
            await asyncio.sleep(max(0.0, start + i / fps - loop.time()))
        data = i.to_bytes(4, "big") * (size // 4)
        await screen.send_frame(1920, 1080, [OutRect(0, 0, 1920, 1080, "jpeg", data)], key=True)


async def viewer(srv: ServerProcess, name: str, sharer: str) -> tuple[Client, ScreenChannel, int]:
    c = await Client("127.0.0.1", name, chat_port=srv.chat_port, screen_port=srv.screen_port,
                     timeout=TIMEOUT).connect()
    async with asyncio.timeout(TIMEOUT):
        while c.share_of(sharer) is None:
            await c.next_event()
    share = c.share_of(sharer)
    assert share is not None
    screen = await c.open_screen()
    await screen.watch(share["id"])
    return c, screen, share["id"]


def stalled_viewer(srv: ServerProcess, name: str,
                   share_id: int) -> tuple[socket.socket, socket.socket]:
    """A viewer that logs in, asks to watch, and then never reads again."""

    chat = raw_socket(srv, srv.chat_port)
    chat.sendall(frame({"type": "hello", "v": 1, "user": name}))
    data = b""
    while b'"token"' not in data:
        data += chat.recv(65536)
    _, hlen = struct.unpack(">II", data[:8])
    token = json.loads(data[8 : 8 + hlen])["token"]
    scr = raw_socket(srv, srv.screen_port, rcvbuf=4096)
    scr.sendall(frame({"type": "hello", "v": 1, "token": token}))
    scr.sendall(frame({"type": "watch", "share": share_id}))
    return chat, scr


async def count_frames(screen: ScreenChannel, done: asyncio.Event) -> list[int]:
    seqs: list[int] = []
    while True:
        try:
            msg = await screen.next_frame(timeout=0.2 if done.is_set() else TIMEOUT)
        except TimeoutError:
            if done.is_set():
                return seqs
            raise
        seqs.append(int.from_bytes(msg.payload[:4], "big"))


def test_stalled_viewer_does_not_slow_the_others(server: ServerProcess) -> None:
    n, fps = 60, 30.0  # 2 s of a 30 frames/s share, 200 kB a frame

    async def round_(with_stalled: bool, tag: str) -> tuple[list[int], float]:
        c, sharer = await sharer_channel(server, f"sharer{tag}")
        v, vscreen, share_id = await viewer(server, f"healthy{tag}", f"sharer{tag}")
        stalled = await asyncio.to_thread(stalled_viewer, server, f"stalled{tag}", share_id) \
            if with_stalled else None
        done = asyncio.Event()
        counter = asyncio.create_task(count_frames(vscreen, done))
        loop = asyncio.get_running_loop()
        start = loop.time()
        await send_frames(sharer, n, fps=fps)
        elapsed = loop.time() - start
        done.set()
        seqs = await counter
        for sock in stalled or ():
            sock.close()
        for x in (c, v):
            await x.close()
        return seqs, elapsed

    async def scenario() -> None:
        alone, t_alone = await round_(False, "a")
        stalled, t_stalled = await round_(True, "b")
        # the healthy viewer ends on the newest picture, in order, either way
        assert alone[-1] == stalled[-1] == n - 1
        assert stalled == sorted(stalled)
        # and gets (nearly) every frame with a stalled viewer beside it, as without
        assert len(alone) >= 0.9 * n, len(alone)
        assert len(stalled) >= 0.9 * n, (len(alone), len(stalled))
        # the sharer kept its pace: the stalled viewer did not hold it up
        assert t_stalled < 1.5 * t_alone, (t_alone, t_stalled)

    run(scenario())


def test_late_viewer_gets_the_current_picture_at_once(server: ServerProcess) -> None:
    async def scenario() -> None:
        c, sharer = await sharer_channel(server, "early")
        await send_frames(sharer, 3, size=1000)
        v, vscreen, share_id = await viewer(server, "late", "early")
        msg = await vscreen.next_frame(timeout=TIMEOUT)
        assert msg["key"] and msg["share"] == share_id
        assert int.from_bytes(msg.payload[:4], "big") == 2  # the newest one
        await v.close()
        await c.close()

    run(scenario())


def test_share_list_is_live_and_several_can_share(server: ServerProcess) -> None:
    async def scenario() -> None:
        watcher = await Client("127.0.0.1", "watcher", chat_port=server.chat_port,
                               screen_port=server.screen_port, timeout=TIMEOUT).connect()
        a, sa = await sharer_channel(server, "ann")
        b, _ = await sharer_channel(server, "ben")

        async def wait_users(users: set[str]) -> None:
            async with asyncio.timeout(TIMEOUT):
                while {s["user"] for s in watcher.shares} != users:
                    await watcher.next_event()

        await wait_users({"ann", "ben"})
        assert all((s["w"], s["h"]) == (1920, 1080) for s in watcher.shares)
        await sa.unshare()
        await wait_users({"ben"})
        await b.close()  # disconnecting ends the share too
        await wait_users(set())
        await a.close()
        await watcher.close()

    run(scenario())


def test_screen_port_needs_a_chat_session(server: ServerProcess) -> None:
    async def scenario() -> None:
        c = Client("127.0.0.1", "x", chat_port=server.chat_port, screen_port=server.screen_port,
                   timeout=TIMEOUT)
        await c.connect()
        c.token = "forged-token"
        with pytest.raises(ConnectError, match="log in on the chat port first"):
            await c.open_screen()
        await c.close()

    run(scenario())


# -- delta frames: newest-wins per viewer, late viewers, lossless refresh ----------------------

W, H, T = 1920, 1080, 64


def tile_update(n: int, rng: np.random.Generator, k: int = 20) -> list[OutRect]:
    """k random 64x64 tiles of the top-left 640x640, raw, filled with a value of frame n."""
    out = []
    for i in rng.choice(100, size=k, replace=False):
        y, x = divmod(int(i), 10)
        out.append(OutRect(x * T, y * T, T, T, "raw", bytes([(n * 7 + 1) % 256]) * (T * T * 3)))
    return out


def apply_out(canvas: Canvas, rects: list[OutRect], key: bool) -> None:
    canvas.apply(W, H, key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in rects])


class RawViewer:
    """A viewer on a bare socket with a tiny receive buffer, reading at most ``rate`` bytes
    a second (a slow link), decoding what it gets onto a canvas. Runs on its own thread."""

    def __init__(self, srv: ServerProcess, name: str, share_id: int, rate: float) -> None:
        self.chat, self.sock = stalled_viewer(srv, name, share_id)
        self.rate = rate
        self.canvas = Canvas(W, H)
        self.frames = 0
        self.bytes = 0
        self.decoder = FrameDecoder(Limits(max_frame=256 << 20, max_header=16 << 20))

    def read_until(self, want: np.ndarray | None, deadline: float) -> None:
        """Read (throttled) until the canvas equals ``want``, or until the deadline."""
        start, got = time.monotonic(), 0
        self.sock.settimeout(0.1)
        while time.monotonic() < deadline:
            if want is not None and self.canvas.complete and np.array_equal(self.canvas.pixels,
                                                                            want):
                return
            ahead = got / self.rate - (time.monotonic() - start)  # throttle: bytes per second
            if ahead > 0:
                select.select([], [], [], ahead)
            try:
                data = self.sock.recv(16384)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionResetError("server closed the slow viewer")
            got += len(data)
            self.bytes += len(data)
            for f in self.decoder.feed(data):
                if f.header["type"] != "frame":
                    continue
                self.frames += 1
                msg = Message("frame", {**f.header, "rects": rects_of(f.header)}, f.payload)
                self.canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))

    def close(self) -> None:
        self.sock.close()
        self.chat.close()


def rects_of(header: dict[str, Any]) -> tuple[Rect, ...]:
    return tuple(Rect(r["x"], r["y"], r["w"], r["h"], r["enc"], r["len"])
                 for r in header["rects"])


def test_slow_viewer_gets_current_pictures_never_a_backlog(server: ServerProcess) -> None:
    """Delta frames at 30/s, ~7 MB/s; one viewer reads at 2 MB/s. It skips to the newest
    version of the regions that changed and ends on exactly the sharer's picture; the healthy
    viewer beside it gets every frame."""
    n, fps = 60, 30.0
    rng = np.random.default_rng(4)
    frames = [tile_update(i, rng, 20) for i in range(n)]
    truth = Canvas(W, H)
    key = [OutRect(0, 0, W, H, "zlib", zlib.compress(bytes(W * H * 3)))]
    apply_out(truth, key, True)
    for f in frames:
        apply_out(truth, f, False)

    async def scenario() -> None:
        c, sharer = await sharer_channel(server, "deltas")
        await sharer.send_frame(W, H, key, key=True)
        v, vscreen, share_id = await viewer(server, "healthy", "deltas")
        slow = await asyncio.to_thread(RawViewer, server, "slow", share_id, 2e6)
        healthy = Canvas(W, H)
        got: list[int] = []

        async def watch_healthy() -> None:
            while len(got) == 0 or got[-1] < n + 1:
                msg = await vscreen.next_frame(timeout=TIMEOUT)
                healthy.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                got.append(msg["seq"])

        healthy_task = asyncio.create_task(watch_healthy())
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 4 * TIMEOUT
        slow_task = loop.run_in_executor(None, slow.read_until, truth.pixels, deadline)
        start = loop.time()
        for i, f in enumerate(frames):
            await asyncio.sleep(max(0.0, start + i / fps - loop.time()))
            await sharer.send_frame(W, H, f, key=False)
        await healthy_task
        await slow_task
        slow.close()
        assert np.array_equal(healthy.pixels, truth.pixels)
        assert len(got) >= 0.9 * (n + 1) and got == sorted(got)
        # the slow one got the final picture, exactly, from far fewer frames and bytes
        assert slow.canvas.complete and np.array_equal(slow.canvas.pixels, truth.pixels)
        assert slow.frames < n / 2, slow.frames
        sent = sum(len(r.data) for f in frames for r in f)
        assert slow.bytes < 0.6 * sent, (slow.bytes, sent)
        await v.close()
        await c.close()

    run(scenario())


def test_late_viewer_gets_key_plus_deltas_as_one_current_picture(server: ServerProcess) -> None:
    async def scenario() -> None:
        rng = np.random.default_rng(5)
        c, sharer = await sharer_channel(server, "early2")
        truth = Canvas(W, H)
        key = [OutRect(0, 0, W, H, "raw", bytes([9]) * (W * H * 3))]
        await sharer.send_frame(W, H, key, key=True)
        apply_out(truth, key, True)
        for i in range(10):
            f = tile_update(i, rng)
            await sharer.send_frame(W, H, f, key=False)
            apply_out(truth, f, False)
        v, vscreen, share_id = await viewer(server, "late2", "early2")
        msg = await vscreen.next_frame(timeout=TIMEOUT)
        assert msg["key"] and msg["share"] == share_id and msg["seq"] == 11
        canvas = Canvas(W, H)
        canvas.apply(W, H, True, frame_rects(msg))
        assert np.array_equal(canvas.pixels, truth.pixels)
        # the relay kept the newest version of each tile only: less than key + 10 deltas
        assert len(msg.payload) <= W * H * 3 + 100 * T * T * 3
        await v.close()
        await c.close()

    run(scenario())


def test_shared_screen_ends_pixel_exact_after_the_lossless_refresh(
        server: ServerProcess, xvfb_display: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real sharer on Xvfb: the viewer's picture becomes equal to the screen, bit for bit
    (the key frame is lossless; the refresh after lossy updates is covered in test_tiles)."""
    monkeypatch.setenv("DISPLAY", xvfb_display)
    source = make_test_picture(1920, 1080, tmp_path / "source2.png")

    async def scenario() -> None:
        cap = await asyncio.to_thread(ScreenCapture, 1)  # with the cursor, as the sharer
        try:
            async with watched_share(server, "exact", "eye", whole=False) as w:
                encs: set[str] = set()
                async with asyncio.timeout(3 * TIMEOUT):
                    while True:
                        msg = await w.screen.next_frame()
                        rects = frame_rects(msg)
                        encs |= {r[4] for r in rects}
                        w.canvas.apply(msg["w"], msg["h"], msg["key"], rects)
                        want = (await asyncio.to_thread(cap.grab))[..., 2::-1]
                        seen = composite(w.canvas.pixels, w.screen.cursors.get(w.share["id"]))
                        if w.canvas.complete and np.array_equal(seen, want):
                            break
                assert encs <= {"palette", "webp"}
        finally:
            cap.close()
        assert w.stats.key_frames == 1

    with show_picture(xvfb_display, source):
        run(scenario())


def test_sharer_chooses_who_watches_and_sees_them(server: ServerProcess) -> None:
    async def connect(name: str) -> tuple[Client, ScreenChannel]:
        c = await Client("127.0.0.1", name, chat_port=server.chat_port,
                         screen_port=server.screen_port, timeout=TIMEOUT).connect()
        return c, await c.open_screen()

    async def until(pred: Any) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not pred():  # noqa: ASYNC110 - a value the reader task sets; bounded
                await asyncio.sleep(0.01)

    async def scenario() -> None:
        alice, a_screen = await connect("alice")
        bob, b_screen = await connect("bob")
        carol, c_screen = await connect("carol")
        share_id = await a_screen.share(1920, 1080, viewers=["Bob"])
        await send_frames(a_screen, 1, size=1000)
        # only those who may watch even see the share in their list
        await until(lambda: [s["id"] for s in bob.shares] == [share_id]
                    and [s["id"] for s in alice.shares] == [share_id])
        await bob.ping()
        await carol.ping()  # both lists are sent before the answers to these pings
        assert carol.shares == []
        await c_screen.watch(share_id)
        with pytest.raises(ServerError) as info:  # the answer to carol's watch: as if
            await c_screen._reply("never")  # there were no such share
        assert (info.value.code, info.value.message) == ("no_such_share", f"no share {share_id}")
        await b_screen.watch(share_id)
        assert (await b_screen.next_frame(timeout=TIMEOUT))["share"] == share_id
        await until(lambda: a_screen.viewers == ["bob"])
        # the members of a room instead: bob is not in "dev", carol is
        await carol.join("dev")
        await a_screen.share(1920, 1080, room="dev")
        await until(lambda: [s["id"] for s in carol.shares] == [share_id])
        assert carol.shares[0]["room"] == "dev"  # (a snapshot of it goes to that room)
        await bob.ping()
        assert bob.shares == []
        await bob.join("dev")  # joining the room shows it, leaving hides it again
        await until(lambda: [s["id"] for s in bob.shares] == [share_id])
        await bob.leave("dev")
        await until(lambda: bob.shares == [])
        msg = await b_screen.next_frame(timeout=TIMEOUT)
        while msg.type != "unshared":  # bob is shown out
            msg = await b_screen.next_frame(timeout=TIMEOUT)
        await c_screen.watch(share_id)
        assert (await c_screen.next_frame(timeout=TIMEOUT))["share"] == share_id
        await until(lambda: a_screen.viewers == ["carol"])
        await carol.close()
        await until(lambda: a_screen.viewers == [])
        for c in (alice, bob):
            await c.close()

    run(scenario())


def test_a_share_for_a_guest_is_not_for_the_next_guest_of_that_name(
        server: ServerProcess) -> None:
    """A guest's name in a viewer list means the first guest seen holding it while the
    share runs: once that guest is gone, another guest taking the name neither sees the
    share nor may watch it. A guest who registers the name keeps its place."""
    async def connect(name: str) -> tuple[Client, ScreenChannel]:
        c = await Client("127.0.0.1", name, chat_port=server.chat_port,
                         screen_port=server.screen_port, timeout=TIMEOUT).connect()
        return c, await c.open_screen()

    async def until(pred: Any) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not pred():  # noqa: ASYNC110 - a value the reader task sets; bounded
                await asyncio.sleep(0.01)

    async def scenario() -> None:
        alice, a_screen = await connect("alice")
        share_id = await a_screen.share(1920, 1080, viewers=["bob"])  # bob is not here yet
        await send_frames(a_screen, 1, size=1000)
        bob, b_screen = await connect("bob")
        await until(lambda: [s["id"] for s in bob.shares] == [share_id])
        await b_screen.watch(share_id)
        assert (await b_screen.next_frame(timeout=TIMEOUT))["share"] == share_id
        await until(lambda: a_screen.viewers == ["bob"])
        await bob.close()
        await until(lambda: a_screen.viewers == [])
        new_bob, nb_screen = await connect("bob")  # another guest, same name
        await new_bob.ping()  # its share list is sent before the answer to this ping
        assert new_bob.shares == []
        await nb_screen.watch(share_id)
        with pytest.raises(ServerError):
            await nb_screen._reply("never")  # the answer to the watch is a refusal
        await a_screen.share(1920, 1080, viewers=["bob", "carol"])  # still the first bob's
        await new_bob.ping()
        assert new_bob.shares == []
        # a guest who registers is the account from then on: it keeps its place
        carol, _ = await connect("carol")
        await until(lambda: [s["id"] for s in carol.shares] == [share_id])
        await carol.register("carol's password")
        await carol.close()
        carol = await Client("127.0.0.1", "carol", chat_port=server.chat_port,
                             screen_port=server.screen_port, timeout=TIMEOUT,
                             password="carol's password").connect()
        await carol.ping()
        assert [s["id"] for s in carol.shares] == [share_id]
        for c in (alice, new_bob, carol):
            await c.close()

    run(scenario())


# -- who may watch: hidden shares stay hidden, lost rights end the watch at once ------------


def _screen_replies(srv: ServerProcess, token: str, requests: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """Log in on the screen port with ``token``, send ``requests`` and return the headers
    of the answers to them (one each), in order."""
    with raw_socket(srv, srv.screen_port) as sock:
        sock.sendall(frame({"type": "hello", "v": 1, "token": token}))
        sock.sendall(b"".join(frame(r) for r in requests) + frame({"type": "ping", "n": 7}))
        got = read_headers_until(sock, lambda h: h["type"] == "pong")
    assert got[0]["type"] == "welcome", got[0]
    return [h for h in got[1:-1] if h["type"] != "shares"]


def test_a_share_one_may_not_see_looks_like_no_share(server: ServerProcess) -> None:
    """Probing share ids from outside the audience: a hidden share (for a private room's
    members, or for named users) answers exactly what an id with no share answers: it does
    not tell that it exists, who shares, or with whom."""
    async def scenario() -> None:
        dave = await Client("127.0.0.1", "dave", chat_port=server.chat_port,
                            screen_port=server.screen_port, timeout=TIMEOUT).connect()
        eve = await Client("127.0.0.1", "eve", chat_port=server.chat_port,
                           screen_port=server.screen_port, timeout=TIMEOUT).connect()
        d_screen = await dave.open_screen()
        try:
            await dave.join("board")
            share_id = await d_screen.share(640, 480, room="board")
            await send_frames(d_screen, 1, size=1000)
            await eve.ping()  # the share list goes out before the answer to this
            assert eve.shares == []  # not listed either
            ids = list(range(1, share_id + 4))
            assert eve.token is not None
            replies = await asyncio.to_thread(
                _screen_replies, server, eve.token, [{"type": "watch", "share": i}
                                                    for i in ids])
            await d_screen.share(640, 480, viewers=["carol"])  # named users instead
            replies += await asyncio.to_thread(
                _screen_replies, server, eve.token, [{"type": "watch", "share": share_id}])
        finally:
            await d_screen.close()
            await dave.close()
            await eve.close()
        ids.append(share_id)
        assert len(replies) == len(ids), replies
        for i, reply in zip(ids, replies, strict=True):
            text = json.dumps(reply)
            assert "board" not in text and "dave" not in text and "carol" not in text, reply
            assert reply == {"type": "error", "code": "no_such_share",
                             "message": f"no share {i}", "fatal": False, "re": "watch"}, reply

    run(scenario())


def test_leaving_the_room_ends_the_watch_at_once(server: ServerProcess) -> None:
    """A share for a room's members: a viewer who leaves the room is told (``unshared``)
    and gets no frame after that, while the sharer goes on and the other members still
    get its frames; watching again is refused as for a share that does not exist."""
    async def connect(name: str) -> tuple[Client, ScreenChannel]:
        c = await Client("127.0.0.1", name, chat_port=server.chat_port,
                         screen_port=server.screen_port, timeout=TIMEOUT).connect()
        await c.join("board")
        return c, await c.open_screen()

    async def scenario() -> None:
        dave, d_screen = await connect("dave")
        bob, b_screen = await connect("bob")
        carol, c_screen = await connect("carol")
        try:
            share_id = await d_screen.share(640, 480, room="board")
            await send_frames(d_screen, 1, size=1000)
            for screen in (b_screen, c_screen):
                await screen.watch(share_id)
                assert (await screen.next_frame(timeout=TIMEOUT))["share"] == share_id
            await bob.leave("board")  # answered once the server has taken bob out
            msg = await b_screen.next_frame(timeout=TIMEOUT)
            while msg.type == "frame":  # frames sent before the leave may still come
                msg = await b_screen.next_frame(timeout=TIMEOUT)
            assert msg.type == "unshared" and msg["share"] == share_id
            # the sharer goes on: carol sees a frame sent after the leave, bob does not
            await send_frames(d_screen, 3, size=1000)
            async with asyncio.timeout(TIMEOUT):
                while (await c_screen.next_frame())["seq"] < 4:
                    pass
            # what the relay sent bob with carol's frames would be ahead of this answer
            await b_screen.watch(share_id)
            with pytest.raises(ServerError) as info:
                await b_screen._reply("never")
            assert (info.value.code, info.value.message) == ("no_such_share",
                                                             f"no share {share_id}")
            assert not b_screen._frames, list(b_screen._frames)
        finally:
            for c in (dave, bob, carol):
                await c.close()

    run(scenario())
