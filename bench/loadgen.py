"""A chat load generator: many clients in one process, driven by ``bench.bench_load``.

``python -m bench.loadgen`` reads one JSON command a line on stdin and answers each with one
JSON line on stdout (nothing else is ever printed there). It speaks both the chatscreen chat
protocol and the original's (pickled dicts, no framing; ``bench.baseline_original``), only
to 127.0.0.1. Commands (times are ``time.monotonic()`` seconds: CLOCK_MONOTONIC, the same
clock in every process on the machine, so workers and the controller agree on them):

* ``{"op": "connect", "system", "port", "tls", "room", "names", "probes", "start_at",
  "timeout"}``:
  at ``start_at`` open one connection per name, all at once; each sends its login and its
  join straight away (chatscreen: ``hello`` + ``join`` pipelined, as the protocol allows;
  original: the pickled ``join``). Answers when every client has joined (chatscreen: its
  ``joined`` frame arrived; original: its own "NAME joined" broadcast arrived) or at the
  timeout: ``{"joined", "join_s": [seconds from start_at, one per joined client], "failed",
  "retries"}``. A client the server refuses with "try again" (``too_many_connections`` while
  too many logins are in progress), or whose connection is refused or reset, retries as the
  client library does (backoff from 0.5 s, doubling, full jitter: a wait in [0, backoff]).
  ``tls``: connect with TLS (chatscreen's default; the certificate is not checked).
  ``probes``: indices of the clients that also read send timestamps (latency).
* ``{"op": "run", "rate", "start_at", "duration", "bucket", "drain", "quiet", "stall"}``:
  from ``start_at`` for ``duration`` seconds, send ``rate`` messages/s in all, round robin
  over this process's clients; then keep counting for up to ``drain`` s, stopping once
  nothing arrived for ``quiet`` s. ``stall``: ``[seconds after start_at, client index]``:
  that client stops reading (``pause_reading``) and sending at that moment. Answers
  ``{"buckets": [[t, delivered, sent, cpu_s]...], "stamps": [[send_ms, latency_us]...],
  "lost", "sent", "max_backlog"}``: cumulative counters at every ``bucket`` boundary (``t``
  from ``start_at``; a stalled client's deliveries stop counting when it stalls), the probes'
  latencies (send time from ``start_at``), and how many clients lost their connection.
* ``{"op": "resume", "timeout"}``: the stalled clients read again; answers, for each, what
  they had received before the stall and after, whether a ``too_slow`` error came, and
  whether (and when) the connection was closed.
* ``{"op": "close", "timeout"}``: close every connection; answers once all are closed.
* ``{"op": "quit"}``.

Efficiency (what is measured must be the server): asyncio Protocols on uvloop, no streams.
A delivery is counted with one ``bytes.count`` of the message marker per received chunk, in
C, at ~2.5 GB/s: ``"type":"message"`` for chatscreen (it can only occur as a frame's type:
inside a JSON string a quote is always escaped, and the chat port carries no binary
payload), the pickled ``'type': 'message'`` pair for the original. A marker split across two
reads is caught with the last 15 bytes of the previous read. Walking the length prefixes
frame by frame in Python costs ~600 ns a frame on this machine (measured), eight times
more: at 1.5 M deliveries/s it would take a whole core. Latency: every sender puts
``time.monotonic_ns()`` in its text (``t=<19 digits> ...``); only the probe clients look for
it (a regex over the chunk), so JSON is never decoded.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import pickle
import random
import re
import resource
import socket
import ssl
import struct
import sys
import time
from datetime import datetime
from typing import Any

from chatscreen.cli import raise_open_files_limit

HOST = "127.0.0.1"  # never anything else
MARKS = {"chatscreen": b'"type":"message"', "original": b"\x8c\x04type\x94\x8c\x07message\x94"}
TAIL = 15  # every marker is 16 bytes: keep 15 to find one split across two reads
STAMP = re.compile(rb"t=(\d{19})")
STAMP_KEEP = 20  # a stamp is 21 bytes: one cut at the end of a read starts in the last 20
PAD = "abcdefghijklmnopqrstuvwxyz0123456789"  # text: ~60 characters in all
TOO_SLOW = b"too_slow"
HEADER = struct.Struct(">II")
PING = (lambda h: HEADER.pack(len(h) + 4, len(h)) + h)(b'{"type":"ping"}')
KEEPALIVE_S = 10.0  # chatscreen pings after 15 s of silence: speak before that
MAX_STAMPS = 150_000  # per run and process, subsampled beyond that
MAX_CLIENTS = 20_000
MAX_TICKS = 2_000_000  # bound on any loop that waits in small steps
TICK_S = 0.001
BACKOFF_FIRST_S = 0.5  # chatscreen.client.session's reconnect policy
BACKOFF_MAX_S = 15.0
MAX_ATTEMPTS = 8
MAX_RUN_S = 120.0


M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc malloc.h)
M_MMAP_THRESHOLD = -3


def tune_malloc() -> None:
    """Serve 256 KiB allocations from the heap instead of fresh mmaps. uvloop's TLS reads
    ask ``SSLObject.read`` for up to 256 KiB a time, which allocates that much and shrinks it
    to what was read: with glibc's default threshold (128 KiB) that is an mmap, an mremap and
    a munmap per read, a third of this process's time at 40,000 TLS reads/s (py-spy)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Client(asyncio.Protocol):
    """One chat connection: logs in, joins, counts message frames, sends when told."""

    def __init__(self, gen: Generator, system: str, name: str, room: str, probe: bool) -> None:
        self.gen = gen
        self.system = system
        self.name = name
        self.room = room
        self.probe = probe
        self.mark = MARKS[system]
        if system == "chatscreen":
            self.join_mark = b'"type":"joined"'
        else:  # the pickled "NAME joined" string of the server's system message
            text = f"{name} joined".encode()
            self.join_mark = b"\x8c" + bytes([len(text)]) + text
        self.transport: asyncio.Transport | None = None
        self.joined_ns = 0
        self.pre = b""  # what came before our own join was confirmed
        self.tail = b""
        self.rest = b""  # probe: the end of the stream not yet searched for stamps
        self.n = 0  # message frames received since joining
        self.counted = True  # its deliveries are in the totals (not when stalled)
        self.sending = True
        self.stalled_at_ns = 0
        self.n_at_stall = 0
        self.watch_slow = False  # look for a too_slow error (the stalled client, resumed)
        self.saw_too_slow = False
        self.lost_ns = 0
        self.lost_reason = ""
        self.failed = ""
        self.cid = 0
        self.last_write = 0.0
        # done once joined, refused or closed
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _settle(self) -> None:
        if not self.settled.done():
            self.settled.set_result(None)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = transport  # type: ignore[assignment]
        assert self.transport is not None
        if self.system == "chatscreen":
            hello = json.dumps({"type": "hello", "v": 1, "user": self.name,
                                "client": "loadgen"}, separators=(",", ":")).encode()
            join = json.dumps({"type": "join", "room": self.room},
                              separators=(",", ":")).encode()
            self.transport.write(HEADER.pack(len(hello) + 4, len(hello)) + hello
                                 + HEADER.pack(len(join) + 4, len(join)) + join)
        else:
            sock = t.get_extra_info("socket")
            if sock is not None:  # the original's clients: a plain socket, Nagle on
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            self.transport.write(pickle.dumps({"type": "join", "username": self.name}))
        self.last_write = time.monotonic()

    def data_received(self, data: bytes) -> None:
        if not self.joined_ns:
            self._before_join(data)
            return
        tail = self.tail
        k = data.count(self.mark)
        if tail:
            k += (tail + data[:TAIL]).count(self.mark)
        if self.watch_slow and not self.saw_too_slow:
            self.saw_too_slow = TOO_SLOW in tail + data
        self.tail = data[-TAIL:] if len(data) >= TAIL else (tail + data)[-TAIL:]
        self.n += k
        if self.probe and self.gen.recording:
            self._stamps(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_ns = time.monotonic_ns()
        self.lost_reason = repr(exc) if exc else "closed by the server"
        if not self.joined_ns and not self.failed:
            self.failed = f"connect: closed ({self.lost_reason})"
        self._settle()

    # -- internals ---------------------------------------------------------------------

    def _before_join(self, data: bytes) -> None:
        buf = self.pre + data
        at = buf.find(self.join_mark)
        if at < 0:
            if self.system == "chatscreen" and b'"type":"error"' in buf:
                self.failed = buf[-300:].decode("utf-8", "replace")
                self._settle()
            self.pre = buf[-300:]  # enough for a marker cut in two, or an error's text
            return
        self.joined_ns = time.monotonic_ns()
        self._settle()
        rest = buf[at + len(self.join_mark):]
        self.pre = b""
        self.tail = b""
        self.data_received(rest)  # anything after the confirmation counts as usual
        self.n = 0  # but what arrived with it (history) is not a delivery of ours

    def _stamps(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buf = self.rest + data
        end = 0
        out = self.gen.stamps
        for m in STAMP.finditer(buf):
            out.append((int(m.group(1)), now))
            end = m.end()
        self.rest = buf[max(end, len(buf) - STAMP_KEEP):]

    def say(self) -> None:
        t = self.transport
        if t is None or self.lost_ns:
            return
        ns = time.monotonic_ns()
        if self.system == "chatscreen":
            self.cid += 1
            h = b'{"type":"say","room":"%s","text":"t=%019d %s","cid":"%d"}' % (
                self.room.encode(), ns, PAD.encode(), self.cid)
            t.write(HEADER.pack(len(h) + 4, len(h)) + h)
        else:  # exactly the original client's message
            t.write(pickle.dumps({"type": "message", "username": self.name,
                                  "message": f"t={ns:019d} {PAD}",
                                  "timestamp": datetime.now().strftime("%H:%M:%S")}))
        self.last_write = time.monotonic()

    def keepalive(self, now: float) -> None:
        if (self.system == "chatscreen" and self.transport is not None and not self.lost_ns
                and not self.stalled_at_ns and now - self.last_write > KEEPALIVE_S):
            self.transport.write(PING)
            self.last_write = now

    def stall(self) -> None:
        self.stalled_at_ns = time.monotonic_ns()
        self.n_at_stall = self.n
        self.counted = False
        self.sending = False
        if self.transport is not None and not self.lost_ns:
            self.transport.pause_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Generator:
    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.stamps: list[tuple[int, int]] = []
        self.recording = False
        self.port = 0

    # -- commands ----------------------------------------------------------------------

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        system, room, port = str(cmd["system"]), str(cmd["room"]), int(cmd["port"])
        names: list[str] = list(cmd["names"])[: MAX_CLIENTS - len(self.clients)]
        probes = set(cmd.get("probes", ()))
        timeout = float(cmd.get("timeout", 30.0))
        start_at = float(cmd["start_at"])
        tls: ssl.SSLContext | None = None
        if cmd.get("tls"):  # the server's own self-signed certificate: not checked here
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        await sleep_until(start_at)
        start_ns = time.monotonic_ns()
        deadline = start_at + timeout
        loop = asyncio.get_running_loop()
        retries = 0

        async def one(i: int, name: str) -> Client:
            """Connect and join; on a refusal the server asks to retry (too many logins in
            progress) or a refused/reset connection, retry as the client library does:
            exponential backoff from 0.5 s, each wait drawn from [0, backoff]."""
            nonlocal retries
            delay = BACKOFF_FIRST_S
            c = Client(self, system, name, room, i in probes)
            for attempt in range(MAX_ATTEMPTS):
                if attempt:
                    retries += 1
                    c = Client(self, system, name, room, i in probes)
                try:
                    await loop.create_connection(lambda c=c: c, HOST, port, ssl=tls)
                    await c.settled
                except (OSError, ssl.SSLError) as exc:
                    c.failed = c.failed or f"connect: {exc!r}"
                if c.joined_ns:
                    return c
                retry = "too_many_connections" in c.failed or "connect:" in c.failed
                wait = random.uniform(0, delay)  # full jitter, as the client library
                if not retry or time.monotonic() + wait >= deadline:
                    return c
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX_S)
            return c

        tasks = [asyncio.ensure_future(one(i, n)) for i, n in enumerate(names)]
        done, pending = await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.1))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        new = [t.result() for t in done if not t.cancelled() and t.exception() is None]
        for c in new:
            if not c.joined_ns:
                c.close()
        self.clients += [c for c in new if c.joined_ns]
        failed = [f"{c.name}: {c.failed or c.lost_reason or 'no join in time'}"
                  for c in new if not c.joined_ns]
        failed += ["(no join in time)"] * len(pending)
        return {"joined": sum(1 for c in new if c.joined_ns),
                "join_s": [round((c.joined_ns - start_ns) / 1e9, 6) for c in new if c.joined_ns],
                "failed": failed[:20], "n_failed": len(failed), "retries": retries}

    async def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        rate = float(cmd["rate"])
        start_at = float(cmd["start_at"])
        duration = min(float(cmd["duration"]), MAX_RUN_S)
        bucket = float(cmd.get("bucket", 0.5))
        drain = float(cmd.get("drain", 3.0))
        quiet = float(cmd.get("quiet", 0.5))
        stall: list[float] | None = cmd.get("stall")
        clients = [c for c in self.clients if c.joined_ns and not c.lost_ns]
        for c in self.clients:
            c.n = 0
        self.stamps = []
        await sleep_until(start_at)
        self.recording = True
        start_ns = int(start_at * 1e9)
        cpu0 = cpu_seconds()
        buckets: list[list[float]] = [[0.0, 0, 0, 0.0]]
        next_edge = bucket
        sent = 0
        rr = 0
        max_backlog = 0
        last_total, last_change = 0, 0.0
        stop_send = duration
        end = duration + drain
        senders = [c for c in clients if c.sending]
        for _ in range(MAX_TICKS):
            now = time.monotonic()
            t = now - start_at
            if t < stop_send:
                due = int(t * rate) - sent
                max_backlog = max(max_backlog, due)
                if senders:
                    for _ in range(due):
                        senders[rr % len(senders)].say()
                        rr += 1
                    sent += max(due, 0)
            if t >= next_edge:
                # a stalled client counts with what it had received when it stalled
                total = sum(c.n if c.counted else c.n_at_stall for c in clients)
                buckets.append([round(next_edge, 6), total, sent, cpu_seconds() - cpu0])
                next_edge += bucket
                if total != last_total:
                    last_total, last_change = total, t
                if t >= stop_send and t - max(last_change, stop_send) >= quiet:
                    break
                for c in clients:
                    c.keepalive(now)
                senders = [c for c in clients if c.sending and not c.lost_ns]
            if t >= end:
                break
            if stall is not None and t >= stall[0] and not clients[int(stall[1])].stalled_at_ns:
                clients[int(stall[1])].stall()  # after the bucket edge: it counts before
                senders = [c for c in clients if c.sending and not c.lost_ns]
            await asyncio.sleep(TICK_S)
        self.recording = False
        stamps = self.stamps
        if len(stamps) > MAX_STAMPS:
            stamps = stamps[:: len(stamps) // MAX_STAMPS + 1]
        self.stamps = []
        return {"buckets": buckets, "sent": sent, "max_backlog": max_backlog,
                "lost": sum(1 for c in clients if c.lost_ns and c.counted),
                "lost_reasons": sorted({c.lost_reason for c in clients
                                        if c.lost_ns and c.counted})[:5],
                "stamps": [[round((s - start_ns) / 1e6, 3), round((r - s) / 1e3, 1)]
                           for s, r in stamps]}

    async def resume(self, cmd: dict[str, Any]) -> dict[str, Any]:
        timeout = float(cmd.get("timeout", 5.0))
        stalled = [c for c in self.clients if c.stalled_at_ns]
        for c in stalled:
            c.n = 0
            c.watch_slow = True
            if c.transport is not None and not c.lost_ns:
                c.transport.resume_reading()
        deadline = time.monotonic() + timeout
        for _ in range(MAX_TICKS):
            if time.monotonic() >= deadline or all(c.lost_ns for c in stalled):
                break
            await asyncio.sleep(0.01)
        return {"stalled": [
            {"name": c.name, "before_stall": c.n_at_stall, "after_resume": c.n,
             "too_slow": c.saw_too_slow,
             "closed_after_s": round((c.lost_ns - c.stalled_at_ns) / 1e9, 3) if c.lost_ns
             else None, "reason": c.lost_reason} for c in stalled]}

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        timeout = float(cmd.get("timeout", 10.0))
        for c in self.clients:
            c.close()
        deadline = time.monotonic() + timeout
        for _ in range(MAX_TICKS):
            if time.monotonic() >= deadline or all(
                    c.lost_ns or c.transport is None for c in self.clients):
                break
            await asyncio.sleep(0.01)
        n = len(self.clients)
        for c in self.clients:  # whatever did not close in time
            if c.transport is not None and not c.lost_ns:
                c.transport.abort()
        self.clients = []
        return {"closed": n}


async def sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(min(delay, 60.0))


async def serve() -> int:
    gen = Generator()
    loop = asyncio.get_running_loop()
    ops = {"connect": gen.connect, "run": gen.run, "resume": gen.resume, "close": gen.close}
    try:
        for _ in range(100_000):
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                return 0
            cmd = json.loads(line)
            op = cmd.get("op")
            if op == "quit":
                return 0
            try:
                handler = ops[op]
                answer = await handler(cmd)
            except Exception as exc:  # report, and stay usable
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        return 0
    finally:
        await gen.close({"timeout": 2.0})


def main() -> int:
    raise_open_files_limit()
    if os.environ.get("BENCH_LOAD_GEN_MALLOC", "1") != "0":
        tune_malloc()
    loop = new_loop()
    try:
        return loop.run_until_complete(serve())
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
