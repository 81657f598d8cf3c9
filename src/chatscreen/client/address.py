"""Where a client connects: ``--server host[:port]`` (``[v6]:port`` too) and the chat port."""

from __future__ import annotations

import argparse

from chatscreen.errors import ChatscreenError

DEFAULT_CHAT_PORT = 9999


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
