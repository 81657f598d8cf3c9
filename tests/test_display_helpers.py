from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.display import grab_display, make_test_picture, show_picture


def test_xvfb_display_is_up(xvfb_display: str) -> None:
    assert xvfb_display.startswith(":")
    info = subprocess.run(
        ["xdpyinfo", "-display", xvfb_display],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert "1920x1080 pixels" in info
    assert "depth of root window:    24 planes" in info


def test_grab_has_screen_size(xvfb_display: str) -> None:
    grabbed = grab_display(xvfb_display)
    assert grabbed.shape == (1080, 1920, 3)
    assert grabbed.dtype == np.uint8


def test_shown_picture_is_grabbed_back_pixel_exact(xvfb_display: str, tmp_path: Path) -> None:
    png = make_test_picture(1920, 1080, tmp_path / "desktop.png")
    source = np.asarray(Image.open(png).convert("RGB"))
    with show_picture(xvfb_display, png):
        grabbed = grab_display(xvfb_display)
    assert grabbed.shape == source.shape
    diff = np.any(grabbed != source, axis=2)
    assert not diff.any(), f"{int(diff.sum())} pixels differ, first at {np.argwhere(diff)[0]}"


def test_smaller_picture_and_window_goes_away(xvfb_display: str, tmp_path: Path) -> None:
    png = make_test_picture(640, 360, tmp_path / "small.png")
    source = np.asarray(Image.open(png).convert("RGB"))
    with show_picture(xvfb_display, png) as shown:
        assert shown.proc is not None
        grabbed = grab_display(xvfb_display)
        np.testing.assert_array_equal(grabbed[:360, :640], source)
    assert shown.proc is None
    # The X server tears the window down when it notices the closed connection: poll.
    deadline = time.monotonic() + 10
    while np.array_equal(grab_display(xvfb_display)[:360, :640], source):
        assert time.monotonic() < deadline, "picture still on screen after the viewer was killed"
