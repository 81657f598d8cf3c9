"""The ``chatscreen`` command: server, client, chat, share, view."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import ipaddress
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatscreen import __version__
from chatscreen.cli_files import ChatFiles, file_text
from chatscreen.client.address import DEFAULT_CHAT_PORT, split_server
from chatscreen.errors import ChatscreenError, ServerError
from chatscreen.gui.timeline import presence_line
from chatscreen.text import display_text, local_time, local_times, one_line

if TYPE_CHECKING:  # `chatscreen admin` only: the client commands never import the server
    from chatscreen.server.accounts import AccountDB

DEFAULT_SCREEN_PORT = 9998
FEW_OPEN_FILES = 4096  # below this many descriptors the server warns at start
NOFILE_UNLIMITED = 1 << 20  # the soft limit asked for when the hard one is unlimited (nr_open)
HISTORY_WAIT = 5.0  # s: `chat` waits at most this long for a room's history after joining it
# The server and `chatscreen admin` create files only in the data directory, which holds every
# message and password hash: readable by their owner only (directory 0700, files 0600).
PRIVATE_UMASK = 0o077
ADMIN_WAIT = 3.0  # s: `chatscreen admin` waits this long for the running server's answer
ADMIN_POLL = 0.05  # s between looks for it
APP_GRACE = 10.0  # s: `server --app` gives the app this long to log out when it stops


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
    p.add_argument("--require-accounts", action="store_true",
                   help="no guests: only registered names may log in")
    p.add_argument("--password", action="store_true",
                   help="ask (on the terminal, typed twice) for a server password every "
                        "client must give; it never goes on the command line")
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help="a server password every client must give, read from FILE (or set "
                        "server_password in the config, or CHATSCREEN_SERVER_PASSWORD)")
    p.add_argument("--share-roles", metavar="ROLES",
                   help="who may share a screen: everyone (default) or a comma list of "
                        "admin, moderator, member, guest")
    p.add_argument("--max-file-size", type=int, metavar="BYTES",
                   help="largest file that may be posted (default 100000000: 100 MB)")
    p.add_argument("--file-quota", type=int, metavar="BYTES",
                   help="bytes of files one user may have posted, uploads under way included "
                        "(default 1000000000: 1 GB)")
    p.add_argument("--file-rooms", metavar="ROOMS",
                   help="where files may be posted: * (default: every room and private "
                        "messages), or a comma list of rooms and @ (private messages); "
                        "'' turns files off")
    p.add_argument("--file-retention", metavar="DURATION",
                   help="files older than this (seconds, or 30d, 12h ...) are removed (their "
                        "messages stay, marked expired); 0 (default): kept for ever")
    p.add_argument("--uploads-per-user", type=int, metavar="N",
                   help="uploads under way at once per user (default 4)")
    p.add_argument("--upload-rate-bytes", type=int, metavar="BYTES",
                   help="bytes a second one connection may upload (default 512 MiB; "
                        "per address: upload_rate_bytes_per_address, 1 GiB)")
    p.add_argument("--app", action="store_true",
                   help="also open the desktop app, filled in with this server's address "
                        "and ports (`make run` does, given a display); it closes when the "
                        "server stops")


def _admin_parser(sub: Any) -> None:
    p = sub.add_parser("admin", help="manage accounts, roles and bans (on the server machine, "
                       "no network)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the server's data directory (default: CHATSCREEN_DATA_DIR, the "
                        "config's data_dir, else ./data if it holds the server's data)")
    p.add_argument("--config", type=Path, help="the server's TOML config file (its data_dir)")
    cmds = p.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    c = cmds.add_parser("create-admin", help="create an admin account (asks for its password, "
                        "or reads CHATSCREEN_PASSWORD)")
    c.add_argument("name")
    c = cmds.add_parser("add-user", help="create an account (password as for create-admin)")
    c.add_argument("name")
    c.add_argument("--role", choices=["admin", "moderator", "member"], default="member")
    c = cmds.add_parser("set-role", help="change an account's role")
    c.add_argument("name")
    c.add_argument("role", choices=["admin", "moderator", "member"])
    c = cmds.add_parser("ban", help="ban an account (or a guest's name) or an address")
    c.add_argument("name", nargs="?")
    c.add_argument("--address", metavar="IP")
    c.add_argument("--for", dest="duration", metavar="DURATION",
                   help="e.g. 10m, 2h, 7d (default: for ever)")
    c.add_argument("--reason", default="")
    c = cmds.add_parser("unban", help="lift a ban")
    c.add_argument("name", nargs="?")
    c.add_argument("--address", metavar="IP")
    c = cmds.add_parser("kick", help="disconnect a user from the running server (it says "
                        "whether it did)")
    c.add_argument("name")
    c.add_argument("--reason", default="")
    c = cmds.add_parser("mute", help="stop a user posting (they can still read)")
    c.add_argument("name")
    c.add_argument("--for", dest="duration", metavar="DURATION",
                   help="e.g. 10m, 2h, 7d (default: for ever)")
    c.add_argument("--reason", default="")
    c = cmds.add_parser("unmute", help="let a muted user post again")
    c.add_argument("name")
    cmds.add_parser("list", help="accounts, roles and bans")
    c = cmds.add_parser("invite", help="print the command line (with the certificate's "
                        "fingerprint) that connects a user safely the first time")
    c.add_argument("--host", help="the address users reach this server at (default: this "
                   "machine's name)")
    c.add_argument("--chat-port", type=int, default=DEFAULT_CHAT_PORT,
                   help=f"the server's chat port (default {DEFAULT_CHAT_PORT})")
    c.add_argument("--tls-cert", type=Path, metavar="FILE",
                   help="the server's certificate, if it was given one (default: the one it "
                        "made in its data directory)")


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
    p.add_argument("--fingerprint", type=fingerprint_arg, metavar="SHA256:...",
                   help="the server certificate's fingerprint (its banner, or `chatscreen "
                        "admin invite`): checked even on first contact, then remembered")
    if user:
        p.add_argument("--user", required=True, help="your username")
        p.add_argument("--password-file", type=Path, metavar="FILE",
                       help="your password, if your name is registered (or CHATSCREEN_PASSWORD; "
                            "on a terminal you are asked when needed)")
        p.add_argument("--server-password-file", type=Path, metavar="FILE",
                       help="the server's password, if it has one (or "
                            "CHATSCREEN_SERVER_PASSWORD; on a terminal you are asked)")


def fingerprint_arg(text: str) -> str:
    from chatscreen.tls import parse_fingerprint

    try:
        return parse_fingerprint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatscreen", description="Self-hosted real-time chat and screen sharing.")
    parser.add_argument("--version", action="version", version=f"chatscreen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _server_parser(sub)
    _admin_parser(sub)
    p = sub.add_parser("client", help="the desktop app")
    p.add_argument("--server", metavar="HOST[:PORT]",
                   help="pre-fill the server (default: the last one used)")
    p.add_argument("--user", help="pre-fill the username (default: the last one used)")
    p.add_argument("--screen-port", type=int, default=None)
    p.add_argument("--fingerprint", type=fingerprint_arg, metavar="SHA256:...",
                   help="pre-fill the server certificate's fingerprint (checked even on "
                        "first contact)")
    p = sub.add_parser("chat", help="line-mode terminal chat")
    _client_args(p)
    p.add_argument("--room", default="general")
    p = sub.add_parser("send-file", help="post a file to a room or a person; prints its id")
    _client_args(p)
    p.add_argument("path", type=Path, metavar="PATH")
    to = p.add_mutually_exclusive_group()
    to.add_argument("--room", help="the room to post it to (default: the server's first room)")
    to.add_argument("--to", metavar="USER", help="send it privately to USER")
    p = sub.add_parser("get-file", help="download a file by its id (resuming a partial one)")
    _client_args(p)
    p.add_argument("id", metavar="ID")
    p.add_argument("--output", "-o", type=Path, metavar="PATH",
                   help="where to save it (default: its name, made safe, in the current "
                        "directory; a directory: its name there)")
    p.add_argument("--preview", action="store_true",
                   help="the server's preview of a picture (PNG, at most 320x320) instead")
    p = sub.add_parser("share", help="share the screen of $DISPLAY until interrupted")
    _client_args(p)
    p.add_argument("--fps", type=float, default=None,
                   help="updates per second, about (30): a change is captured at once "
                   "unless the last ones came faster; briefly up to 1.2 x this (a change "
                   "drawn in two steps needs two captures)")
    p.add_argument("--quality", type=int, default=None,
                   help="JPEG quality 1-100 for photographic regions (80)")
    p.add_argument("--preset", choices=["text", "balanced", "motion"], default="balanced",
                   help="what is shared: text (sharpest), balanced, motion (smoothest)")
    p.add_argument("--encoding", choices=["auto", "h264", "lossless", "jpeg"], default="auto",
                   help="auto: by content, H.264 where a region changes every frame; h264: "
                        "H.264 for any region that keeps changing; lossless/jpeg: every "
                        "change so (default auto)")
    p.add_argument("--layers", type=int, choices=[1, 2], default=2,
                   help="2: also send a low quality layer while the server asks for one, for "
                        "viewers on slow links; 1: never (default 2)")
    p.add_argument("--monitor", type=int, default=1, help="monitor number, 0 for all (1)")
    p.add_argument("--max-size", metavar="WxH", help="scale down to fit, keeping the aspect")
    p.add_argument("--only", metavar="USER[,USER...]",
                   help="only these users may watch (default: anyone)")
    p.add_argument("--room", help="only the members of this room may watch")
    p.add_argument("--allow-record", metavar="all|USER[,USER...]",
                   help="who may record the share besides you (default: nobody); you see "
                        "a line whenever someone records it")
    p.add_argument("--record", type=Path, metavar="FILE.mp4",
                   help="record your share to an MP4 file (H.264) until you stop")
    p = sub.add_parser("view", help="watch a shared screen")
    _client_args(p)
    p.add_argument("--from", dest="sharer", help="whose share to watch (default: the first)")
    shot = p.add_mutually_exclusive_group()
    shot.add_argument("--snapshot", type=Path, metavar="FILE.png",
                      help="save one complete picture as PNG and exit")
    shot.add_argument("--snapshot-to-chat", action="store_true",
                      help="post one complete picture into chat as a PNG (to --room, else "
                           "the share's room if it is for a room's members, else the "
                           "server's first room), print its file id and exit")
    shot.add_argument("--record", type=Path, metavar="FILE.mp4",
                      help="record the share to an MP4 file (H.264, its own size) until you "
                           "stop (Ctrl+C, or closing the window) or it ends; the sharer must "
                           "allow it (share --allow-record) and sees that you record")
    p.add_argument("--room", help="with --snapshot-to-chat: the room to post it to")
    p.add_argument("--no-window", action="store_true",
                   help="with --record: record without showing the share")
    p.add_argument("--timeout", type=float, default=30.0)
    return parser


def tls_args(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "no_tls", False) and getattr(args, "fingerprint", None):
        raise ChatscreenError("--fingerprint checks the server's TLS certificate: it cannot "
                              "go with --no-tls")
    return {"tls": not getattr(args, "no_tls", False), "ca": getattr(args, "ca", None),
            "fingerprint": getattr(args, "fingerprint", None)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, read by build_parser(); a file id given to get-file may start
    with ``-`` (ids are URL-safe base64): where it stands, it is the ID, not an option."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    dashed: str | None = None
    if words[:1] == ["get-file"]:
        for i, word in enumerate(words[1:], 1):
            if (dashed is None and _FILE_ID.fullmatch(word) and word not in _GET_FILE_OPTIONS
                    and words[i - 1] not in _GET_FILE_VALUED):
                dashed, words[i] = word, "ID"
    args = parser.parse_args(words)
    if dashed is not None:
        args.id = dashed
    return args


_FILE_ID = re.compile(r"-[A-Za-z0-9_-]{15,31}")
_GET_FILE_VALUED = frozenset({"--server", "--chat-port", "--screen-port", "--ca",
                              "--fingerprint", "--user", "--password-file",
                              "--server-password-file", "--output", "-o"})
_GET_FILE_OPTIONS = _GET_FILE_VALUED | {"--no-tls", "--preview", "--help", "-h"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "server":
            return run_server(args)
        if args.command == "admin":
            return run_admin(args)
        if args.command == "client":
            from chatscreen.gui import run_app

            return run_app(args.server, args.user, args.screen_port, args.fingerprint)
        runner = {"chat": run_chat, "share": run_share, "view": run_view,
                  "send-file": run_send_file, "get-file": run_get_file}[args.command]
        # the sharer too runs on uvloop: its TLS writes and the capture thread's hand-offs
        # cost about half as much CPU as on asyncio's own loop (docs/benchmarks.md); so do
        # file transfers (a 500 MB download over TLS: 2.3 s of CPU instead of 2.9)
        factory = (event_loop_factory() if args.command in ("share", "send-file", "get-file")
                   else None)
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            return loop_runner.run(runner(args))
    except ChatscreenError as exc:
        print(one_line(str(exc)), file=sys.stderr)  # it may quote the server
        return 1
    except KeyboardInterrupt:
        return 130


# -- server ------------------------------------------------------------------------------


def event_loop_factory() -> Any:
    """uvloop's event loop where it installs (Linux, macOS) unless CHATSCREEN_EVENT_LOOP says
    otherwise (``asyncio``); None: asyncio's own."""
    if os.environ.get("CHATSCREEN_EVENT_LOOP", "uvloop") != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def raise_open_files_limit() -> int | None:
    """Every connection is a file descriptor: lift the soft limit (often 1024) to the hard
    one, as servers do, so that a thousand clients fit. Returns the soft limit now in force
    (None where there is no such limit)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else NOFILE_UNLIMITED
    if soft == resource.RLIM_INFINITY or soft >= want:
        return int(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):  # not allowed here: keep what we have
        return int(soft)
    return int(want)


def run_server(args: argparse.Namespace) -> int:
    from chatscreen.config import load_settings
    from chatscreen.server import run_server as serve

    settings = load_settings(
        args.config, host=args.host, chat_port=args.chat_port, screen_port=args.screen_port,
        data_dir=args.data_dir, history=args.history, log_level=args.log_level,
        log_format=args.log_format, metrics_port=args.metrics_port,
        tls=False if args.no_tls else None, tls_cert=args.tls_cert, tls_key=args.tls_key,
        require_accounts=True if args.require_accounts else None,
        server_password=(_new_password("the server") if args.password
                         else _read_secret(args.password_file)),
        share_roles=args.share_roles, max_file_size=args.max_file_size,
        file_quota=args.file_quota, file_rooms=args.file_rooms,
        file_retention=args.file_retention, uploads_per_user=args.uploads_per_user,
        upload_rate_bytes=args.upload_rate_bytes)
    os.umask(PRIVATE_UMASK)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if settings.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    nofile = raise_open_files_limit()
    if nofile is not None and nofile < FEW_OPEN_FILES:
        logging.getLogger("chatscreen.server").warning(
            "open files limit %d: the server can take fewer than %d connections; raise the "
            "hard limit (ulimit -Hn) to serve more", nofile, nofile)
    loop_factory = event_loop_factory()
    apps: list[subprocess.Popen[bytes]] = []

    def started(server: Any) -> None:
        print(server.banner(), flush=True)
        if args.app:
            apps.extend(start_app(settings.host, server.chat_port, server.screen_port,
                                  server.fingerprint))

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings, started))
    except OSError as exc:
        if exc.filename is not None:  # a file, not a socket
            raise ChatscreenError(f"cannot use {exc.filename}: {exc.strerror or exc}") from None
        raise ChatscreenError(
            f"Cannot listen on {settings.host} (ports {settings.chat_port}, "
            f"{settings.screen_port}): {exc.strerror or exc}") from None
    finally:
        for app in apps:
            stop_app(app)
    return 0


def start_app(host: str, chat_port: int, screen_port: int,
              fingerprint: str | None) -> list[subprocess.Popen[bytes]]:
    """``chatscreen server --app``: the desktop app, filled in with the ports the server
    listens on (those it chose, for port 0) and its certificate's fingerprint."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    where = f"[{host}]:{chat_port}" if ":" in host else f"{host}:{chat_port}"
    command = [sys.executable, "-m", "chatscreen", "client", "--server", where,
               "--screen-port", str(screen_port)]
    if fingerprint:
        command += ["--fingerprint", fingerprint]
    try:
        return [subprocess.Popen(command, stdin=subprocess.DEVNULL)]
    except OSError as exc:
        print(f"cannot start the app: {exc}", file=sys.stderr, flush=True)
        return []


def stop_app(app: subprocess.Popen[bytes]) -> None:
    """The server stopped: so does the app it started (closing the app, on the other
    hand, leaves the server running)."""
    if app.poll() is None:
        app.terminate()  # it logs out and closes its window (see gui.run_app)
    try:
        app.wait(APP_GRACE)
    except subprocess.TimeoutExpired:
        app.kill()
        app.wait()


# -- passwords and `chatscreen admin` -----------------------------------------------------
#
# A password never comes from a command-line value (process lists, shell history): from a
# file, from the environment, or typed at a terminal prompt without echo.


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        value = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ChatscreenError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not value:
        raise ChatscreenError(f"{path} is empty")
    return value


def _new_password(what: str) -> str:
    """A new password: typed twice at a terminal, else CHATSCREEN_PASSWORD."""
    from chatscreen.protocol.schema import MIN_PASSWORD

    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {what}: ")
        if getpass.getpass("Again: ") != password:
            raise ChatscreenError("the passwords differ")
    else:
        password = os.environ.get("CHATSCREEN_PASSWORD", "")
        if not password:
            raise ChatscreenError("no password: run this on a terminal, or set "
                                  "CHATSCREEN_PASSWORD")
    if len(password) < MIN_PASSWORD:
        raise ChatscreenError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def print_invite(data_dir: Path, host: str | None, port: int, cert: Path | None) -> int:
    """``chatscreen chat --server HOST:PORT --fingerprint SHA256:...``: a first contact that
    cannot be intercepted unnoticed (no trust on first use)."""
    import socket

    from chatscreen.tls import cert_fingerprint

    cert = cert or data_dir / "tls-cert.pem"
    try:
        fp = cert_fingerprint(cert)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ChatscreenError(f"cannot read the server's certificate {cert}: {why} (start "
                              "the server once to make it, or give --tls-cert)") from None
    host = host or socket.gethostname()
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"chatscreen chat --server {where} --fingerprint {fp}")
    print(f"(the app: Server {where}, Fingerprint {fp}; add --user NAME to the line above)")
    return 0


def admin_data_dir(args: argparse.Namespace) -> Path:
    """The server's data directory, found as the server finds it: --data-dir, else
    CHATSCREEN_DATA_DIR, else the config's (--config or CHATSCREEN_CONFIG) data_dir, else
    ./data. It must hold the server's database, except that create-admin and add-user make
    a new one where one was named (not in a ./data that merely is the default)."""
    from chatscreen.config import ServerSettings, load_settings

    settings = load_settings(args.config, data_dir=args.data_dir)
    data_dir = settings.data_dir
    named = args.data_dir is not None or data_dir != ServerSettings.data_dir
    if args.admin_command == "invite" or (data_dir / "chatscreen.db").exists():
        return data_dir
    if not named:
        raise ChatscreenError(
            "no chatscreen data in ./data: give --data-dir DIR (the server's data directory; "
            "create-admin and add-user make a new one there) or --config FILE, or run this in "
            "the folder you started the server from")
    if args.admin_command not in ("create-admin", "add-user"):
        raise ChatscreenError(f"no chatscreen data in {data_dir}: is it the server's data "
                              "directory? (create-admin and add-user make a new one)")
    return data_dir


def await_answer(db: AccountDB, data_dir: Path, request: int) -> tuple[str | None, str]:
    """The running server's answer to a request of `chatscreen admin` (it looks for them
    every second), or None and why there is none: no server runs on ``data_dir``, or none
    answered within ADMIN_WAIT s. An unanswered request is withdrawn."""
    from chatscreen.server.datadir import server_running

    running = server_running(data_dir)
    if running is False:
        why = f"no server is running with the data directory {data_dir}"
    else:
        why = (f"no running server answered within {ADMIN_WAIT:g} s (is it running, with the "
               f"data directory {data_dir}?)")
    deadline = time.monotonic() + (ADMIN_WAIT if running is not False else 0.0)
    while (answer := db.answer_of(request)) is None and time.monotonic() < deadline:
        time.sleep(ADMIN_POLL)
    if answer is None and db.withdraw(request):
        return None, why
    answer = db.answer_of(request)  # (answered just now, if it was not before)
    db.forget(request)
    return answer, why


def report_applied(db: AccountDB, data_dir: Path, request: int) -> None:
    """Say what the running server did with a change stored in the database."""
    answer, why = await_answer(db, data_dir, request)
    if answer is None:
        print(f"{why}: it applies when the server reads it, at the latest when it starts")
    else:
        print(f"the running server applied it: {answer}")


def run_admin(args: argparse.Namespace) -> int:
    from chatscreen.durations import parse_duration
    from chatscreen.protocol.schema import name_problem
    from chatscreen.server.accounts import ADMIN_FAILED, AccountDB, hash_password
    from chatscreen.server.datadir import describe

    cmd = args.admin_command
    data_dir = admin_data_dir(args)
    if cmd == "invite":
        return print_invite(data_dir, args.host, args.chat_port, args.tls_cert)
    name: str | None = getattr(args, "name", None)
    if name is not None:
        name = unicodedata.normalize("NFKC", name)  # as the server takes names
        problem = name_problem(name)
        if problem is not None:
            raise ChatscreenError(f"invalid name {name!r}: {problem}")
    os.umask(PRIVATE_UMASK)
    db = AccountDB.open(data_dir)
    try:
        if cmd in ("create-admin", "add-user"):
            assert name is not None
            role = "admin" if cmd == "create-admin" else args.role
            if db.get(name) is not None:
                raise ChatscreenError(f"'{name}' already has an account (set-role changes it)")
            taken = db.lookalike(name)
            if taken is not None:
                raise ChatscreenError(f"'{name}' looks like '{taken.name}', which has an "
                                      "account")
            # A running server ends the guests using this name (or a look-alike) within a
            # second, and gives the account the private messages from then on.
            taken_name = db.create(name, hash_password(_new_password(name)), role)
            if taken_name is not None:
                raise ChatscreenError(f"'{name}' is taken by the account '{taken_name}'")
            db.log("(admin)", "create", name, f"role={role}")
            print(f"Created {role} '{name}'")
        elif cmd == "set-role":
            assert name is not None
            with db.transaction():
                if not db.set_role(name, args.role):
                    raise ChatscreenError(f"'{name}' has no account")
                db.log("(admin)", "role", name, f"role={args.role}")
                request = db.ask("role", "account", name)
            print(f"'{name}' is now {args.role}")
            report_applied(db, data_dir, request)
        elif cmd == "kick":
            assert name is not None
            with db.transaction():
                request = db.ask("kick", "account", name, args.reason)
                db.log("(admin)", "kick", name, f"reason={args.reason}")
            answer, why = await_answer(db, data_dir, request)
            if answer is None:
                raise ChatscreenError(f"{why}: nobody was kicked")
            if answer.startswith(ADMIN_FAILED):
                raise ChatscreenError(answer.removeprefix(ADMIN_FAILED))
            print(answer)
        elif cmd in ("ban", "unban", "mute", "unmute"):
            if (name is None) == (getattr(args, "address", None) is None):
                raise ChatscreenError(f"{cmd} wants a NAME or --address IP")
            if cmd in ("mute", "unmute"):
                assert name is not None
                kind, target = "mute", name
            elif args.address is not None:
                try:
                    kind, target = "address", str(ipaddress.ip_address(args.address))
                except ValueError:
                    raise ChatscreenError(f"{args.address!r} is not an IP address") from None
            else:
                assert name is not None
                kind, target = "account", name
            done = {"ban": "Banned", "unban": "Unbanned", "mute": "Muted", "unmute": "Unmuted"}
            if cmd in ("unban", "unmute"):
                with db.transaction():
                    if not db.unban(kind, target):
                        raise ChatscreenError(f"{target} is not {done[cmd[2:]].lower()}")
                    db.log("(admin)", cmd, target)
                    request = db.ask(cmd, kind, target)
                print(f"{done[cmd]} {target}")
            else:
                try:
                    seconds = parse_duration(args.duration) if args.duration else None
                except ValueError as exc:
                    raise ChatscreenError(str(exc)) from None
                with db.transaction():
                    ban = db.ban(kind, target, time.time() + seconds if seconds else None,
                                 args.reason, "(admin)")
                    db.log("(admin)", cmd, target, f"duration={seconds} reason={args.reason}"
                           if seconds else f"reason={args.reason}")
                    request = db.ask(cmd, kind, target, args.reason)
                print(f"{done[cmd]} {target} {ban.until_text()}")
            report_applied(db, data_dir, request)
        else:
            now = time.time()
            accounts = db.accounts()
            print(f"Accounts ({len(accounts)}):")
            for a in accounts:
                print(f"  {a.name:<24} {a.role:<10} since {a.created}")
            bans = [b for b in db.bans() if b.active(now)]
            print(f"Bans and mutes ({len(bans)}):")
            for b in bans:
                why = f" ({b.reason})" if b.reason else ""
                print(f"  {b.kind} {b.target} {b.until_text()} by {b.by or '?'}{why}")
    except sqlite3.Error as exc:  # a page found damaged only now
        raise ChatscreenError(describe(data_dir / "chatscreen.db", exc)) from None
    finally:
        db.close()
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


def format_message(m: dict[str, Any], current_room: str | None) -> str:
    """``[HH:MM:SS] user: text``; the text's further lines start with ``  | `` and nothing
    in a name or the text is obeyed (see :mod:`chatscreen.text`)."""
    if m.get("kind") == "notice":  # a moderation notice stored in the room's history
        room = m.get("room")
        where = "" if room is None or room == current_room else f"#{one_line(room)} "
        return f"* {where}{one_line(local_times(m['text']))}"
    when, user, text = local_time(m["ts"]), one_line(m["user"]), display_text(m["text"])
    if m.get("kind") == "file" and m.get("file") is not None:
        text = file_text(m["file"])
    if m.get("to") is not None:
        return f"[{when}] {user} -> {one_line(m['to'])}: {text}"
    room = m.get("room")
    prefix = "" if room is None or room == current_room else f"#{one_line(room)} "
    return f"[{when}] {prefix}{user}: {text}"


PRESENCE_QUIET = 0.5  # s without comings and goings before a run of them is printed


class PresenceRuns:
    """Joins and leaves printed as the app draws them: a run of them (until 0.5 s pass
    without one, or something else is printed) as one line per room, e.g. ``* ci-bot joined
    and left 5 times #general``."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.timer: asyncio.TimerHandle | None = None

    def add(self, room: str, user: str, event: str) -> None:
        self.runs.setdefault(room, []).append({"presence": (one_line(user), event)})
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(PRESENCE_QUIET, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        runs, self.runs = self.runs, {}
        for room, run in runs.items():
            self.out(f"* {presence_line(run, one_line(room))}", flush=True)


def names(users: list[str]) -> str:
    return ", ".join(one_line(u) for u in users)


class PipedInput:
    """Chat lines from a pipe or file: read on a thread, one line each."""

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(loop,), daemon=True).start()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(self._lines.put_nowait, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(self._lines.put_nowait, None)

    async def read(self, room: str) -> str | None:
        return await self._lines.get()

    async def secret(self, prompt: str) -> str | None:
        return os.environ.get("CHATSCREEN_PASSWORD") or None

    @contextlib.contextmanager
    def output(self) -> Iterator[None]:
        yield


class TerminalInput:
    """Chat lines typed on a terminal (prompt_toolkit): what arrives meanwhile is printed
    above the line being typed, which stays as it was (a plain print would write over it)."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession

        # the typed line goes once sent: the server's echo shows it in the timeline
        self._session: Any = PromptSession(erase_when_done=True)

    async def read(self, room: str) -> str | None:
        try:
            return str(await self._session.prompt_async(f"#{one_line(room)}> "))
        except (EOFError, KeyboardInterrupt):  # Ctrl+D, Ctrl+C: leave
            return None

    async def secret(self, prompt: str) -> str | None:
        """A password, typed twice, shown as dots; None if the two differ (or Ctrl+C)."""
        try:
            first = await self._session.prompt_async(prompt, is_password=True)
            again = await self._session.prompt_async("Again: ", is_password=True)
        except (EOFError, KeyboardInterrupt):
            return None
        return str(first) if first == again and first else None

    @contextlib.contextmanager
    def output(self) -> Iterator[None]:
        """While inside, print() goes above the input line."""
        from prompt_toolkit.patch_stdout import patch_stdout

        with patch_stdout():
            yield


def chat_input() -> PipedInput | TerminalInput:
    """prompt_toolkit on a terminal; plain line reading from a pipe or file."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return TerminalInput()
    return PipedInput()


async def connect_client(args: argparse.Namespace, **kwargs: Any) -> Any:
    """Log in as --user: passwords from --password-file / --server-password-file, else
    CHATSCREEN_PASSWORD / CHATSCREEN_SERVER_PASSWORD, else (on a terminal) asked for when
    the server says it wants one."""
    from chatscreen.client import Client
    from chatscreen.errors import ConnectError, ServerError

    host, port = split_server(args)
    password = (_read_secret(getattr(args, "password_file", None))
                or os.environ.get("CHATSCREEN_PASSWORD") or None)
    server_password = (_read_secret(getattr(args, "server_password_file", None))
                       or os.environ.get("CHATSCREEN_SERVER_PASSWORD") or None)
    for _ in range(4):
        client = Client(host, args.user, chat_port=port, screen_port=args.screen_port,
                        password=password, server_password=server_password,
                        **kwargs, **tls_args(args))
        try:
            return await client.connect()
        except ConnectError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ServerError) and cause.code == "bad_password"
                    and sys.stdin.isatty()):
                raise
            print(f"! {one_line(cause.message)}", file=sys.stderr, flush=True)
            if "server password" in cause.message:
                server_password = await asyncio.to_thread(getpass.getpass, "Server password: ")
            else:
                password = await asyncio.to_thread(getpass.getpass,
                                                   f"Password for {args.user}: ")
    raise ChatscreenError("giving up after 4 attempts")


async def run_send_file(args: argparse.Namespace) -> int:
    from chatscreen.cli_files import run_send_file as send

    return await send(args, connect_client)


async def run_get_file(args: argparse.Namespace) -> int:
    from chatscreen.cli_files import run_get_file as get

    return await get(args, connect_client)


async def run_chat(args: argparse.Namespace) -> int:
    """Chat in a room. From a script (stdin not a terminal), the first refused command or
    message stops it: the error on stderr, nothing more sent, exit status 1 (once what was
    sent before is stored)."""
    client = await connect_client(args)
    room: str = args.room
    where = {"room": room}  # the current room, as the loop below changes it
    out = print
    script = not sys.stdin.isatty()
    err_out = sys.stderr if script else sys.stdout
    # errors of requests that whoever made them reports (a command its answer; from a
    # script, its messages too: the first refused one stops it)
    reported = {"rid", "cid"} if script else {"rid"}

    async def show_events() -> None:
        async for ev in client.events():
            if ev.type == "presence":
                presence.add(ev["room"], ev["user"], ev["event"])
                continue
            presence.flush()  # comings and goings before what followed them
            if ev.type == "message":
                out(format_message(ev.fields, where["room"]), flush=True)
                files.shown.add(ev["id"])
            elif ev.type == "history":
                for m in ev["messages"]:
                    out(format_message(m, where["room"]), flush=True)
                    files.shown.add(m["id"])
                history_shown.set()
            elif ev.type == "joined":
                out(f"* joined {one_line(ev['room'])}: {names(ev['users'])}", flush=True)
            elif ev.type == "invited" and ev.get("by") is not None:
                out(f"* {one_line(ev['by'])} invited you to #{one_line(ev['room'])}: type "
                    f"/join {one_line(ev['room'])}", flush=True)
            elif ev.type == "notice" and ev["room"] in client.invitations:
                pass  # the invitation's notice, for older clients: said just above
            elif ev.type == "notice":
                out(f"* {one_line(local_times(ev['text']))}", flush=True)
            elif ev.type == "error" and not (set(ev.fields) & reported):
                out(f"! {one_line(local_times(ev['message']))}", file=err_out, flush=True)
            elif ev.type == "tls" and ev.get("checked"):
                out(f"* {ev['where']}: its certificate is the one given, {ev['fingerprint']}; "
                    "remembered", file=sys.stderr, flush=True)
            elif ev.type == "tls":
                out(f"* first connection to {ev['where']}: pinned its certificate "
                    f"{ev['fingerprint']}; compare it with the server's banner",
                    file=sys.stderr, flush=True)
            elif ev.type == "status" and ev["state"] in ("reconnecting", "disconnected"):
                retry = f", retrying in {ev['retry_in']} s" if ev.get("retry_in") else ""
                out(f"! {ev['state']}: {one_line(local_times(ev.get('reason', '')))}{retry}",
                    file=sys.stderr,
                    flush=True)
            elif ev.type == "status" and ev["state"] == "connected" and shown_connected:
                out("! connected again", file=sys.stderr, flush=True)
            if ev.type == "status" and ev["state"] == "connected":
                shown_connected.append(True)
            if ev.type == "status" and ev["state"] == "disconnected":
                gone.set()

    presence = PresenceRuns(out)
    files = ChatFiles(client, out, err_out, terminal=not script)  # /send, /get
    shown_connected: list[bool] = []
    gone = asyncio.Event()  # disconnected for good
    history_shown = asyncio.Event()
    printer = asyncio.create_task(show_events())
    for invited in sorted(client.invitations):
        out(f"* you are invited to #{one_line(invited)}: type /join {one_line(invited)}",
            flush=True)
    if room not in client.rooms:  # an account's rooms are joined already (the server's list)
        try:
            await client.join(room)
        except ChatscreenError as exc:
            out(f"! cannot join {one_line(room)}: {one_line(str(exc))}", file=sys.stderr,
                flush=True)
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
            await client.close()
            return 1
    # The room's history follows `joined` (the server sends both in one turn, not always in
    # one write): show it before reading input, which may end at once (a script's stdin).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(history_shown.wait(), HISTORY_WAIT)
    typed = chat_input()
    with typed.output():
        try:
            return await _chat_loop(client, typed, where, gone, printer, out, script=script,
                                    err_out=err_out, files=files)
        finally:
            presence.flush()  # the last comings and goings


async def _chat_loop(client: Any, typed: PipedInput | TerminalInput, where: dict[str, str],
                     gone: asyncio.Event, printer: asyncio.Task[None], out: Any, *,
                     script: bool, err_out: Any, files: ChatFiles | None = None) -> int:
    """Carry out each line typed until /quit, the end of input, or a lost connection; from a
    script, until the first refused line too."""
    pending: list[asyncio.Future[Any]] = []
    status = 0
    try:
        while True:
            line_task = asyncio.ensure_future(typed.read(where["room"]))
            gone_task = asyncio.ensure_future(gone.wait())
            done, _ = await asyncio.wait({line_task, gone_task},
                                         return_when=asyncio.FIRST_COMPLETED)
            gone_task.cancel()
            if gone.is_set() or line_task not in done:
                line_task.cancel()
                status = 1
                break
            line = line_task.result()
            if line is None or line.strip() == "/quit":
                break
            if not line.strip():
                continue
            sent = len(pending)
            try:
                if line.strip() == "/register":
                    await _register(client, typed, out)
                    continue
                where["room"] = await _chat_command(client, line, where["room"], pending, out,
                                                    script=script, files=files)
                if script:  # stored, or refused, before the next line is even read
                    await asyncio.gather(*pending[sent:])
            except (ChatscreenError, ConnectionError) as exc:
                out(f"! {one_line(local_times(str(exc)))}", file=err_out, flush=True)
                if script:
                    del pending[sent:]  # said just now
                    status = 1
                    break
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                status = 1
            unseen = [r for r in failed if not isinstance(r, ServerError)]  # not shown yet
            if unseen:
                print(f"{len(unseen)} message(s) not confirmed: "
                      f"{one_line(local_times(str(unseen[0])))}", file=sys.stderr)
    finally:
        if files is not None:
            await files.stop()  # transfers still under way (on a terminal)
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
        await client.close()
    return status


async def _chat_command(client: Any, line: str, room: str, pending: list[asyncio.Future[Any]],
                        out: Any, *, script: bool = False,
                        files: ChatFiles | None = None) -> str:
    """Carry out one chat line (see :mod:`chatscreen.commands`); returns the current room.
    A file sent or fetched goes on beside the chat (from a script, it is waited for)."""
    from chatscreen.cli_files import clean_path
    from chatscreen.commands import HELP, parse_command

    try:
        command = parse_command(line, room)
    except ChatscreenError as exc:
        out(f"! {one_line(str(exc))}", flush=True)
        return room
    kind, a = command.kind, command.args
    if kind == "say":
        pending.append(client.say_nowait(room, a["text"]))
    elif kind == "join":
        await client.join(a["room"])
        return str(a["room"])
    elif kind == "msg":
        client.check_text(a["text"])  # InvalidInput now, not later
        pending.append(asyncio.ensure_future(client.pm(a["to"], a["text"])))
    elif kind == "who":
        out(f"* in {one_line(a['room'])}: {names(await client.who(a['room']))}", flush=True)
    elif kind == "rooms":
        rooms = await client.list_rooms()
        out("* rooms: " + ", ".join(f"{one_line(r['name'])} ({r['users']})" for r in rooms),
            flush=True)
    elif kind == "private":
        await client.create_room(a["room"], private=True)
        return str(a["room"])
    elif kind == "invite":
        await client.invite(a["room"], a["user"])
        out(f"* invited {one_line(a['user'])} to {one_line(a['room'])}", flush=True)
    elif kind == "moderate":
        await client.moderate(**a)
    elif kind in ("send", "get"):
        if files is None:
            files = ChatFiles(client, out, sys.stderr, terminal=not script)
        task = (files.send(clean_path(a["path"]), room) if kind == "send" else
                files.get(a["file"], clean_path(a["path"]) if a["path"] else None))
        if script:
            pending.append(task)  # waited for before the next line
    else:  # help (register and quit are handled by the caller)
        out(f"! {HELP}", flush=True)
    return room


async def _register(client: Any, typed: PipedInput | TerminalInput, out: Any) -> None:
    password = await typed.secret("Password to register your name with: ")
    if password is None:
        out("! the passwords differ; not registered" if isinstance(typed, TerminalInput)
            else "! /register needs a password: run on a terminal, or set CHATSCREEN_PASSWORD",
            flush=True)
        return
    await client.register(password)
    out(f"* registered: from now on only your password logs in as {client.user}", flush=True)


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

    from chatscreen.screen.capture import CaptureError
    from chatscreen.screen.resume import keep_sharing
    from chatscreen.screen.sharing import DEFAULT_FPS, ShareStats

    quality = args.quality  # None: the preset's
    if quality is not None and not 1 <= quality <= 100:
        raise ChatscreenError("--quality must be between 1 and 100")
    fps = args.fps if args.fps is not None else DEFAULT_FPS
    if not 0 < fps <= 120:
        raise ChatscreenError("--fps must be between 0 and 120")
    may_record = _may_record(args.allow_record)
    _check_record_path(args.record)
    client = await connect_client(args)  # reconnects, and the share resumes by itself
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = ShareStats()
    recording = (asyncio.ensure_future(_record_own(client, args.record, stop))
                 if args.record is not None else None)

    def started(w: int, h: int) -> None:
        print(f"Sharing {w}x{h} at about {fps:g} updates/s (preset {args.preset}); "
              "press Ctrl+C to stop", flush=True)

    try:
        await keep_sharing(client, stop, monitor=args.monitor, fps=fps, quality=quality,
                           max_size=_parse_size(args.max_size), stats=stats,
                           on_started=started, preset=args.preset, encoding=args.encoding,
                           viewers=[u.strip() for u in args.only.split(",") if u.strip()]
                           if args.only else None, room=args.room, layers=args.layers,
                           may_record=may_record, on_recording=_show_recorders())
    except CaptureError as exc:
        raise ChatscreenError(str(exc)) from None
    except ConnectionResetError as exc:
        raise ChatscreenError(f"Connection lost: {exc}") from None
    finally:
        stop.set()
        if recording is not None:
            await _report_recording(recording)
        await client.close()
        print(stats.summary(), flush=True)
    return 0


def _may_record(text: str | None) -> str | list[str] | None:
    """--allow-record: "all", or names."""
    if text is None:
        return None
    if text.strip().casefold() == "all":
        return "all"
    return [u.strip() for u in text.split(",") if u.strip()]


def _check_record_path(path: Path | None) -> None:
    """Before anything is sent: a file that can be made, and not one already there."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise ChatscreenError(f"cannot record to {path}: no directory {path.parent}")
    if path.exists():
        raise ChatscreenError(f"{path} exists: record to a new file (nothing was changed)")


def _show_recorders() -> Callable[[list[str]], None]:
    """The sharer's notice, a line each time who records the share changes."""
    shown: list[str] = []

    def show(users: list[str]) -> None:
        if users:
            print(f"\N{BLACK CIRCLE} recording: {', '.join(users)}", flush=True)
        elif shown:
            print("\N{WHITE CIRCLE} recording stopped: nobody records your share now",
                  flush=True)
        shown[:] = users

    return show


async def _record_own(client: Any, path: Path, stop: asyncio.Event) -> Any:
    """``share --record``: watch our own share and record it (as a viewer would, so that
    the server, and so the share list, knows it is recorded)."""
    from chatscreen.screen.recording import Recorder, record_share
    from chatscreen.screen.sharing import find_share

    recorder = Recorder(path)
    try:
        share = await find_share(client, client.user, 30.0)
        await record_share(client, share, recorder, stop)
    finally:
        stats = await asyncio.to_thread(recorder.close)
    return stats


async def _report_recording(recording: asyncio.Future[Any]) -> None:
    try:
        stats = await recording
    except (TimeoutError, ChatscreenError, ConnectionResetError) as exc:
        print(f"! recording failed: {one_line(str(exc))}", file=sys.stderr, flush=True)
        return
    if stats is not None:
        print(stats.summary(), flush=True)


async def run_view(args: argparse.Namespace) -> int:
    from chatscreen.screen.sharing import (
        NoPicture,
        ShareGone,
        find_share,
        snapshot_of,
        why_no_share,
    )

    host, port = split_server(args)
    if args.room is not None and not args.snapshot_to_chat:
        raise ChatscreenError("--room goes with --snapshot-to-chat")
    if args.no_window and args.record is None:
        raise ChatscreenError("--no-window goes with --record")
    _check_record_path(args.record)
    if args.record is not None and args.no_window:
        return await _record_view(args)
    if args.snapshot is None and not args.snapshot_to_chat:
        from chatscreen.screen.viewer import run_viewer_window

        return run_viewer_window(host, port, args.screen_port, args.user, args.sharer,
                                 tls_args(args), record=args.record)
    client = await connect_client(args, reconnect=False)
    try:
        try:  # each way of failing says which it is (see why_no_share)
            share = await find_share(client, args.sharer, args.timeout)
        except TimeoutError:
            why = await why_no_share(client, args.sharer)
            raise ChatscreenError(f"{why} (waited {args.timeout:g} s)") from None
        canvas = await snapshot_of(client, share, args.timeout)
        if args.snapshot_to_chat:
            from chatscreen.cli_files import post_snapshot

            return await post_snapshot(client, share, canvas.pixels, args.room)
    except (NoPicture, ShareGone) as exc:
        raise ChatscreenError(str(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    canvas.save_png(args.snapshot)
    w, h = canvas.size
    print(f"Saved {w}x{h} picture to {args.snapshot}", flush=True)
    return 0


async def _record_view(args: argparse.Namespace) -> int:
    """``view --record FILE --no-window``: record a share until Ctrl+C, SIGTERM or its end."""
    import signal

    from chatscreen.screen.recording import Recorder, record_share
    from chatscreen.screen.sharing import find_share, why_no_share

    client = await connect_client(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    recorder = Recorder(args.record)
    why = "stopped"
    try:
        try:
            share = await find_share(client, args.sharer, args.timeout)
        except TimeoutError:
            why = await why_no_share(client, args.sharer)
            raise ChatscreenError(f"{why} (waited {args.timeout:g} s)") from None
        def started(w: int, h: int) -> None:
            print(f"Recording {share['user']}'s share ({w}x{h}) to {args.record}; press "
                  "Ctrl+C to stop", flush=True)

        why = await record_share(client, share, recorder, stop, on_start=started)
    finally:
        stats = await asyncio.to_thread(recorder.close)
        with contextlib.suppress(Exception):
            await client.close()
    if why != "stopped":
        print(one_line(why), flush=True)
    if stats is None:
        raise ChatscreenError(f"nothing recorded: no picture came ({one_line(why)})")
    print(stats.summary(), flush=True)
    return 0
