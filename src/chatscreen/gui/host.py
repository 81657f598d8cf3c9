"""What the tabs use of the app that holds them, as Protocols: the tabs depend on these, the
app (gui/app.py) on the tabs, and no import goes back up."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from tkinter import font as tkfont
from typing import Any, Protocol

from chatscreen.gui.net import NetSession
from chatscreen.gui.settings import ClientSettings


class Host(Protocol):
    """What every tab uses: the fonts, and the connection (None while offline)."""

    fonts: dict[str, tkfont.Font]
    net: NetSession | None


class ChatHost(Host, Protocol):
    user: str
    joining: str | None  # the room the app opens with, until it is shown
    open_url: Callable[[str], object]
    ask_open_file: Callable[[], str]  # a file to attach ("" if none was chosen)
    ask_save_file: Callable[[str], str]  # where to save a file offered under a name

    def cycle_tabs(self, step: int) -> str: ...

    def notify(self, text: str) -> None: ...

    def quit(self) -> None: ...


class ConnectionHost(Host, Protocol):
    settings: ClientSettings

    def connect(self, host: str, chat_port: int, screen_port: int, user: str, *,
                password: str | None = None, server_password: str | None = None,
                fingerprint: str | None = None) -> None: ...

    def disconnect(self) -> None: ...


class ScreenHost(Host, Protocol):
    user: str
    root: tk.Tk
    render_pool: ThreadPoolExecutor

    def px(self, n: float) -> int: ...

    def set_sharing(self, sharing: bool, detail: str = "") -> None: ...

    def snapshot_target(self, share: dict[str, Any] | None) -> str | None: ...

    def post_snapshot(self, share: dict[str, Any], take: Callable[[], Any]) -> None: ...

    def quit(self) -> None: ...
