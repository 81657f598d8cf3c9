"""Fan-out behind a small interface: publish bytes to a topic, every subscriber gets them.

The in-process hub is the embedded default. A Redis hub (several server nodes) implements the
same three methods with PUBLISH/SUBSCRIBE and delivers to its local subscribers the same way.
Topics used by the chat service: ``room:NAME`` and ``user:NAME``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container
from typing import Protocol


class Sink(Protocol):
    def send_bytes(self, data: bytes) -> None:
        """Queue already-encoded frame bytes; must not block."""


class Fanout(Protocol):
    def subscribe(self, topic: str, sink: Sink) -> None: ...

    def unsubscribe(self, topic: str, sink: Sink) -> None: ...

    def is_subscribed(self, topic: str, sink: Sink) -> bool: ...

    def publish(self, topic: str, data: bytes, *, exclude: Container[Sink] = ()) -> int:
        """Deliver ``data`` (encoded once by the caller) to every subscriber; return how many."""


class LocalFanout:
    def __init__(self) -> None:
        self._topics: defaultdict[str, dict[Sink, None]] = defaultdict(dict)

    def subscribe(self, topic: str, sink: Sink) -> None:
        self._topics[topic][sink] = None

    def unsubscribe(self, topic: str, sink: Sink) -> None:
        subs = self._topics.get(topic)
        if subs is not None:
            subs.pop(sink, None)
            if not subs:
                del self._topics[topic]

    def is_subscribed(self, topic: str, sink: Sink) -> bool:
        return sink in self._topics.get(topic, ())

    def publish(self, topic: str, data: bytes, *, exclude: Container[Sink] = ()) -> int:
        subs = self._topics.get(topic)
        if not subs:
            return 0
        sinks = list(subs)  # a copy: a send may unsubscribe a too-slow sink
        if exclude:
            sinks = [s for s in sinks if s not in exclude]
        for sink in sinks:  # per recipient: nothing else in this loop
            sink.send_bytes(data)
        return len(sinks)

    def subscribers(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))
