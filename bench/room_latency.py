"""A chat room under watch, for ``bench_files`` (not a benchmark itself): COUNT listeners and
one sender posting at a fixed rate; the latency of every delivery, send -> receive.

``python -m bench.room_latency PORT COUNT [--tls]`` connects COUNT listeners (and the sender
``pacer``) to 127.0.0.1:PORT (TLS without checking the certificate with ``--tls``: loopback,
the server made its own), joins them to ``general``, prints ``ready``, then obeys commands
on stdin, one a line:

* ``start RATE``: the sender posts RATE messages a second, on a fixed schedule (not one
  after the other: a slow server does not slow the sender), until ``stop``; answers ``ok``;
* ``stop``: stop sending, wait until every listener has every message (or nothing arrived
  for ``QUIET_S``), answer one JSON line: ``sent``, ``expected`` (sent x COUNT),
  ``delivered``, ``p50``/``p99``/``max`` (ms, over every delivery), and ``ms``: every
  delivery's latency (ms, to pool windows), ``worst``: the 10 messages slowest to reach
  their last listener, ``[sent at (monotonic), ms]``;
* ``quit`` (or end of input): disconnect and exit.

Each message's text is ``t=<time.monotonic() when it was written>`` (CLOCK_MONOTONIC: the same
clock in every process); a listener looks only at messages of that form and takes the clock
when the bytes are read, before anything else is done with them.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import sys
import time
from typing import Any

from bench.chat_listeners import FrameCounter
from chatscreen.protocol import PROTOCOL_VERSION, encode_frame

HOST = "127.0.0.1"
ROOM = "general"
QUIET_S = 2.0
CONNECT_TIMEOUT_S = 30.0
MARK = b'"text":"t='


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Room:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # seconds, one per delivery
        self.sent_at: list[float] = []  # when each delivered message was sent (monotonic)
        self.sent = 0


async def connect(port: int, tls: ssl.SSLContext | None, name: str
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port, ssl=tls)
    writer.write(encode_frame({"type": "hello", "v": PROTOCOL_VERSION, "client": "bench",
                               "user": name}))
    return reader, writer


async def listener(port: int, tls: ssl.SSLContext | None, name: str, room: Room,
                   joined: asyncio.Event) -> None:
    reader, writer = await connect(port, tls, name)
    frames = FrameCounter()
    try:
        while True:
            data = await reader.read(1 << 18)
            now = time.monotonic()
            if not data:
                return
            for header in frames.feed(data):
                if MARK in header and b'"type":"message"' in header:
                    text = json.loads(header)["text"]
                    sent = float(text[2:])
                    room.latencies.append(now - sent)
                    room.sent_at.append(sent)
                elif b'"type":"welcome"' in header:
                    writer.write(encode_frame({"type": "join", "room": ROOM}))
                elif b'"type":"joined"' in header:
                    joined.set()
                elif b'"type":"ping"' in header:
                    writer.write(encode_frame({"type": "pong"}))
                elif b'"type":"error"' in header:
                    print(f"{name}: {header.decode(errors='replace')}", file=sys.stderr)
    finally:
        writer.close()


class Sender:
    """``pacer``: posts ``t=...`` messages on a fixed schedule."""

    def __init__(self, port: int, tls: ssl.SSLContext | None, room: Room) -> None:
        self.port, self.tls, self.room = port, tls, room
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None

    async def open(self, joined: asyncio.Event) -> None:
        reader, self.writer = await connect(self.port, self.tls, "pacer")
        self._drain = asyncio.create_task(self._read(reader, joined))

    async def _read(self, reader: asyncio.StreamReader, joined: asyncio.Event) -> None:
        frames = FrameCounter()
        assert self.writer is not None
        while data := await reader.read(1 << 18):
            for header in frames.feed(data):
                if b'"type":"welcome"' in header:
                    self.writer.write(encode_frame({"type": "join", "room": ROOM}))
                elif b'"type":"joined"' in header:
                    joined.set()
                elif b'"type":"ping"' in header:
                    self.writer.write(encode_frame({"type": "pong"}))
                elif b'"type":"error"' in header:
                    print(f"pacer: {header.decode(errors='replace')}", file=sys.stderr)

    def start(self, rate: float) -> None:
        self.task = asyncio.create_task(self._send(rate))

    async def _send(self, rate: float) -> None:
        assert self.writer is not None
        t0 = time.monotonic()
        i = 0
        while True:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule, not a wait for something
            self.writer.write(encode_frame({"type": "say", "room": ROOM,
                                            "text": f"t={time.monotonic():.6f}"}))
            self.room.sent += 1
            i += 1

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


def worst(room: Room, n: int) -> list[tuple[float, float]]:
    """The ``n`` messages slowest to reach their last listener: (sent at, ms)."""
    slowest: dict[float, float] = {}
    for sent, lat in zip(room.sent_at, room.latencies, strict=True):
        slowest[sent] = max(slowest.get(sent, 0.0), lat)
    ranked = sorted(slowest.items(), key=lambda kv: -kv[1])[:n]
    return [(sent, round(lat * 1e3, 1)) for sent, lat in ranked]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def settle(room: Room, expected: int) -> None:
    last, since = -1, time.monotonic()
    while len(room.latencies) < expected:
        if len(room.latencies) != last:
            last, since = len(room.latencies), time.monotonic()
        elif time.monotonic() - since > QUIET_S:
            return
        await asyncio.sleep(0.01)


async def run(port: int, count: int, tls: ssl.SSLContext | None) -> int:
    room = Room()
    joined = [asyncio.Event() for _ in range(count + 1)]
    tasks = [asyncio.create_task(listener(port, tls, f"listener{i}", room, joined[i]))
             for i in range(count)]
    sender = Sender(port, tls, room)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await sender.open(joined[count])
            await asyncio.gather(*(e.wait() for e in joined))
        print("ready", flush=True)
        while True:
            words = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not words or words[0] == "quit":
                return 0
            if words[0] == "start":
                room.latencies, room.sent_at, room.sent = [], [], 0
                sender.start(float(words[1]))
                print("ok", flush=True)
            elif words[0] == "stop":
                await sender.stop()
                expected = room.sent * count
                await settle(room, expected)
                lat = room.latencies
                answer: dict[str, Any] = {
                    "sent": room.sent, "expected": expected, "delivered": len(lat),
                    "p50": percentile(lat, 0.50) * 1e3, "p99": percentile(lat, 0.99) * 1e3,
                    "max": max(lat, default=math.nan) * 1e3,
                    "ms": [round(v * 1e3, 3) for v in lat],
                    "worst": worst(room, 10)}
                print(json.dumps(answer), flush=True)
            dead = [t for t in tasks if t.done()]
            if dead:
                print(f"{len(dead)} listener(s) disconnected", file=sys.stderr)
    finally:
        await sender.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    tls = tls_context() if "--tls" in sys.argv[3:] else None
    return asyncio.run(run(port, count, tls))


if __name__ == "__main__":
    sys.exit(main())
