"""Screen sharing end to end: real server, real share/view commands, real Xvfb display."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chatscreen.client import Client, OutRect, ScreenChannel
from chatscreen.codec import psnr
from chatscreen.errors import ConnectError
from tests.helpers.display import make_test_picture, show_picture
from tests.helpers.server import TIMEOUT, ServerProcess, raw_socket, running_server


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(6 * TIMEOUT):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path / "data") as srv:
        yield srv


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
    assert view.stderr.strip() == "No complete picture within 0.5 s"


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


def frame(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">II", 4 + len(raw), len(raw)) + raw


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
