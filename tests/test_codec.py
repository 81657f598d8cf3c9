"""Encodings, the viewer's canvas, capture on a real X display, and the viewer window."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chatscreen.client import Client, OutRect, ThreadedClient
from chatscreen.screen.capture import CaptureError, ScreenCapture
from chatscreen.screen.codec import (
    Canvas,
    DecodeError,
    decode_rect,
    encode_jpeg,
    encode_png,
    fit_within,
    psnr,
)
from tests.helpers.display import grab_display, render_test_picture
from tests.helpers.server import REPO, TIMEOUT, running_server


def bgra(rgb: np.ndarray) -> np.ndarray:
    out = np.empty((*rgb.shape[:2], 4), np.uint8)
    out[..., :3] = rgb[..., ::-1]
    out[..., 3] = 255
    return out


PICTURE = np.asarray(render_test_picture(640, 360).convert("RGB"))


def test_png_and_raw_are_bit_exact() -> None:
    assert np.array_equal(decode_rect("png", encode_png(bgra(PICTURE)), 640, 360), PICTURE)
    raw = PICTURE.tobytes()
    assert np.array_equal(decode_rect("raw", raw, 640, 360), PICTURE)


def test_jpeg_round_trip_is_close() -> None:
    got = decode_rect("jpeg", encode_jpeg(bgra(PICTURE), 80), 640, 360)
    # a 640x360 desktop is denser than a 1080p one: 1 dB lower than the 35 dB of full size
    assert got.shape == PICTURE.shape and psnr(got, PICTURE) >= 33


@pytest.mark.parametrize(
    ("enc", "data", "w", "h"),
    [("jpeg", b"not a jpeg", 4, 4), ("png", b"\x89PNG\r\n\x1a\nbroken", 4, 4),
     ("raw", b"\x00" * 10, 2, 2), ("bmp", b"", 1, 1)],
)
def test_bad_picture_data_is_a_clean_error(enc: str, data: bytes, w: int, h: int) -> None:
    with pytest.raises(DecodeError):
        decode_rect(enc, data, w, h)


def test_declared_size_must_match_picture() -> None:
    with pytest.raises(DecodeError, match="rect says"):
        decode_rect("png", encode_png(bgra(PICTURE)), 320, 180)


def test_canvas_applies_rects_and_knows_when_complete() -> None:
    canvas = Canvas(640, 360)
    patch = np.full((10, 20, 3), 200, np.uint8)
    canvas.apply(640, 360, False, [(5, 6, 20, 10, "raw", patch.tobytes())])
    assert not canvas.complete and canvas.pixels[6, 5].tolist() == [200, 200, 200]
    canvas.apply(640, 360, True, [(0, 0, 640, 360, "png", encode_png(bgra(PICTURE)))])
    assert canvas.complete and np.array_equal(canvas.pixels, PICTURE)
    canvas.apply(320, 200, True, [(0, 0, 320, 200, "raw", bytes(320 * 200 * 3))])
    assert canvas.size == (320, 200)


def test_fit_within_keeps_the_aspect_ratio() -> None:
    img = bgra(np.zeros((1080, 1920, 3), np.uint8))
    assert fit_within(img, 1280, 1280).shape == (720, 1280, 4)
    assert fit_within(img, 4000, 500).shape == (500, 889, 4)
    assert fit_within(img, None, None) is img


def test_capture_is_native_size_with_the_cursor(xvfb_display: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    with_cursor = ScreenCapture(1, with_cursor=True)
    without = ScreenCapture(1, with_cursor=False)
    a, b = with_cursor.grab().copy(), without.grab().copy()
    with_cursor.close()
    without.close()
    assert a.shape == (1080, 1920, 4)
    differ = np.argwhere((a != b).any(axis=2))
    assert 0 < len(differ) < 64 * 64  # the pointer, and only the pointer
    with pytest.raises(CaptureError, match="no monitor 7"):
        ScreenCapture(7)


def test_threaded_client_for_gui_code(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as srv:
        tc = ThreadedClient("127.0.0.1", "gui", chat_port=srv.chat_port, timeout=TIMEOUT)
        try:
            tc.connect().result(TIMEOUT)
            tc.call(lambda c: c.join("general")).result(TIMEOUT)
            sent = tc.call(lambda c: c.say("general", "from a GUI thread")).result(TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while True:
                ev = tc.events.get(timeout=max(0.01, deadline - time.monotonic()))
                if ev.type == "message":
                    break
            assert ev["id"] == sent["id"] and ev["text"] == "from a GUI thread"
        finally:
            tc.close()


def test_viewer_window_shows_the_share(xvfb_display: str, tmp_path: Path) -> None:
    red = np.zeros((360, 640, 3), np.uint8)
    red[..., 0] = 255
    data = encode_jpeg(bgra(red), 90)

    async def share(srv_chat: int, srv_screen: int, shown: asyncio.Event) -> None:
        c = await Client("127.0.0.1", "painter", chat_port=srv_chat, screen_port=srv_screen,
                         timeout=TIMEOUT).connect()
        screen = await c.open_screen()
        await screen.share(640, 360)
        await screen.send_frame(640, 360, [OutRect(0, 0, 640, 360, "jpeg", data)], key=True)
        await asyncio.wait_for(shown.wait(), 3 * TIMEOUT)
        await c.close()

    with running_server(tmp_path / "d") as srv:
        env = {**os.environ, "DISPLAY": xvfb_display}
        window = subprocess.Popen(
            [sys.executable, "-m", "chatscreen", "view", "--server",
             f"127.0.0.1:{srv.chat_port}", "--screen-port", str(srv.screen_port),
             "--user", "watcher"], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)

        async def scenario() -> None:
            shown = asyncio.Event()
            task = asyncio.create_task(share(srv.chat_port, srv.screen_port, shown))
            deadline = time.monotonic() + 3 * TIMEOUT
            while time.monotonic() < deadline:
                screen = await asyncio.to_thread(grab_display, xvfb_display)
                reds = np.all(screen == [254, 0, 0], axis=2) | np.all(screen == [255, 0, 0],
                                                                     axis=2)
                if reds.sum() > 100_000:  # the picture, scaled up to the window
                    shown.set()
                    break
                await asyncio.sleep(0.05)  # polling the screen, bounded by the deadline
            shown.set()
            await task
            assert reds.sum() > 100_000, "the viewer window never showed the red share"

        try:
            asyncio.run(scenario())
        finally:
            window.terminate()
            window.communicate(timeout=TIMEOUT)
