"""The ``chatscreen`` command: server, client, chat, share, view."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from chatscreen import __version__
from chatscreen.errors import ChatscreenError

DEFAULT_CHAT_PORT = 9999
DEFAULT_SCREEN_PORT = 9998


def _server_parser(sub: Any) -> None:
    p = sub.add_parser("server", help="run the server (chat on 9999, screen on 9998)")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0: every interface)")
    p.add_argument("--chat-port", type=int, help=f"chat port (default {DEFAULT_CHAT_PORT}; "
                   "0 picks a free one)")
    p.add_argument("--screen-port", type=int, help=f"screen port (default {DEFAULT_SCREEN_PORT})")
    p.add_argument("--data-dir", type=Path, help="where history is kept (default ./data)")
    p.add_argument("--config", type=Path, help="TOML config file ([server] table)")
    p.add_argument("--history", type=int, help="messages sent on joining a room (default 100)")
    p.add_argument("--no-tls", action="store_true",
                   help="plain TCP: no encryption (TLS is on by default)")
    p.add_argument("--tls-cert", type=Path, help="certificate (PEM) instead of a self-signed one")
    p.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    p.add_argument("--metrics-port", type=int,
                   help="serve /health and /metrics (Prometheus) on this port (off by default)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"], help="json: one object per line")


def _client_args(p: argparse.ArgumentParser, *, user: bool = True) -> None:
    p.add_argument("--server", required=True, metavar="HOST[:PORT]",
                   help="server address; HOST:PORT is short for --server HOST --chat-port PORT")
    p.add_argument("--chat-port", type=int, default=None)
    p.add_argument("--screen-port", type=int, default=DEFAULT_SCREEN_PORT)
    p.add_argument("--no-tls", action="store_true",
                   help="plain TCP, for a server started with --no-tls")
    p.add_argument("--ca", type=Path, metavar="FILE",
                   help="trust the server's certificate only if this CA signed it "
                        "(default: the system's CAs, else pin it on first use)")
    if user:
        p.add_argument("--user", required=True, help="your username")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatscreen", description="Self-hosted real-time chat and screen sharing.")
    parser.add_argument("--version", action="version", version=f"chatscreen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _server_parser(sub)
    p = sub.add_parser("client", help="the desktop app")
    p.add_argument("--server", metavar="HOST[:PORT]",
                   help="pre-fill the server (default: the last one used)")
    p.add_argument("--user", help="pre-fill the username (default: the last one used)")
    p.add_argument("--screen-port", type=int, default=None)
    p = sub.add_parser("chat", help="line-mode terminal chat")
    _client_args(p)
    p.add_argument("--room", default="general")
    p = sub.add_parser("share", help="share the screen of $DISPLAY until interrupted")
    _client_args(p)
    p.add_argument("--fps", type=float, default=None, help="frames per second at most (15)")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality 1-100 (80)")
    p.add_argument("--monitor", type=int, default=1, help="monitor number, 0 for all (1)")
    p.add_argument("--max-size", metavar="WxH", help="scale down to fit, keeping the aspect")
    p = sub.add_parser("view", help="watch a shared screen")
    _client_args(p)
    p.add_argument("--from", dest="sharer", help="whose share to watch (default: the first)")
    p.add_argument("--snapshot", type=Path, metavar="FILE.png",
                   help="save one complete picture as PNG and exit")
    p.add_argument("--timeout", type=float, default=30.0)
    return parser


def tls_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"tls": not getattr(args, "no_tls", False), "ca": getattr(args, "ca", None)}


def split_server(args: argparse.Namespace) -> tuple[str, int]:
    host, port = args.server, args.chat_port
    if host.startswith("[") and "]" in host:  # [::1]:9999
        inner, _, rest = host[1:].partition("]")
        host = inner
        if rest.startswith(":") and port is None:
            port = int(rest[1:])
    elif host.count(":") == 1:
        host, _, p = host.partition(":")
        if port is None:
            try:
                port = int(p)
            except ValueError:
                raise ChatscreenError(f"bad port in --server {args.server!r}") from None
    return host, port if port is not None else DEFAULT_CHAT_PORT


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "server":
            return run_server(args)
        if args.command == "client":
            from chatscreen.gui import run_app

            return run_app(args.server, args.user, args.screen_port)
        runner = {"chat": run_chat, "share": run_share, "view": run_view}[args.command]
        return asyncio.run(runner(args))
    except ChatscreenError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- server ------------------------------------------------------------------------------


def run_server(args: argparse.Namespace) -> int:
    from chatscreen.config import load_settings
    from chatscreen.server import run_server as serve

    settings = load_settings(
        args.config, host=args.host, chat_port=args.chat_port, screen_port=args.screen_port,
        data_dir=args.data_dir, history=args.history, log_level=args.log_level,
        log_format=args.log_format, metrics_port=args.metrics_port,
        tls=False if args.no_tls else None, tls_cert=args.tls_cert, tls_key=args.tls_key)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if settings.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    loop_factory: Any = None
    if os.environ.get("CHATSCREEN_EVENT_LOOP", "uvloop") == "uvloop":
        with contextlib.suppress(ImportError):  # faster, where it installs (Linux, macOS)
            import uvloop

            loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings, lambda server: print(server.banner(), flush=True)))
    except OSError as exc:
        raise ChatscreenError(
            f"Cannot listen on {settings.host} (ports {settings.chat_port}, "
            f"{settings.screen_port}): {exc.strerror or exc}") from None
    return 0


# -- chat --------------------------------------------------------------------------------


class JsonLogFormatter(logging.Formatter):
    """Structured logs: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created).astimezone().isoformat(
                   timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def local_time(ts: str) -> str:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return "??:??:??"


def format_message(m: dict[str, Any], current_room: str | None) -> str:
    when = local_time(m["ts"])
    if m.get("to") is not None:
        return f"[{when}] {m['user']} -> {m['to']}: {m['text']}"
    room = m.get("room")
    prefix = "" if room is None or room == current_room else f"#{room} "
    return f"[{when}] {prefix}{m['user']}: {m['text']}"


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def run_chat(args: argparse.Namespace) -> int:
    from chatscreen.client import Client

    host, port = split_server(args)
    client = Client(host, args.user, chat_port=port, screen_port=args.screen_port,
                    **tls_args(args))
    await client.connect()
    room: str = args.room
    out = print

    async def show_events() -> None:
        async for ev in client.events():
            if ev.type == "message":
                out(format_message(ev.fields, room), flush=True)
            elif ev.type == "history":
                for m in ev["messages"]:
                    out(format_message(m, room), flush=True)
            elif ev.type == "joined":
                out(f"* joined {ev['room']}: {', '.join(ev['users'])}", flush=True)
            elif ev.type == "presence":
                out(f"* {ev['user']} {'joined' if ev['event'] == 'join' else 'left'} "
                    f"{ev['room']}", flush=True)
            elif ev.type == "error":
                out(f"! {ev['message']}", flush=True)
            elif ev.type == "tls":
                out(f"* first connection to {ev['where']}: pinned its certificate "
                    f"{ev['fingerprint']}", file=sys.stderr, flush=True)
            elif ev.type == "status" and ev["state"] in ("reconnecting", "disconnected"):
                retry = f", retrying in {ev['retry_in']} s" if ev.get("retry_in") else ""
                out(f"! {ev['state']}: {ev.get('reason', '')}{retry}", file=sys.stderr,
                    flush=True)
            elif ev.type == "status" and ev["state"] == "connected" and shown_connected:
                out("! connected again", file=sys.stderr, flush=True)
            if ev.type == "status" and ev["state"] == "connected":
                shown_connected.append(True)
            if ev.type == "status" and ev["state"] == "disconnected":
                gone.set()

    shown_connected: list[bool] = []
    gone = asyncio.Event()
    printer = asyncio.create_task(show_events())
    await client.join(room)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_stdin_lines, args=(loop, lines), daemon=True).start()
    pending: list[asyncio.Future[Any]] = []
    status = 0
    try:
        while True:
            line_task = asyncio.ensure_future(lines.get())
            gone_task = asyncio.ensure_future(gone.wait())
            done, _ = await asyncio.wait({line_task, gone_task},
                                         return_when=asyncio.FIRST_COMPLETED)
            gone_task.cancel()
            if line_task not in done:
                line_task.cancel()
                status = 1
                break
            line = line_task.result()
            if line is None or line.strip() == "/quit":
                break
            if not line.strip():
                continue
            try:
                room = await _chat_command(client, line, room, pending, out)
            except ChatscreenError as exc:
                out(f"! {exc}", flush=True)
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                print(f"{len(failed)} message(s) not confirmed: {failed[0]}", file=sys.stderr)
                status = 1
    finally:
        printer.cancel()
        await client.close()
    return status


async def _chat_command(client: Any, line: str, room: str, pending: list[asyncio.Future[Any]],
                        out: Any) -> str:
    if not line.startswith("/") or line.startswith("//"):
        text = line[1:] if line.startswith("//") else line
        pending.append(client.say_nowait(room, text))
        return room
    cmd, _, rest = line.partition(" ")
    rest = rest.strip()
    if cmd == "/join" and rest:
        await client.join(rest)
        return str(rest)
    if cmd == "/msg" and " " in rest:
        to, _, text = rest.partition(" ")
        pending.append(asyncio.ensure_future(client.pm(to, text)))
        return room
    if cmd == "/who":
        target = rest or room
        out(f"* in {target}: {', '.join(await client.who(target))}", flush=True)
        return room
    if cmd == "/rooms":
        rooms = await client.list_rooms()
        out("* rooms: " + ", ".join(f"{r['name']} ({r['users']})" for r in rooms), flush=True)
        return room
    out("! commands: /join ROOM, /msg USER TEXT, /who [ROOM], /rooms, /quit "
        "(start a message with // to send a literal /)", flush=True)
    return room


# -- share and view ---------------------------------------------------------------------


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ChatscreenError(f"--max-size wants WxH, e.g. 1280x720, not {text!r}") from None
    return w, h


async def run_share(args: argparse.Namespace) -> int:
    import signal

    from chatscreen.capture import CaptureError
    from chatscreen.client import Client
    from chatscreen.codec import DEFAULT_QUALITY
    from chatscreen.sharing import DEFAULT_FPS, ShareStats, share_screen

    quality = args.quality if args.quality is not None else DEFAULT_QUALITY
    if not 1 <= quality <= 100:
        raise ChatscreenError("--quality must be between 1 and 100")
    fps = args.fps if args.fps is not None else DEFAULT_FPS
    if not 0 < fps <= 120:
        raise ChatscreenError("--fps must be between 0 and 120")
    host, port = split_server(args)
    client = Client(host, args.user, chat_port=port, screen_port=args.screen_port,
                    reconnect=False, **tls_args(args))
    await client.connect()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = ShareStats()

    def started(w: int, h: int) -> None:
        print(f"Sharing {w}x{h} at up to {fps:g} frames/s (JPEG quality {quality}); "
              "press Ctrl+C to stop", flush=True)

    try:
        await share_screen(client, stop, monitor=args.monitor, fps=fps, quality=quality,
                           max_size=_parse_size(args.max_size), stats=stats,
                           on_started=started)
    except CaptureError as exc:
        raise ChatscreenError(str(exc)) from None
    except ConnectionResetError as exc:
        raise ChatscreenError(f"Connection lost: {exc}") from None
    finally:
        await client.close()
        print(stats.summary(), flush=True)
    return 0


async def run_view(args: argparse.Namespace) -> int:
    from chatscreen.client import Client
    from chatscreen.sharing import snapshot

    host, port = split_server(args)
    if args.snapshot is None:
        from chatscreen.viewer import run_viewer_window

        return run_viewer_window(host, port, args.screen_port, args.user, args.sharer,
                                 tls_args(args))
    client = Client(host, args.user, chat_port=port, screen_port=args.screen_port,
                    reconnect=False, **tls_args(args))
    await client.connect()
    try:
        canvas = await snapshot(client, args.sharer, args.timeout)
    except TimeoutError:
        who = f"from {args.sharer} " if args.sharer else ""
        raise ChatscreenError(f"No complete picture {who}within {args.timeout:g} s") from None
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    canvas.save_png(args.snapshot)
    w, h = canvas.size
    print(f"Saved {w}x{h} picture to {args.snapshot}", flush=True)
    return 0
