"""A real sharer and a real viewer of its share, for tests that look at what the viewer sees."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chatscreen.client import Client, ScreenChannel
from chatscreen.screen.codec import Canvas
from chatscreen.screen.sharing import ShareStats, find_share, frame_rects, share_screen
from tests.helpers.server import TIMEOUT, ServerProcess


@dataclass
class Watched:
    sharer: Client
    watcher: Client
    stats: ShareStats
    share: dict[str, Any]
    screen: ScreenChannel
    canvas: Canvas


@contextlib.asynccontextmanager
async def watched_share(server: ServerProcess, sharer_name: str, watcher_name: str, *,
                        whole: bool = True, **share_options: Any) -> AsyncIterator[Watched]:
    """``sharer_name`` shares the screen of $DISPLAY (``share_screen(**share_options)``) and
    ``watcher_name`` watches it; yields once the viewer's picture is complete (``whole``),
    else as soon as it watches. Everything is stopped and closed on the way out."""
    sharer = await Client("127.0.0.1", sharer_name, chat_port=server.chat_port,
                          screen_port=server.screen_port, timeout=TIMEOUT).connect()
    watcher = await Client("127.0.0.1", watcher_name, chat_port=server.chat_port,
                           screen_port=server.screen_port, timeout=TIMEOUT).connect()
    stop = asyncio.Event()
    stats = ShareStats()
    task = asyncio.create_task(share_screen(sharer, stop, stats=stats, **share_options))
    screen = None
    try:
        share = await find_share(watcher, sharer_name, TIMEOUT)
        screen = await watcher.open_screen()
        await screen.watch(share["id"])
        canvas = Canvas(share["w"], share["h"])
        async with asyncio.timeout(3 * TIMEOUT):
            while whole and not canvas.complete:
                msg = await screen.next_frame()
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        yield Watched(sharer, watcher, stats, share, screen, canvas)
    finally:
        stop.set()
        await task
        if screen is not None:
            await screen.close()
        await sharer.close()
        await watcher.close()
