"""Helpers for tests that put pictures on, and read pictures from, an X display."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import mss
import numpy as np
import numpy.typing as npt

from tests.helpers.pictures import make_test_picture, render_test_picture

__all__ = [
    "ShownPicture",
    "grab_display",
    "make_test_picture",
    "open_mss",
    "render_test_picture",
    "show_picture",
]

SHOW_IMAGE_SCRIPT = Path(__file__).with_name("show_image.py")
READY_DEADLINE_S = 15.0


class ShownPicture:
    """A picture shown full-size at (0, 0) by a Tk subprocess; a context manager.

    ``__enter__`` returns once the window is mapped and drawn; ``__exit__`` kills it.
    """

    def __init__(self, display: str, png_path: Path | str) -> None:
        self.display = display
        self.png_path = Path(png_path)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float = READY_DEADLINE_S) -> ShownPicture:
        env = dict(os.environ, DISPLAY=self.display)
        self.proc = subprocess.Popen(
            [sys.executable, str(SHOW_IMAGE_SCRIPT), str(self.png_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            self._wait_ready(time.monotonic() + deadline_s)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        while b"ready\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"show_image.py did not become ready on {self.display}")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(timeout=5)
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(
                    f"show_image.py exited with {self.proc.returncode} before ready:\n{err}"
                )
            buf += chunk

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ShownPicture:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def show_picture(display: str, png_path: Path | str) -> ShownPicture:
    """Show ``png_path`` at (0, 0) on ``display``; use as ``with show_picture(...):``."""
    return ShownPicture(display, png_path)


def open_mss(display: str) -> Any:
    """An mss screenshot object bound to ``display`` (``mss.MSS`` on mss>=10.2)."""
    factory = getattr(mss, "MSS", None) or mss.mss
    return factory(display=display)


def grab_display(display: str) -> npt.NDArray[np.uint8]:
    """The whole first screen of ``display`` as an ``H x W x 3`` RGB uint8 array."""
    with open_mss(display) as sct:
        shot = sct.grab(sct.monitors[1])
        bgra = np.asarray(shot, dtype=np.uint8)
    return np.ascontiguousarray(bgra[:, :, 2::-1])
