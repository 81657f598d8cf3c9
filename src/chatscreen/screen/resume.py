"""Sharing and watching a screen that carry on by themselves after a reconnect.

The chat connection of a :class:`~chatscreen.client.Client` reconnects on its own. A screen
connection presents the chat session's token, so when the chat connection is lost (a server
restart, a network cut) the screen connection dies with it. These wrappers wait for the
client to log in again and then pick up where they were:

* :func:`keep_sharing` shares again with the same settings; the first frame is a key frame
  (a new share starts from a complete picture), so viewers need nothing from before.
* :func:`keep_watching` watches the same user's share again. After a server restart its id
  is new: it waits (up to ``reshare_wait``) until that user shares again.

Either ends for good when the client gives up (closed, or refused for good), when the sharer
stops sharing, or when ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chatscreen.client import Client, ScreenChannel
from chatscreen.errors import ChatscreenError, ConnectError, ServerError
from chatscreen.protocol import Message
from chatscreen.screen.sharing import ShareStats, share_screen

log = logging.getLogger("chatscreen.screen.resume")

RESHARE_WAIT = 30.0  # seconds a watcher waits for the sharer to share again after a reconnect
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # a screen port that fails while chat works: backoff


class RecordRefused(ChatscreenError):
    """The server would not let us record a share (its sharer did not allow it)."""


async def _back_in(client: Client, delay: float) -> bool:
    """After a lost screen connection: wait for the chat login again (and, when the chat
    never went away, ``delay``); False if the client gave up."""
    if not client.connected:
        return await client.wait_connected()
    await asyncio.sleep(delay)  # the screen port failed on its own: do not hammer it
    return client.connected or await client.wait_connected()


async def keep_sharing(client: Client, stop: asyncio.Event, *,
                       stats: ShareStats | None = None, **options: Any) -> ShareStats:
    """:func:`~chatscreen.screen.sharing.share_screen` until ``stop`` is set, started again after
    every reconnect. ``options`` are share_screen's (monitor, fps, viewers, room ...)."""
    stats = stats or ShareStats()
    delay = RETRY_FIRST
    while True:
        try:
            return await share_screen(client, stop, stats=stats, **options)
        except (ConnectionResetError, ConnectError) as exc:
            if stop.is_set():
                return stats
            log.info("screen connection lost (%s): sharing again once back", exc)
            if not await _back_in(client, delay):
                raise
            delay = min(delay * 2, RETRY_MAX) if client.connected else RETRY_FIRST


async def keep_watching(client: Client, share: dict[str, Any],
                        handle: Callable[[Message, ScreenChannel], Awaitable[None]], *,
                        reshare_wait: float = RESHARE_WAIT,
                        cursor_messages: bool = False, record: bool = False) -> str:
    """Watch ``share``, giving each of its frames (and, with ``cursor_messages``, its
    ``cursor`` messages) to ``handle`` with the screen connection they came on; after a
    reconnect, watch the same user's share again. Returns why it ended ("alice stopped
    sharing", or the reason the connection was lost for good). ``record``: tell the server
    we record it (each time we watch); :class:`RecordRefused` if it does not let us."""
    user = share["user"]
    delay = RETRY_FIRST
    while True:
        screen: ScreenChannel | None = None
        try:
            screen = await client.open_screen()
            screen.cursor_messages = cursor_messages
            await screen.watch(share["id"])
            if record:
                try:
                    await screen.record(share["id"])
                except ServerError as exc:
                    if exc.code == "forbidden":
                        raise RecordRefused(exc.message) from None
                    raise
            delay = RETRY_FIRST
            while True:
                msg = await screen.next_frame()
                if msg["share"] != share["id"]:
                    continue
                if msg.type == "unshared":
                    return f"{user} stopped sharing"
                await handle(msg, screen)
        except ServerError as exc:  # the share is gone, or no longer for us
            return exc.message
        except (ConnectionResetError, ConnectError) as exc:
            reason = str(exc)
        finally:
            if screen is not None:
                await screen.close()
        log.info("lost %s's screen (%s): watching again once back", user, reason)
        if not await _back_in(client, delay):
            return reason
        delay = min(delay * 2, RETRY_MAX)
        try:
            share = await client.wait_share(user, reshare_wait)
        except TimeoutError:
            return f"{user} stopped sharing"
