"""Start a private Xvfb server on a free display number.

Xvfb chooses the display number itself (``-displayfd``) and writes it to a pipe once it is
ready to accept connections, so there is neither a race for a display number nor any
polling for readiness.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

DEFAULT_SCREEN = "1920x1080x24"
START_DEADLINE_S = 10.0


class XvfbError(RuntimeError):
    pass


def _read_display_number(fd: int, proc: subprocess.Popen[bytes], deadline: float) -> int:
    buf = b""
    while not buf.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise XvfbError(f"Xvfb did not report its display within {START_DEADLINE_S:.0f} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 64)
        if not chunk:  # EOF: Xvfb exited (or closed the fd) without reporting a display
            proc.wait(timeout=5)
            raise XvfbError(f"Xvfb exited early with code {proc.returncode}")
        buf += chunk
    return int(buf.strip())


@contextlib.contextmanager
def run_xvfb(screen: str = DEFAULT_SCREEN) -> Iterator[str]:
    """Run Xvfb for the duration of the ``with`` block; yields the display, e.g. ``":5"``."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise XvfbError(
            "Xvfb is not installed; run `make sysdeps` (scripts/ensure-sysdeps.sh) "
            "or `apt-get install xvfb xdotool x11-utils xclip`"
        )
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as log:
        try:
            proc = subprocess.Popen(
                [
                    xvfb,
                    "-displayfd",
                    str(write_fd),
                    "-screen",
                    "0",
                    screen,
                    "-nolisten",
                    "tcp",
                    "-noreset",
                ],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            os.close(write_fd)
        try:
            try:
                number = _read_display_number(read_fd, proc, time.monotonic() + START_DEADLINE_S)
            except XvfbError as exc:
                log.seek(0)
                output = log.read().decode(errors="replace").strip()
                raise XvfbError(f"{exc}; Xvfb output:\n{output}") from None
            finally:
                os.close(read_fd)
            yield f":{number}"
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
