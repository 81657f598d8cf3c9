"""Run the real server as a child process on loopback, with free ports, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chatscreen.client import Client
from chatscreen.errors import ConnectError, ServerError
from chatscreen.protocol import Message

T = TypeVar("T")

TIMEOUT = float(os.environ.get("CHATSCREEN_TEST_TIMEOUT", "10"))
REPO = Path(__file__).resolve().parents[2]
#: For tests and benchmarks that push many messages through one user on purpose.
NO_RATE_LIMITS = {"CHATSCREEN_RATE_MESSAGES": "1e9", "CHATSCREEN_RATE_BURST": "1000000000",
                  "CHATSCREEN_RATE_BYTES": "1000000000"}


class ServerProcess:
    def __init__(self, data_dir: Path, *extra: str, chat_port: int = 0, screen_port: int = 0,
                 env: dict[str, str] | None = None, tls: bool = True) -> None:
        self.data_dir = data_dir
        self.tls = tls
        self.args = [sys.executable, "-m", "chatscreen", "server", "--host", "127.0.0.1",
                     "--chat-port", str(chat_port), "--screen-port", str(screen_port),
                     "--data-dir", str(data_dir), *([] if tls else ["--no-tls"]), *extra]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.stderr_path = data_dir.parent / f"server-{id(self)}.log"
        self.chat_port = 0
        self.screen_port = 0

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, env=self.env, cwd=REPO)
        self.lines, self.output = queue.Queue(), []  # a restart reads the new process only
        threading.Thread(target=self._pump, args=(self.proc, self.lines), daemon=True).start()
        banner = self.wait_for_line(r"Press Ctrl\+C to stop the server")
        chat = re.search(r"Chat server: .*:(\d+)", banner)
        screen = re.search(r"Screen server: .*:(\d+)", banner)
        assert chat and screen, banner
        self.chat_port, self.screen_port = int(chat.group(1)), int(screen.group(1))
        return self

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def wait_for_line(self, pattern: str, timeout: float = TIMEOUT) -> str:
        """Wait for a stdout line matching pattern; returns all output so far."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {self.output}: "
                                     f"{self.stderr_text()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server exited ({self.proc and self.proc.poll()}): "
                                     f"{''.join(self.output)} {self.stderr_text()}")
            self.output.append(line)
            if re.search(pattern, line):
                return "".join(self.output)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._stderr.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._stderr.close()


def raw_socket(srv: ServerProcess, port: int, *, rcvbuf: int | None = None,
               source: str | None = None, tls: bool = True) -> socket.socket:
    """A bare connection to one of the server's ports (TLS-wrapped when the server uses TLS
    and ``tls``), for tests that speak the protocol by hand; from the loopback address
    ``source`` (127.0.0.2 ...: another machine, as far as the server can tell)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    if not srv.tls or not tls:
        return sock
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock)


def read_headers(sock: socket.socket) -> list[dict[str, Any]]:
    """Read until the server closes; return the headers of the frames it sent."""
    buf = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLError):
        while chunk := sock.recv(65536):
            buf += chunk
    headers = []
    while len(buf) >= 8:
        body, hlen = struct.unpack(">II", buf[:8])
        headers.append(json.loads(buf[8 : 8 + hlen]))
        buf = buf[4 + body :]
    return headers


def read_headers_until(sock: socket.socket,
                       until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Read frames until one whose header satisfies ``until``; return the headers so far."""
    return [header for _, header in read_frames_until(sock, until)]


def read_frames_until(sock: socket.socket, until: Callable[[dict[str, Any]], bool]
                      ) -> list[tuple[int, dict[str, Any]]]:
    """Read frames until one whose header satisfies ``until``; return (body length, header)
    of each so far."""
    buf, out = bytearray(), list[tuple[int, dict[str, Any]]]()
    while True:
        chunk = sock.recv(1 << 16)
        assert chunk, f"closed after {[h.get('type') for _, h in out[-3:]]}"
        buf += chunk
        while len(buf) >= 8:
            body, hlen = struct.unpack(">II", buf[:8])
            if len(buf) < 4 + body:
                break
            header = json.loads(buf[8 : 8 + hlen])
            del buf[: 4 + body]
            out.append((body, header))
            if until(header):
                return out


def raw_exchange(srv: ServerProcess, port: int, data: bytes, **kwargs: Any
                 ) -> list[dict[str, Any]]:
    """Send raw bytes, read until the server closes; return the headers it sent."""
    with raw_socket(srv, port, **kwargs) as sock:
        sock.sendall(data)
        return read_headers(sock)


@contextmanager
def running_server(data_dir: Path, *extra: str, **kwargs: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(data_dir, *extra, **kwargs).start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test scenario on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(6 * TIMEOUT):
            return await coro

    return asyncio.run(bounded())


def frame(header: dict[str, Any]) -> bytes:
    """A protocol frame built by hand (for tests that speak the protocol raw)."""
    raw = json.dumps(header).encode()
    return struct.pack(">II", 4 + len(raw), len(raw)) + raw


async def wait_for(c: Client, pred: Callable[[Message], bool]) -> Message:
    """The client's next event that satisfies pred (events before it are skipped)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            ev = await c.next_event()
            if pred(ev):
                return ev


async def refused(c: Client) -> ServerError:
    """Connect, expecting the server to refuse with a fatal error; return that error."""
    with pytest.raises(ConnectError) as info:
        await c.connect()
    cause = info.value.__cause__
    assert isinstance(cause, ServerError), info.value
    return cause


def port_outside_ephemeral_range() -> int:
    """A free TCP port below the kernel's ephemeral range: one the kernel never hands to an
    outgoing connection, so it is still free when the server comes back on it."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def metrics_port(srv: ServerProcess) -> int:
    """The port of a server's /metrics (started with ``CHATSCREEN_METRICS_PORT=0``)."""
    found = re.search(r"Metrics: http://[\d.]+:(\d+)", "".join(srv.output))
    assert found, "start the server with CHATSCREEN_METRICS_PORT=0"
    return int(found.group(1))


def metrics(where: ServerProcess | int) -> dict[str, float]:
    """A server's /metrics (the server, or its metrics port), by name with labels."""
    port = metrics_port(where) if isinstance(where, ServerProcess) else where
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as resp:
        body: bytes = resp.read()
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
