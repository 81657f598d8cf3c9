"""Many listening chat clients in one process, for ``bench_chat`` (not a benchmark itself).

``python -m bench.chat_listeners SYSTEM PORT COUNT`` (SYSTEM: ``chatscreen`` or ``original``)
connects COUNT clients to 127.0.0.1:PORT, joins them to the room ``general``, prints ``ready``,
then obeys commands on stdin, one a line, answering on stdout:

* ``reset``: zero the counters; answers ``ok``;
* ``wait N TIMEOUT``: wait until every listener has received N chat messages since the reset,
  or until TIMEOUT seconds, or until nothing arrived for ``QUIET_S``; answers one JSON line
  ``{"min": ..., "total": ..., "done_at": ...}`` where ``done_at`` is the ``time.monotonic()``
  (CLOCK_MONOTONIC, the same in every process) when the last listener reached N, or of the
  last delivery if some never did;
* ``quit`` (or end of input): disconnect and exit.

Listeners count frames without decoding them fully (chatscreen: length prefix and a look at
the JSON header; original: a streaming unpickler, since its chat has no framing at all), so
that this process costs as little CPU as possible: what is measured is the server.
"""

from __future__ import annotations

import asyncio
import io
import json
import pickle
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from chatscreen.protocol import PROTOCOL_VERSION, encode_frame

HOST = "127.0.0.1"
ROOM = "general"
QUIET_S = 1.0
CONNECT_TIMEOUT_S = 20.0
_U32 = struct.Struct(">I")


class Listener:
    def __init__(self) -> None:
        self.count = 0
        self.target: int | None = None
        self.reached_at: float | None = None
        self.last_at = 0.0

    def delivered(self, n: int) -> None:
        now = time.monotonic()
        self.count += n
        self.last_at = now
        if self.target is not None and self.reached_at is None and self.count >= self.target:
            self.reached_at = now

    def reset(self) -> None:
        self.count, self.target, self.reached_at, self.last_at = 0, None, None, 0.0


# -- chatscreen: u32 body length | u32 header length | JSON header | payload ---------------


class FrameCounter:
    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Append data; return the headers of the complete frames."""
        self.buf += data
        headers = []
        pos, buf = 0, self.buf
        while len(buf) - pos >= 8:
            (need,) = _U32.unpack_from(buf, pos)
            if len(buf) - pos < 4 + need:
                break
            (hlen,) = _U32.unpack_from(buf, pos + 4)
            headers.append(bytes(buf[pos + 8 : pos + 8 + hlen]))
            pos += 4 + need
        del buf[:pos]
        return headers


async def chatscreen_listener(port: int, name: str, me: Listener,
                              joined: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(encode_frame({"type": "hello", "v": PROTOCOL_VERSION, "client": "bench",
                               "user": name}))
    frames = FrameCounter()  # the protocol wants the welcome before anything else is sent
    try:
        while True:
            data = await reader.read(1 << 18)
            if not data:
                return
            n = 0
            for header in frames.feed(data):
                if b'"type":"message"' in header:
                    n += 1
                elif b'"type":"welcome"' in header:
                    writer.write(encode_frame({"type": "join", "room": ROOM}))
                elif b'"type":"joined"' in header:
                    joined.set()
                elif b'"type":"ping"' in header:
                    writer.write(encode_frame({"type": "pong"}))
                elif b'"type":"error"' in header:
                    print(f"{name}: {header.decode(errors='replace')}", file=sys.stderr)
            if n:
                me.delivered(n)
    finally:
        writer.close()


# -- the original: pickled dicts back to back, no framing --------------------------------


async def original_listener(port: int, name: str, me: Listener, joined: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(pickle.dumps({"type": "join", "username": name}))
    buf = b""
    try:
        while True:
            data = await reader.read(1 << 18)
            if not data:
                return
            stream = io.BytesIO(buf + data)
            good, n = 0, 0
            while True:
                try:
                    msg = pickle.load(stream)  # INSECURE: the original's design
                except Exception:  # truncated: wait for more
                    break
                good = stream.tell()
                if msg.get("type") == "message":
                    n += 1
                elif msg.get("type") == "system" and msg.get("message") == f"{name} joined":
                    joined.set()
            buf = stream.getvalue()[good:]
            if n:
                me.delivered(n)
    finally:
        writer.close()


# -- driver ------------------------------------------------------------------------------


async def wait_for(listeners: list[Listener], target: int, timeout: float) -> dict[str, float]:
    for li in listeners:
        li.target = target
        if li.count >= target and li.reached_at is None:
            li.reached_at = time.monotonic()
    deadline = time.monotonic() + timeout
    last_total, last_change = -1, time.monotonic()
    while True:
        now = time.monotonic()
        total = sum(li.count for li in listeners)
        if total != last_total:
            last_total, last_change = total, now
        if all(li.reached_at is not None for li in listeners):
            break
        if now >= deadline or now - last_change >= QUIET_S:
            break
        await asyncio.sleep(0.002)
    reached = [li.reached_at for li in listeners]
    done_at = (max(r for r in reached if r is not None) if all(r is not None for r in reached)
               else max(li.last_at for li in listeners))
    return {"min": min(li.count for li in listeners), "total": sum(li.count for li in listeners),
            "done_at": done_at}


async def run(system: str, port: int, count: int) -> int:
    connect: Callable[[int, str, Listener, asyncio.Event], Coroutine[Any, Any, None]] = (
        chatscreen_listener if system == "chatscreen" else original_listener)
    listeners = [Listener() for _ in range(count)]
    joined = [asyncio.Event() for _ in range(count)]
    tasks = [asyncio.create_task(connect(port, f"listener{i}", listeners[i], joined[i]))
             for i in range(count)]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.gather(*(e.wait() for e in joined))
        print("ready", flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "quit":
                return 0
            if words[0] == "reset":
                for li in listeners:
                    li.reset()
                print("ok", flush=True)
            elif words[0] == "wait":
                result = await wait_for(listeners, int(words[1]), float(words[2]))
                print(json.dumps(result), flush=True)
            dead = [t for t in tasks if t.done()]
            if dead:
                print(f"{len(dead)} listener(s) disconnected", file=sys.stderr)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    system, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if system not in ("chatscreen", "original"):
        print("SYSTEM is chatscreen or original", file=sys.stderr)
        return 2
    return asyncio.run(run(system, port, count))


if __name__ == "__main__":
    sys.exit(main())
