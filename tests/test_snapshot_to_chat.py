"""``chatscreen view --snapshot-to-chat``: a share's picture posted into chat as a lossless
PNG (issue 18), as a user types it (a real CLI process) against the real server; the sharer
is a library client sending a known picture losslessly, so that the posted PNG must be that
picture exactly."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from chatscreen.client import Client, OutRect
from chatscreen.client.files import download
from chatscreen.screen.codec import encode_zlib
from tests.helpers.display import (
    grab_display,
    make_test_picture,
    render_test_picture,
    show_picture,
)
from tests.helpers.server import REPO, TIMEOUT, ServerProcess, run

T = TypeVar("T")


def view(srv: ServerProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatscreen", "view", "--server", f"127.0.0.1:{srv.chat_port}",
         "--screen-port", str(srv.screen_port), "--user", "viewer", "--from", "painter",
         "--timeout", str(TIMEOUT), *extra],
        capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO)


def _bgra(rgb: np.ndarray) -> np.ndarray:
    out = np.empty((*rgb.shape[:2], 4), np.uint8)
    out[..., :3] = rgb[..., ::-1]
    out[..., 3] = 255
    return out


def test_view_snapshot_to_chat_posts_the_shared_picture_as_a_lossless_png(
        server: ServerProcess, tmp_path: Path) -> None:
    picture = np.asarray(render_test_picture(640, 400).convert("RGB"))
    h, w = picture.shape[:2]

    async def scenario() -> None:
        painter = await Client("127.0.0.1", "painter", chat_port=server.chat_port,
                               screen_port=server.screen_port, timeout=TIMEOUT).connect()
        bob = await Client("127.0.0.1", "bob", chat_port=server.chat_port,
                           screen_port=server.screen_port, timeout=TIMEOUT).connect()
        await bob.join("general")
        await bob.join("design")
        screen = await painter.open_screen()
        await screen.share(w, h)
        await screen.send_frame(w, h, [OutRect(0, 0, w, h, "zlib", encode_zlib(_bgra(picture)))],
                                key=True)
        try:
            # to the server's first room (#general), then to the room asked for
            for room, extra in (("general", ()), ("design", ("--room", "design"))):
                posted = await _in_thread(view, server, "--snapshot-to-chat", *extra)
                assert posted.returncode == 0, posted.stderr
                file_id = posted.stdout.strip().splitlines()[-1]
                assert f"to #{room}" in posted.stderr
                msg = await _file_message(bob, file_id)
                assert msg["room"] == room and msg["user"] == "viewer"
                info = msg["file"]
                assert info["mime"] == "image/png" and (info["w"], info["h"]) == (w, h)
                assert info["name"].startswith("painter-screen-") and info["name"].endswith(
                    ".png")
                got = await download(bob, file_id, tmp_path / f"{room}.png")
                assert hashlib.sha256(got.path.read_bytes()).hexdigest() == info["sha256"]
                pixels = np.asarray(Image.open(got.path).convert("RGB"))
                assert np.array_equal(pixels, picture)  # lossless: the shared screen exactly
            # the same picture as `--snapshot` saves
            snap = tmp_path / "snap.png"
            saved = await _in_thread(view, server, "--snapshot", str(snap))
            assert saved.returncode == 0, saved.stderr
            assert np.array_equal(np.asarray(Image.open(snap).convert("RGB")), pixels)
        finally:
            await screen.close()
            await painter.close()
            await bob.close()

    run(scenario())


def test_snapshot_to_chat_refused_says_so_in_one_line(server: ServerProcess) -> None:
    async def scenario() -> None:
        painter = await Client("127.0.0.1", "painter", chat_port=server.chat_port,
                               screen_port=server.screen_port, timeout=TIMEOUT).connect()
        screen = await painter.open_screen()
        await screen.share(64, 64)
        pic = _bgra(np.full((64, 64, 3), 200, np.uint8))
        await screen.send_frame(64, 64, [OutRect(0, 0, 64, 64, "zlib", encode_zlib(pic))],
                                key=True)
        try:
            bad = await _in_thread(view, server, "--snapshot-to-chat", "--room", "no room")
            assert bad.returncode == 1 and bad.stdout == ""
            lines = bad.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("cannot post the picture to "), \
                bad.stderr
            alone = await _in_thread(lambda: subprocess.run(
                [sys.executable, "-m", "chatscreen", "view", "--server",
                 f"127.0.0.1:{server.chat_port}", "--user", "v", "--room", "general"],
                capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO))
            assert alone.returncode == 1
            assert alone.stderr.strip() == "--room goes with --snapshot-to-chat"
        finally:
            await screen.close()
            await painter.close()

    run(scenario())


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def _file_message(c: Client, file_id: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        async for ev in c.events():
            if ev.type == "message" and ev.get("kind") == "file" and \
                    ev["file"]["id"] == file_id:
                return ev.fields
    raise AssertionError("the file message never came")


def test_snapshot_to_chat_of_a_real_screen_share_equals_the_screen(
        server: ServerProcess, xvfb_display: str, tmp_path: Path) -> None:
    """`chatscreen share --encoding lossless` of the Xvfb screen showing a picture, then
    `view --snapshot-to-chat`: the posted PNG is the screen, pixel for pixel."""
    source = make_test_picture(1920, 1080, tmp_path / "source.png")
    env = {**os.environ, "DISPLAY": xvfb_display}
    ports = ["--server", f"127.0.0.1:{server.chat_port}", "--screen-port", str(server.screen_port)]
    with show_picture(xvfb_display, source):
        screen = grab_display(xvfb_display)  # a still screen from here on
        sharer = subprocess.Popen(
            [sys.executable, "-m", "chatscreen", "share", *ports, "--user", "painter",
             "--encoding", "lossless"], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            assert sharer.stdout is not None
            line = sharer.stdout.readline()  # "Sharing 1920x1080 at ..." once it is up
            assert "Sharing 1920x1080" in line, line
            posted = view(server, "--snapshot-to-chat")
            assert posted.returncode == 0, posted.stderr
            file_id = posted.stdout.strip().splitlines()[-1]
        finally:
            sharer.terminate()
            sharer.communicate(timeout=TIMEOUT)

    async def fetch() -> Path:
        c = await Client("127.0.0.1", "checker", chat_port=server.chat_port,
                         screen_port=server.screen_port, timeout=TIMEOUT).connect()
        try:
            return (await download(c, file_id, tmp_path / "posted.png")).path
        finally:
            await c.close()

    got = np.asarray(Image.open(run(fetch())).convert("RGB"))
    assert got.shape == screen.shape == (1080, 1920, 3)
    assert np.array_equal(got, screen)
