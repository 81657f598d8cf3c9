"""Chat: round-trip latency and fan-out throughput, chatscreen vs the original server.

Run ``python -m bench.bench_chat`` from the repository root (or ``make bench``). Output is
Markdown; every figure is the median of 3 runs.

* Latency: one sender sends ``MESSAGES`` messages one after the other, each after the echo of
  the previous one came back: chatscreen echoes a message to its sender once it is committed
  to SQLite (``Client.say``); the original (``bench.baseline_original``) echoes by
  broadcasting to every client, the sender included. With 1 and with 50 other clients in the
  room (``bench.chat_listeners``, a separate process, so that their reading does not slow the
  sender's process down).
* The same latency runs for chatscreen with a bare blocking socket as the sender (as the
  original's sender is): the difference with the client library is the client's own cost.
* Throughput, burst: the sender writes ``BURST`` messages at once, as fast as it can, and we
  time until all 50 listeners received all of them (or until nothing arrives for 1 s).
* Throughput, one in flight: the latency run with 50 listeners, as messages/s; the listeners are
  checked to have received every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import pickle
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.server import NO_RATE_LIMITS, ServerProcess  # noqa: E402

from bench.chat_listeners import FrameCounter  # noqa: E402
from bench.child import LineChild  # noqa: E402
from chatscreen.client import Client  # noqa: E402
from chatscreen.protocol import PROTOCOL_VERSION, encode_frame  # noqa: E402

RUNS = int(os.environ.get("BENCH_CHAT_RUNS", "3"))
MESSAGES = 500
BURST = 5000
LISTENERS = (1, 50)
HOST = "127.0.0.1"
ROOM = "general"
BARE = "chatscreen, bare-socket sender"
TIMEOUT_S = 10.0
BURST_TIMEOUT_S = 30.0
START_TIMEOUT_S = 20.0


def text_of(i: int) -> str:
    return f"message {i:05d} from the benchmark sender, about sixty characters"


# -- the listeners process ---------------------------------------------------------------


class Listeners(LineChild):
    """``bench.chat_listeners`` as a child process, driven over its stdin/stdout."""

    def __init__(self, system: str, port: int, count: int) -> None:
        super().__init__("bench.chat_listeners", [system, str(port), str(count)], START_TIMEOUT_S)

    def reset(self) -> None:
        self._command("reset")
        self._line(TIMEOUT_S, "ok")

    def wait(self, expected: int, timeout: float) -> dict[str, float]:
        self._command(f"wait {expected} {timeout}")
        result: dict[str, float] = json.loads(self._line(timeout + TIMEOUT_S))
        return result


# -- results -----------------------------------------------------------------------------


@dataclass
class Config:
    system: str
    listeners: int
    p50: list[float] = field(default_factory=list)  # ms, one per run
    p99: list[float] = field(default_factory=list)
    closed_rate: list[float] = field(default_factory=list)  # messages/s, one in flight
    complete: list[bool] = field(default_factory=list)  # every listener got every message
    burst_rate: list[float] = field(default_factory=list)  # deliveries/s
    burst_msgs: list[float] = field(default_factory=list)  # messages/s
    burst_delivered: list[float] = field(default_factory=list)  # fraction


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def record_latency(cfg: Config, samples: list[float], seconds: float,
                   got: dict[str, float]) -> None:
    cfg.p50.append(percentile(samples, 0.50) * 1e3)
    cfg.p99.append(percentile(samples, 0.99) * 1e3)
    cfg.closed_rate.append(len(samples) / seconds)
    cfg.complete.append(got["min"] >= len(samples))


# -- chatscreen ----------------------------------------------------------------------------


async def chatscreen_runs(port: int, listeners: Listeners, cfg: Config) -> None:
    client = Client(HOST, "sender", chat_port=port, reconnect=False, tls=False)
    await client.connect()
    try:
        await client.join(ROOM)
        await client.say(ROOM, "warm-up")
        for _ in range(RUNS):
            await asyncio.to_thread(listeners.reset)
            samples = []
            start = time.perf_counter()
            for i in range(MESSAGES):
                t = time.perf_counter()
                await asyncio.wait_for(client.say(ROOM, text_of(i)), TIMEOUT_S)
                samples.append(time.perf_counter() - t)
            seconds = time.perf_counter() - start
            got = await asyncio.to_thread(listeners.wait, MESSAGES, TIMEOUT_S)
            record_latency(cfg, samples, seconds, got)
        if cfg.listeners < max(LISTENERS):
            return
        for _ in range(RUNS):
            await asyncio.to_thread(listeners.reset)
            t0 = time.monotonic()
            futures = [client.say_nowait(ROOM, text_of(i)) for i in range(BURST)]
            await asyncio.wait_for(asyncio.gather(*futures), BURST_TIMEOUT_S)
            got = await asyncio.to_thread(listeners.wait, BURST, BURST_TIMEOUT_S)
            record_burst(cfg, got, t0)
    finally:
        await client.close()


def bare_chatscreen_runs(port: int, listeners: Listeners, cfg: Config) -> None:
    """The latency runs with a bare blocking socket as the sender, like the original's: this
    leaves out the client library and shows what the server itself costs."""
    with socket.create_connection((HOST, port), timeout=TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio does
        frames = FrameCounter()
        pending: list[bytes] = []

        def until(marker: bytes) -> None:
            while True:
                while pending:
                    if marker in pending.pop(0):
                        return
                data = sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("the server closed the connection")
                pending.extend(frames.feed(data))

        sock.sendall(encode_frame({"type": "hello", "v": PROTOCOL_VERSION, "client": "bench",
                                   "user": "baresender"}))
        until(b'"type":"welcome"')
        sock.sendall(encode_frame({"type": "join", "room": ROOM}))
        until(b'"type":"joined"')
        for run in range(RUNS):
            listeners.reset()
            samples = []
            start = time.perf_counter()
            for i in range(MESSAGES):
                cid = f"r{run}m{i}"
                t = time.perf_counter()
                sock.sendall(encode_frame({"type": "say", "room": ROOM, "text": text_of(i),
                                           "cid": cid}))
                until(f'"cid":"{cid}"'.encode())
                samples.append(time.perf_counter() - t)
            seconds = time.perf_counter() - start
            record_latency(cfg, samples, seconds, listeners.wait(MESSAGES, TIMEOUT_S))


def record_burst(cfg: Config, got: dict[str, float], t0: float) -> None:
    seconds = max(got["done_at"] - t0, 1e-9)
    cfg.burst_rate.append(got["total"] / seconds)
    cfg.burst_msgs.append(got["total"] / cfg.listeners / seconds)
    cfg.burst_delivered.append(got["total"] / (BURST * cfg.listeners))


def bench_chatscreen(count: int, *, bare: bool = False) -> Config:
    cfg = Config(BARE if bare else "chatscreen", count)
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        # plain TCP: this measures the protocol and the server; TLS is measured in bench_load
        server = ServerProcess(Path(tmp) / "data", tls=False, env=NO_RATE_LIMITS).start()
        try:
            listeners = Listeners("chatscreen", server.chat_port, count)
            try:
                if bare:
                    bare_chatscreen_runs(server.chat_port, listeners, cfg)
                else:
                    asyncio.run(chatscreen_runs(server.chat_port, listeners, cfg))
            finally:
                listeners.close()
        finally:
            server.stop()
    return cfg


def bench_bare(count: int) -> Config:
    return bench_chatscreen(count, bare=True)


# -- the original --------------------------------------------------------------------------


class PickleReader:
    """Reads the original's unframed stream of pickles (INSECURE: the original's design)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.pending: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        while not self.pending:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the server closed the connection")
            stream = io.BytesIO(self.buf + data)
            good = 0
            while True:
                try:
                    self.pending.append(pickle.load(stream))
                except Exception:
                    break
                good = stream.tell()
            self.buf = stream.getvalue()[good:]
        return self.pending.pop(0)


def original_message(i: int) -> bytes:
    return pickle.dumps({"type": "message", "username": "sender", "message": text_of(i),
                         "timestamp": datetime.now().strftime("%H:%M:%S")})


def original_runs(port: int, listeners: Listeners, cfg: Config) -> None:
    with socket.create_connection((HOST, port), timeout=TIMEOUT_S) as sock:
        reader = PickleReader(sock)
        sock.sendall(pickle.dumps({"type": "join", "username": "sender"}))
        while reader.next().get("message") != "sender joined":
            pass
        for _ in range(RUNS):
            listeners.reset()
            samples = []
            start = time.perf_counter()
            for i in range(MESSAGES):
                t = time.perf_counter()
                sock.sendall(original_message(i))
                want = text_of(i)
                while reader.next().get("message") != want:
                    pass
                samples.append(time.perf_counter() - t)
            seconds = time.perf_counter() - start
            record_latency(cfg, samples, seconds, listeners.wait(MESSAGES, TIMEOUT_S))
    if cfg.listeners < max(LISTENERS):
        return
    for _ in range(RUNS):
        # A new sender each time: a burst may make the original drop the connection.
        with socket.create_connection((HOST, port), timeout=TIMEOUT_S) as sock:
            sock.sendall(pickle.dumps({"type": "join", "username": "burster"}))
            time.sleep(0.2)
            stop = threading.Event()
            drain = threading.Thread(target=_drain, args=(sock, stop), daemon=True)
            drain.start()
            listeners.reset()
            t0 = time.monotonic()
            with contextlib.suppress(OSError):
                for i in range(BURST):
                    sock.sendall(original_message(i))
            got = listeners.wait(BURST, BURST_TIMEOUT_S)
            stop.set()
            drain.join(timeout=5)
        record_burst(cfg, got, t0)


def _drain(sock: socket.socket, stop: threading.Event) -> None:
    """The echoes to the burst sender must be read, or the server's sendall to it blocks."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(1 << 16):
                return
        except TimeoutError:
            continue
        except OSError:
            return


@contextlib.contextmanager
def original_server() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline_original", "server", "--chat-port", "0",
         "--screen-port", "0", "--max-seconds", "300"],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
        line = proc.stdout.readline().decode() if ready else ""
        found = re.match(r"chat (\d+) screen (\d+)", line)
        if not found:
            raise RuntimeError(f"baseline server did not start: {line!r}")
        yield int(found.group(1))
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=5)


def bench_original(count: int) -> Config:
    cfg = Config("original", count)
    with original_server() as port:
        listeners = Listeners("original", port, count)
        try:
            original_runs(port, listeners, cfg)
        finally:
            listeners.close()
    return cfg


# -- output --------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(a: float, b: float, *, inverse: bool = False) -> str:
    if math.isnan(a) or math.isnan(b) or a == 0 or b == 0:
        return "–"
    return f"{(b / a if inverse else a / b):.2f}×"


def render(configs: dict[tuple[str, int], Config]) -> str:
    out = ["### Round-trip latency (send → own echo), sequential, "
           f"{MESSAGES} messages per run\n"]
    head = ["system", "other clients in room", "p50 ms", "p99 ms", "messages/s (one in flight)",
            "all delivered", "p50 vs original", "p99 vs original"]
    out += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for count in LISTENERS:
        base = configs[("original", count)]
        for system in ("original", "chatscreen", BARE):
            c = configs[(system, count)]
            cells = [system, str(count), f"{med(c.p50):.3f}", f"{med(c.p99):.3f}",
                     f"{med(c.closed_rate):.0f}", "yes" if all(c.complete) else "NO",
                     ratio(med(c.p50), med(base.p50)), ratio(med(c.p99), med(base.p99))]
            out.append("| " + " | ".join(cells) + " |")
    n = max(LISTENERS)
    out += ["", f"### Burst throughput: one sender writes {BURST} messages at once, "
            f"{n} listeners\n"]
    head = ["system", "messages/s", "deliveries/s", "delivered", "deliveries/s vs original"]
    out += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    base = configs[("original", n)]
    for system in ("original", "chatscreen"):
        c = configs[(system, n)]
        if all(d >= 1.0 for d in c.burst_delivered):
            rates = [f"{med(c.burst_msgs):.0f}", f"{med(c.burst_rate):.0f}"]
        else:  # a rate of what got through would flatter a server that lost messages
            rates = ["– (messages lost)", "–"]
        complete = all(d >= 1.0 for d in base.burst_delivered + c.burst_delivered)
        cells = [system, *rates, f"{100 * med(c.burst_delivered):.1f} %",
                 ratio(med(c.burst_rate), med(base.burst_rate)) if complete else "–"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    print("# bench_chat\n")
    print(f"Loopback, {os.cpu_count()} CPUs, {RUNS} runs, medians. Listeners run in a separate "
          "process; the sender in this one.\n", flush=True)
    configs: dict[tuple[str, int], Config] = {}
    for count in LISTENERS:
        for system, bench in (("original", bench_original), ("chatscreen", bench_chatscreen),
                              (BARE, bench_bare)):
            t = time.monotonic()
            cfg = bench(count)
            configs[(system, count)] = cfg
            print(f"<!-- {system}, {count} listeners: p50 {cfg.p50} p99 {cfg.p99} burst "
                  f"{cfg.burst_rate} delivered {cfg.burst_delivered} "
                  f"({time.monotonic() - t:.1f} s) -->", flush=True)
    print()
    print(render(configs))
    print(
        "\nchatscreen acknowledges a message only after it is committed to SQLite (WAL, "
        "synchronous=NORMAL: no fsync per commit) and the sender uses the full client library; "
        "the original sender is a bare socket and the original server stores nothing. "
        "Original: TCP_NODELAY off, bare recv(1024) with no framing (a burst of pickles is "
        "read as one and everything after the first pickle of each recv is lost, or the "
        "connection dies on a pickle cut in half)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
