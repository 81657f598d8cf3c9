"""Sharing and viewing a screen over a client's screen connection.

The sharer captures and encodes on one dedicated thread (mss handles are per thread) at a
steady cadence that skips missed ticks instead of bursting, and sends a frame only when the
picture changed or a viewer asked for a key frame. ``send_frame`` waits for the socket to
drain, so a slow uplink lowers the frame rate instead of building a backlog.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chatscreen.capture import ScreenCapture
from chatscreen.client import Client, OutRect, ScreenChannel
from chatscreen.codec import DEFAULT_QUALITY, Canvas, encode_jpeg, fit_within
from chatscreen.protocol import Message

DEFAULT_FPS = 15.0


@dataclass
class ShareStats:
    frames: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        secs = max(time.monotonic() - self.started, 1e-9)
        return (f"sent {self.frames} frames in {secs:.1f} s: {self.frames / secs:.1f} frames/s, "
                f"{self.bytes / secs / 1000:.0f} kB/s")


class _Grabber:
    """Lives on the capture thread."""

    def __init__(self, monitor: int, quality: int, max_size: tuple[int, int] | None) -> None:
        self.capture = ScreenCapture(monitor)
        self.quality = quality
        self.max_size = max_size
        self._last: Any = None

    def grab(self, force: bool) -> tuple[int, int, bytes] | None:
        img = self.capture.grab()
        if not force and self._last is not None and np.array_equal(img, self._last):
            return None  # nothing changed: send nothing
        self._last = img.copy()
        if self.max_size is not None:
            img = fit_within(img, *self.max_size)
        h, w = img.shape[:2]
        return w, h, encode_jpeg(img, self.quality)


async def share_screen(client: Client, stop: asyncio.Event, *, monitor: int = 1,
                       fps: float = DEFAULT_FPS, quality: int = DEFAULT_QUALITY,
                       max_size: tuple[int, int] | None = None,
                       stats: ShareStats | None = None,
                       on_started: Any = None) -> ShareStats:
    stats = stats or ShareStats()
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture")
    grabber: _Grabber = await loop.run_in_executor(pool, _Grabber, monitor, quality, max_size)
    screen: ScreenChannel = await client.open_screen()
    try:
        first = await loop.run_in_executor(pool, grabber.grab, True)
        assert first is not None
        w, h, data = first
        await screen.share(w, h)
        if on_started is not None:
            on_started(w, h)
        period = 1.0 / fps
        next_tick = time.monotonic()
        while True:
            await screen.send_frame(w, h, [OutRect(0, 0, w, h, "jpeg", data)], key=True)
            stats.frames += 1
            stats.bytes += len(data)
            while True:
                next_tick += period
                now = time.monotonic()
                if next_tick < now:
                    next_tick = now  # skip missed ticks, don't burst
                try:
                    await asyncio.wait_for(stop.wait(), next_tick - now)
                    return stats
                except TimeoutError:
                    pass
                if screen.closed.is_set():
                    raise ConnectionResetError(str(screen.link.close_reason or "closed"))
                grabbed = await loop.run_in_executor(pool, grabber.grab,
                                                     screen.key_requested.is_set())
                if grabbed is not None:
                    w, h, data = grabbed
                    break
    finally:
        await screen.close()
        await loop.run_in_executor(pool, grabber.capture.close)
        pool.shutdown(wait=False)


def frame_rects(msg: Message) -> list[tuple[int, int, int, int, str, bytes]]:
    """Split a frame's payload into its rectangles."""
    out = []
    offset = 0
    payload = msg.payload
    for r in msg["rects"]:
        out.append((r.x, r.y, r.w, r.h, r.enc, payload[offset : offset + r.len]))
        offset += r.len
    return out


async def find_share(client: Client, user: str | None, timeout: float) -> dict[str, Any]:
    """Wait until a share (of ``user``, or any) is announced."""
    async with asyncio.timeout(timeout):
        while True:
            share = client.share_of(user) if user else (client.shares[0] if client.shares
                                                        else None)
            if share is not None:
                return share
            await client.next_event()


async def snapshot(client: Client, user: str | None, timeout: float = 30.0) -> Canvas:
    """Watch a share until a complete picture has arrived; return it."""
    share = await find_share(client, user, timeout)
    screen = await client.open_screen()
    try:
        await screen.watch(share["id"])
        canvas = Canvas(share["w"], share["h"])
        async with asyncio.timeout(timeout):
            while not canvas.complete:
                msg = await screen.next_frame()
                if msg.type == "unshared" and msg["share"] == share["id"]:
                    raise ConnectionResetError(f"{share['user']} stopped sharing")
                if msg.type == "frame" and msg["share"] == share["id"]:
                    canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        return canvas
    finally:
        await screen.close()
