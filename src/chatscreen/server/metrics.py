"""Health and metrics over plain HTTP, for load balancers and Prometheus.

``GET /health`` answers ``{"status": "ok", ...}``; ``GET /metrics`` answers the Prometheus text
exposition format (version 0.0.4). Off unless ``metrics_port`` is set; bind it to a private
address. The HTTP parsing is deliberately minimal: one request per connection, request line
and headers capped at 8 KiB and 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sized
from typing import Any, Protocol

from chatscreen.server.adapt import LOW


# What the pages read of the server, as interfaces: metrics sits below the server (app.py
# imports it), never the other way round.
class _Peer(Protocol):
    @property
    def kind(self) -> str: ...
    def buffered(self) -> int: ...


class _Chat(Protocol):
    @property
    def sessions(self) -> Sized: ...
    @property
    def rooms(self) -> Sized: ...
    @property
    def messages_total(self) -> int: ...


class _Seat(Protocol):
    @property
    def layer(self) -> int: ...


class _Share(Protocol):
    @property
    def viewers(self) -> Mapping[Any, _Seat]: ...


class _Screen(Protocol):
    @property
    def shares(self) -> Mapping[Any, _Share]: ...
    def stored_bytes(self) -> int: ...


class _Buffers(Protocol):
    @property
    def budget(self) -> int | None: ...
    @property
    def peak(self) -> int: ...
    @property
    def cuts(self) -> int: ...


class Server(Protocol):
    """What /metrics and /health show: chatscreen.server.app.Server is one."""

    @property
    def counters(self) -> Counters: ...
    @property
    def peers(self) -> Collection[_Peer]: ...
    @property
    def chat(self) -> _Chat: ...
    @property
    def screen(self) -> _Screen: ...
    @property
    def buffers(self) -> _Buffers: ...
    @property
    def logins_in_progress(self) -> int: ...
    @property
    def logins_waiting(self) -> int: ...

MAX_REQUEST = 8 << 10
REQUEST_TIMEOUT = 5.0


class Counters:
    """Counters the server increments on its hot paths: plain integer additions."""

    def __init__(self) -> None:
        self.started = time.time()
        self.disconnects: Counter[str] = Counter()
        self.deliveries = 0  # chat frames written to recipients (message x recipient)
        self.screen_frames_in = 0
        self.screen_bytes_in = 0
        self.screen_layer_switches = 0  # viewers moved between quality layers (simulcast)
        self.login_checks = 0  # account passwords checked (argon2id)
        self.file_bytes_in = 0  # upload bytes written to the store
        self.file_bytes_out = 0  # download bytes read from the store and sent


def render_metrics(server: Server) -> str:
    c = server.counters
    peers = list(server.peers)
    buffers = [p.buffered() for p in peers]
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP chatscreen_{name} {help_}")
        lines.append(f"# TYPE chatscreen_{name} {kind}")
        for labels, value in samples:
            lines.append(f"chatscreen_{name}{labels} {value:g}")

    by_kind = Counter(p.kind for p in peers)
    metric("connections", "gauge", "Open connections by port.",
           [(f'{{port="{k}"}}', by_kind.get(k, 0)) for k in ("chat", "screen")])
    metric("sessions", "gauge", "Logged-in users.", [("", len(server.chat.sessions))])
    metric("logins", "gauge", "Connections logging in (holding a login slot) and waiting for a "
           "slot.", [('{state="in_progress"}', server.logins_in_progress),
                     ('{state="waiting"}', server.logins_waiting)])
    metric("rooms", "gauge", "Rooms.", [("", len(server.chat.rooms))])
    metric("messages_total", "counter", "Chat messages stored and delivered.",
           [("", server.chat.messages_total)])
    metric("deliveries_total", "counter", "Chat frames written to recipients.",
           [("", c.deliveries)])
    metric("login_checks_total", "counter", "Account passwords checked (argon2id).",
           [("", c.login_checks)])
    metric("disconnects_total", "counter", "Closed connections by reason.",
           [(f'{{reason="{r}"}}', n) for r, n in sorted(c.disconnects.items())] or
           [('{reason="none"}', 0)])
    metric("send_buffer_bytes", "gauge", "Bytes waiting to be sent, over all connections.",
           [('{stat="total"}', sum(buffers)), ('{stat="max"}', max(buffers, default=0))])
    metric("send_budget_bytes", "gauge", "Budget for the chat connections' send buffers.",
           [("", server.buffers.budget or 0)])
    metric("send_buffered_peak_bytes", "gauge",
           "The largest total of the chat connections' send buffers since the server started.",
           [("", server.buffers.peak)])
    metric("send_budget_cuts_total", "counter",
           "Chat connections cut off as too slow because the send buffers passed the budget.",
           [("", server.buffers.cuts)])
    metric("file_bytes_total", "counter", "File bytes stored (uploads) and sent (downloads).",
           [('{direction="in"}', c.file_bytes_in), ('{direction="out"}', c.file_bytes_out)])
    metric("shares", "gauge", "Active screen shares.", [("", len(server.screen.shares))])
    metric("screen_frames_total", "counter", "Screen frames received from sharers.",
           [("", c.screen_frames_in)])
    metric("screen_bytes_total", "counter", "Screen bytes received from sharers.",
           [("", c.screen_bytes_in)])
    metric("screen_layer_switches_total", "counter",
           "Screen viewers moved between the full and the low quality layer.",
           [("", c.screen_layer_switches)])
    metric("screen_store_bytes", "gauge",
           "Bytes the shares' pictures take (each share's is bounded by its area).",
           [("", server.screen.stored_bytes())])
    lows = sum(1 for sh in server.screen.shares.values() for st in sh.viewers.values()
               if st.layer == LOW)
    metric("screen_low_viewers", "gauge", "Screen viewers on a share's low quality layer.",
           [("", lows)])
    metric("uptime_seconds", "gauge", "Seconds since the server started.",
           [("", round(time.time() - c.started, 3))])
    return "\n".join(lines) + "\n"


def health(server: Server) -> str:
    return json.dumps({"status": "ok", "connections": len(server.peers),
                       "sessions": len(server.chat.sessions),
                       "uptime_seconds": round(time.time() - server.counters.started, 3)})


async def serve_http(server: Server, host: str, port: int) -> asyncio.Server:
    routes: dict[str, tuple[str, Callable[[Server], str]]] = {
        "/health": ("application/json", health),
        "/metrics": ("text/plain; version=0.0.4; charset=utf-8", render_metrics),
    }

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError, OSError):
            writer.close()
            return
        parts = head.split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1].decode("latin-1")) if len(parts) >= 2 else (b"", "")
        route = routes.get(path.split("?", 1)[0])
        if method != b"GET":
            status, ctype, body = "405 Method Not Allowed", "text/plain", "GET only\n"
        elif route is None:
            status, ctype, body = "404 Not Found", "text/plain", "try /health or /metrics\n"
        else:
            status, (ctype, render) = "200 OK", route
            body = render(server)
        data = body.encode()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                     f"{len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST)
