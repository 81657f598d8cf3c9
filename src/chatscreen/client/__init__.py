"""The client library: asyncio API (:class:`Client`) and a thread-safe facade for GUI code."""

from chatscreen.client.screen import OutRect, ScreenChannel
from chatscreen.client.session import Client, status
from chatscreen.client.threaded import ThreadedClient

__all__ = ["Client", "OutRect", "ScreenChannel", "ThreadedClient", "status"]
