"""A thread-safe facade over :class:`Client` for GUI code (Tkinter and friends).

The client's event loop runs in its own thread. Calls return ``concurrent.futures.Future``
objects; events land in a thread-safe queue that the GUI polls from its main loop (for Tk:
``root.after``), so widgets are only ever touched on the GUI thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from chatscreen.client.session import Client
from chatscreen.protocol import Message

T = TypeVar("T")


class ThreadedClient:
    def __init__(self, host: str, user: str, **kwargs: Any) -> None:
        self.events: queue.Queue[Message] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chatscreen-net",
                                        daemon=True)
        self._thread.start()
        self.client: Client = self.run(self._make(host, user, kwargs)).result()
        self._pump: Future[None] | None = None

    @staticmethod
    async def _make(host: str, user: str, kwargs: dict[str, Any]) -> Client:
        return Client(host, user, **kwargs)

    def run(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run a coroutine on the network thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, fn: Callable[[Client], Coroutine[Any, Any, T]]) -> Future[T]:
        return self.run(fn(self.client))

    def connect(self) -> Future[Client]:
        fut = self.run(self.client.connect())
        self._pump = self.run(self._forward())
        return fut

    async def _forward(self) -> None:
        async for event in self.client.events():
            self.events.put(event)

    def shutdown(self) -> Future[None]:
        """Disconnect and stop the network thread, without blocking the caller."""
        return self.run(self._shutdown())

    async def _shutdown(self) -> None:
        try:
            await self.client.close()
        finally:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            asyncio.get_running_loop().call_soon(self._loop.stop)

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect, stop the network thread and wait for it."""
        try:
            self.shutdown().result(timeout)
        finally:
            if self._loop.is_running():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()
