"""A slow link, at the reading end: read a socket at most so many bytes a second."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from chatscreen.protocol import FrameDecoder, Limits, Message
from chatscreen.protocol.schema import Rect

CHUNK = 4096  # bytes read at once at least (the budget is refilled until then)


def read_frames(sock: socket.socket, rate: Callable[[], float], stop: threading.Event,
                on_frame: Callable[[Message], None], burst: float = 16384.0) -> None:
    """Read ``sock`` at most ``rate()`` bytes a second (``burst`` at once at most) until
    ``stop`` is set, the connection ends or fails, passing every screen ``frame`` to
    ``on_frame``. With a small receive buffer on ``sock``, the sender sees a slow link."""
    decoder = FrameDecoder(Limits(max_frame=256 << 20, max_header=16 << 20))
    sock.settimeout(0.1)
    budget, last = 0.0, time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        budget, last = min(budget + (now - last) * rate(), burst), now
        if budget < CHUNK:
            stop.wait((CHUNK - budget) / rate())
            continue
        try:
            data = sock.recv(int(budget))
        except TimeoutError:
            continue
        except OSError:
            return
        if not data:
            return
        budget -= len(data)
        for f in decoder.feed(data):
            if f.header["type"] == "frame":
                rects = tuple(Rect(r["x"], r["y"], r["w"], r["h"], r["enc"], r["len"])
                              for r in f.header["rects"])
                on_frame(Message("frame", {**f.header, "rects": rects}, f.payload))
