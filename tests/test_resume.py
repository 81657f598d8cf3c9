"""Sharing and watching a screen resume by themselves after the server restarts.

The real `chatscreen share` command shares a known picture on Xvfb; a library client watches
it with :func:`chatscreen.screen.resume.keep_watching`. The server is stopped and started again on
the same ports: both reconnect, the sharer shares again, and the watcher, on the new share
(whose id is new), ends with the complete picture again — with nobody doing anything.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from chatscreen.client import Client, ScreenChannel
from chatscreen.protocol import Message
from chatscreen.screen.codec import Canvas, psnr
from chatscreen.screen.resume import keep_watching
from chatscreen.screen.sharing import frame_rects
from tests.helpers.display import make_test_picture, show_picture
from tests.helpers.server import TIMEOUT, ServerProcess, run


class Watched:
    """What the watcher saw: the picture, and which frames came after the restart."""

    def __init__(self) -> None:
        self.canvas: Canvas | None = None
        self.restarted = False
        self.key_after_restart = False
        self.changed = asyncio.Event()

    async def show(self, msg: Message, _screen: ScreenChannel) -> None:
        if self.canvas is None or msg["key"]:
            self.canvas = Canvas(msg["w"], msg["h"])
            self.key_after_restart = self.key_after_restart or self.restarted
        self.canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        self.changed.set()

    async def until_complete(self, *, after_restart: bool) -> Canvas:
        async with asyncio.timeout(3 * TIMEOUT):
            while True:
                canvas = self.canvas
                if (canvas is not None and canvas.complete
                        and (self.key_after_restart or not after_restart)):
                    return canvas
                self.changed.clear()
                await self.changed.wait()


def test_share_and_watch_resume_after_a_server_restart(
        fixed_port_server: ServerProcess, xvfb_display: str, tmp_path: Path) -> None:
    server = fixed_port_server
    source = make_test_picture(1920, 1080, tmp_path / "source.png")
    want = np.asarray(Image.open(source).convert("RGB"))
    ports = ["--server", f"127.0.0.1:{server.chat_port}", "--screen-port", str(server.screen_port)]
    again: ServerProcess | None = None
    with show_picture(xvfb_display, source):
        sharer = subprocess.Popen([sys.executable, "-m", "chatscreen", "share", *ports,
                                   "--user", "alice"], env={**os.environ,
                                                            "DISPLAY": xvfb_display},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert sharer.stdout is not None
            assert "Sharing 1920x1080" in sharer.stdout.readline()

            async def scenario() -> None:
                nonlocal again
                watcher = Client("127.0.0.1", "bob", chat_port=server.chat_port,
                                 screen_port=server.screen_port, timeout=TIMEOUT)
                await watcher.connect()
                seen = Watched()
                share = await watcher.wait_share("alice", TIMEOUT)
                watching = asyncio.create_task(keep_watching(watcher, share, seen.show))
                before = await seen.until_complete(after_restart=False)
                assert psnr(before.pixels, want) >= 35.0

                await asyncio.to_thread(server.stop)
                seen.restarted = True
                again = ServerProcess(server.data_dir, chat_port=server.chat_port,
                                      screen_port=server.screen_port)
                await asyncio.to_thread(again.start)
                after = await seen.until_complete(after_restart=True)
                assert psnr(after.pixels, want) >= 35.0
                assert not watching.done()  # still watching, as if nothing happened
                assert watcher.share_of("alice") is not None
                watching.cancel()
                await watcher.close()

            run(scenario())
            assert sharer.poll() is None, "the sharer kept going through the restart"
        finally:
            sharer.terminate()
            out, err = sharer.communicate(timeout=TIMEOUT)
            if again is not None:
                again.stop()
    assert sharer.returncode == 0, err
    assert out.count("Sharing 1920x1080") == 1, out  # the line above: once more after it
