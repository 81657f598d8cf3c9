"""The chatscreen server: asyncio, one process, chat and screen on two ports."""

from chatscreen.server.app import Server, run_server

__all__ = ["Server", "run_server"]
