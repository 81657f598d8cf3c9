"""A helper process of a benchmark, driven by lines: commands on its stdin, one answer line
each on its stdout (bench.chat_listeners, bench.room_latency)."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class LineChild:
    """``python -m MODULE ARGS`` as a child that says ``ready`` once it has started."""

    def __init__(self, module: str, args: list[str], start_timeout: float) -> None:
        self.name = module.rsplit(".", 1)[-1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._buf = b""
        try:
            self._line(start_timeout, "ready")
        except BaseException:
            self.close()
            raise

    def _line(self, timeout: float, expect: str | None = None) -> str:
        """Its next line (waiting at most ``timeout`` s); it must be ``expect`` if given."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no answer in {timeout} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 4096)
                if not data:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"{self.name} exited ({self.proc.wait(5)}): {err}")
                self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        text = line.decode()
        if expect is not None and text != expect:
            raise RuntimeError(f"{self.name} said {text!r}, expected {expect!r}")
        return text

    def _command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(OSError):
            self._command("quit")
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=timeout)
