"""Attackers speaking the protocol by hand, and what tests and benchmarks measure of the
server meanwhile (its memory, its metrics, a chat user's round trip)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import ssl
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from chatscreen.client import Client
from chatscreen.protocol import encode_frame
from tests.helpers.server import TIMEOUT, ServerProcess, frame, raw_socket


def read_header(sock: socket.socket, buf: bytearray) -> dict[str, Any] | None:
    """The next frame's header (None when the server closed), reading into ``buf``."""
    while len(buf) < 8 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        try:
            chunk = sock.recv(65536)
        except (OSError, ssl.SSLError):
            return None
        if not chunk:
            return None
        buf += chunk
    body, hlen = struct.unpack(">II", buf[:8])
    header: dict[str, Any] = json.loads(buf[8 : 8 + hlen])
    del buf[: 4 + body]
    return header


@dataclass
class RawSharer:
    """A guest who logs in on the chat port and shares on the screen port, by hand: what
    it sends is up to the test (nothing here is checked but the framing)."""

    srv: ServerProcess
    name: str
    source: str | None = None
    rcvbuf: int | None = None  # the screen socket's receive buffer
    chat: socket.socket = field(init=False)
    screen: socket.socket = field(init=False)
    received: list[dict[str, Any]] = field(default_factory=list)  # screen port, in order
    _buf: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.chat = raw_socket(self.srv, self.srv.chat_port, source=self.source)
        self.chat.sendall(frame({"type": "hello", "v": 1, "user": self.name}))
        welcome = read_header(self.chat, bytearray())
        assert welcome is not None and welcome["type"] == "welcome", welcome
        self.screen = raw_socket(self.srv, self.srv.screen_port, source=self.source,
                                 rcvbuf=self.rcvbuf)
        self.screen.sendall(frame({"type": "hello", "v": 1, "token": welcome["token"]}))
        assert self.next()["type"] == "welcome"

    def next(self) -> dict[str, Any]:
        """The screen port's next frame header ({"type": "closed"} once closed)."""
        header = read_header(self.screen, self._buf) or {"type": "closed"}
        self.received.append(header)
        return header

    def send(self, data: bytes) -> bool:
        """Send everything; False once the server has closed the connection."""
        try:
            self.screen.sendall(data)
        except (OSError, ssl.SSLError):
            return False
        return True

    def share(self, w: int, h: int) -> dict[str, Any]:
        """Ask to share; the answer (``shared`` or an ``error``)."""
        self.send(frame({"type": "share", "w": w, "h": h}))
        while True:
            header = self.next()
            if header["type"] in ("shared", "error", "closed"):
                return header

    def key_frame(self, w: int, h: int, seq: int = 1, size: int = 3) -> bytes:
        """A key frame of one rectangle over the whole screen (``size`` bytes of it: the
        relay never decodes a picture)."""
        return encode_frame({"type": "frame", "seq": seq, "w": w, "h": h, "key": True,
                             "rects": [{"x": 0, "y": 0, "w": w, "h": h, "enc": "raw",
                                        "len": size}]}, bytes(size))

    def pending(self) -> list[dict[str, Any]]:
        """What the server sent that has arrived by now, without waiting."""
        out = []
        while select.select([self.screen], [], [], 0)[0] or self.screen_has_buffered():
            header = self.next()
            out.append(header)
            if header["type"] == "closed":
                break
        return out

    def screen_has_buffered(self) -> bool:
        sock = self.screen
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def outcome(self) -> list[dict[str, Any]]:
        """Everything the server sends until it closes the connection (bounded in time)."""
        deadline = time.monotonic() + TIMEOUT
        while self.received[-1:] != [{"type": "closed"}]:
            assert time.monotonic() < deadline, self.received[-5:]
            self.next()
        return self.received

    def close(self) -> None:
        for sock in (self.screen, self.chat):
            with contextlib.suppress(OSError):
                sock.close()


def fresh_pixels(w: int, h: int, seq: int, start: int, n: int, size: int,
                 cols: int | None = None) -> bytes:
    """A delta frame (of a ``w`` x ``h`` share) of ``n`` 1x1 ``raw`` rectangles at the pixels
    ``start`` to ``start + n`` of the screen's top left ``cols`` columns (default: all),
    rows top to bottom: none covers another, nor any sent before it from a lower
    ``start``, so a relay that only drops covered pieces keeps them all. Each claims
    ``size`` bytes."""
    cols = cols or w
    rects = [{"x": p % cols, "y": (p // cols) % h, "w": 1, "h": 1, "enc": "raw", "len": size}
             for p in range(start, start + n)]
    return encode_frame({"type": "frame", "seq": seq, "w": w, "h": h, "key": False,
                         "rects": rects}, bytes(n * size))


def spread_pixels(w: int, h: int, seq: int, start: int, n: int, size: int) -> bytes:
    """Like :func:`fresh_pixels`, but the ``n`` pixels are spread over the screen's 64x64
    tiles in turn (pixel ``p`` in tile ``p % tiles``), so that no tile gets many."""
    cols, tiles = -(-w // 64), -(-w // 64) * -(-h // 64)
    rects = []
    for p in range(start, start + n):
        t, j = p % tiles, (p // tiles) % 4096
        x, y = (t % cols) * 64 + j % 64, (t // cols) * 64 + j // 64
        rects.append({"x": min(x, w - 1), "y": min(y, h - 1), "w": 1, "h": 1, "enc": "raw",
                      "len": size})
    return encode_frame({"type": "frame", "seq": seq, "w": w, "h": h, "key": False,
                         "rects": rects}, bytes(n * size))


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")


async def round_trips(c: Client, n: int, room: str = "general") -> list[float]:
    """``n`` say -> echo round trips of a chat user, in seconds."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        echo = await c.say(room, f"rt {i}")
        out.append(time.perf_counter() - t0)
        assert echo["text"] == f"rt {i}"
    return out


async def round_trips_while(c: Client, busy: asyncio.Future[Any],
                            room: str = "general") -> list[float]:
    """say -> echo round trips, one after the other, until ``busy`` is done."""
    out = []
    while not busy.done():
        out.extend(await round_trips(c, 1, room))
    return out


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def p95_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return 1e3 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
