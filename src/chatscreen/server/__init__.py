"""The chatscreen server: asyncio, one process, chat and screen on two ports."""

from chatscreen.server.app import Server

__all__ = ["Server"]
