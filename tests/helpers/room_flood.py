"""The room flood: many guest connections from one address creating rooms, in a process of
its own (so that what it costs is not counted against the user measured beside it).

``python -m tests.helpers.room_flood --port P [--source 127.0.0.2] [--connections 4]
[--duration 2] [--rate R] [--no-tls] [--prefix f]`` logs in ``connections`` guests from
``source`` and has each send ``join`` for a new room name, over and over, for ``duration``
seconds: as fast as the server reads them, or ``rate`` requests a second per connection
(paced: an attacker who keeps under the per-connection rate limit). It prints one JSON line
once started (``{"started": n}``: every connection logged in) and one at the end:
``{"sent", "joined", "errors": {code: count}, "fatal": [codes], "open"}``: requests sent,
rooms joined, the non-fatal errors, the fatal ones (connections the server closed), and how
many connections were still open at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from chatscreen.protocol import encode_frame

_PREFIX = struct.Struct(">II")


@dataclass
class Tally:
    sent: int = 0
    joined: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    fatal: list[str] = field(default_factory=list)
    open: int = 0


async def _read(reader: asyncio.StreamReader, tally: Tally, welcomed: asyncio.Event) -> None:
    """Count what the server answers, until it closes."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        while True:
            body, hlen = _PREFIX.unpack(await reader.readexactly(8))
            data = await reader.readexactly(body - 4)
            header = json.loads(data[:hlen])
            kind = header.get("type")
            if kind == "welcome":
                welcomed.set()
            elif kind == "joined":
                tally.joined += 1
            elif kind == "error":
                if header.get("fatal"):
                    tally.fatal.append(header["code"])
                    return
                tally.errors[header["code"]] += 1


async def _flood(n: int, args: argparse.Namespace, tally: Tally, started: asyncio.Event,
                 go: asyncio.Event, ready: list[int]) -> None:
    ctx: ssl.SSLContext | None = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        args.host, args.port, ssl=ctx, local_addr=(args.source, 0) if args.source else None)
    welcomed = asyncio.Event()
    reading = asyncio.create_task(_read(reader, tally, welcomed))
    writer.write(encode_frame({"type": "hello", "v": 1, "user": f"{args.prefix}{n}"}))
    await welcomed.wait()
    ready.append(n)
    if len(ready) == args.connections:
        started.set()
    await go.wait()
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + args.duration
    i = 0
    try:
        while loop.time() < end and not reading.done():
            batch = 1 if args.rate else 16
            writer.write(b"".join(encode_frame({"type": "join",
                                                "room": f"{args.prefix}{n}r{i + k}"})
                                  for k in range(batch)))
            i += batch
            tally.sent += batch
            if args.rate:
                await asyncio.sleep(max(0.0, start + i / args.rate - loop.time()))
            else:
                await asyncio.wait_for(writer.drain(), max(0.01, end - loop.time()))
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    if not reading.done():
        tally.open += 1
    reading.cancel()
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def main(args: argparse.Namespace) -> Tally:
    tally = Tally()
    started, go, ready = asyncio.Event(), asyncio.Event(), list[int]()
    tasks = [asyncio.create_task(_flood(n, args, tally, started, go, ready))
             for n in range(args.connections)]
    await asyncio.wait_for(started.wait(), 30)
    print(json.dumps({"started": len(ready)}), flush=True)
    sys.stdin.readline()  # the controller says go (an empty line), once it has its baseline
    t0 = time.monotonic()
    go.set()
    await asyncio.gather(*tasks)
    tally.open = min(tally.open, args.connections)
    print(json.dumps({"sent": tally.sent, "joined": tally.joined, "errors": tally.errors,
                      "fatal": tally.fatal, "open": tally.open,
                      "elapsed": time.monotonic() - t0}), flush=True)
    return tally


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", default="127.0.0.2")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=0.0, help="per connection; 0: as fast as read")
    p.add_argument("--prefix", default="f")
    p.add_argument("--no-tls", dest="tls", action="store_false")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
