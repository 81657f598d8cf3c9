"""The desktop app: a window with the Connection, Chat and Screen Share tabs of the original,
and a status line that tells the truth about the connection.

Threading: the network runs on the client library's event loop in its own thread
(:mod:`chatscreen.gui.net`), screen frames are decoded and scaled on a render worker thread
(:mod:`chatscreen.gui.render`), and widgets are touched only here, on the Tk main thread,
which polls the event queue and the frame mailbox every few milliseconds with ``after``.
"""

from __future__ import annotations

import math
import re
import time
import tkinter as tk
from concurrent.futures import ThreadPoolExecutor
from tkinter import font as tkfont
from tkinter import ttk

from chatscreen.gui.chat_tab import ChatTab
from chatscreen.gui.connection_tab import ConnectionTab
from chatscreen.gui.net import NetSession
from chatscreen.gui.screen_tab import ScreenTab
from chatscreen.gui.settings import ClientSettings, save_settings
from chatscreen.protocol import Message

POLL_MS = 8  # the Tk thread looks for events and frames this often
MAX_EVENTS_PER_POLL = 300  # the window stays responsive under a flood of messages
PING_EVERY = 2.0  # s between round-trip measurements
DEFAULT_ROOM = "general"

COLOURS = {"idle": "#9e9e9e", "connecting": "#e0a800", "connected": "#2e9d46",
           "reconnecting": "#e0a800", "disconnected": "#d93025"}


def describe_failure(reason: str) -> str:
    """The library says 'Failed to connect to HOST:PORT: why'; the original said
    'Failed to connect: why'. Keep both: the original's words, then where."""
    m = re.match(r"Failed to connect to (.+?): (.+)$", reason)
    return f"Failed to connect: {m.group(2)} ({m.group(1)})" if m else reason


class App:
    def __init__(self, root: tk.Tk, settings: ClientSettings) -> None:
        self.root = root
        self.settings = settings
        self.net: NetSession | None = None
        self.user = ""
        self.joining: str | None = None
        self.render_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self.state = "idle"
        self.status_text = "Not connected"
        self._reason = ""
        self._retry_at = 0.0
        self._ever_connected = False
        self._next_ping = 0.0
        self._next_tick = 0.0
        self._closed = False
        self._setup_style()
        self._build()
        root.protocol("WM_DELETE_WINDOW", self.quit)
        root.bind_all("<Control-q>", lambda _e: self.quit())
        self._poll_job = root.after(POLL_MS, self._poll)

    # -- look --------------------------------------------------------------------------

    def _setup_style(self) -> None:
        family = "DejaVu Sans" if "DejaVu Sans" in tkfont.families(self.root) else "Helvetica"
        for name in ("TkDefaultFont", "TkTextFont", "TkMenuFont", "TkHeadingFont"):
            tkfont.nametofont(name, self.root).configure(family=family, size=11)
        self.fonts = {
            "body": tkfont.Font(self.root, family=family, size=11),
            "bold": tkfont.Font(self.root, family=family, size=11, weight="bold"),
            "italic": tkfont.Font(self.root, family=family, size=10, slant="italic"),
            "title": tkfont.Font(self.root, family=family, size=14, weight="bold"),
            "small": tkfont.Font(self.root, family=family, size=10),
        }
        style = ttk.Style(self.root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        style.configure("TNotebook.Tab", padding=(16, 6), font=self.fonts["body"])
        style.configure("Title.TLabel", font=self.fonts["title"])
        style.configure("Heading.TLabel", font=self.fonts["bold"])
        style.configure("Hint.TLabel", font=self.fonts["small"], foreground="#6b6b6b")
        style.configure("Message.TLabel", font=self.fonts["bold"])
        style.configure("Status.TLabel", font=self.fonts["body"])
        style.configure("TButton", padding=(10, 4))

    def _build(self) -> None:
        self.root.title("chatscreen")
        self.root.geometry("1100x720")
        self.root.minsize(720, 480)
        # The status line is packed first, so that it keeps its room when the window shrinks.
        bar = ttk.Frame(self.root, padding=(10, 4))
        bar.pack(fill="x", side="bottom")
        self.notebook = ttk.Notebook(self.root)
        self.notebook.pack(fill="both", expand=True, padx=6, pady=(6, 0))
        self.connection_tab = ConnectionTab(self.notebook, self, self.settings)
        self.chat_tab = ChatTab(self.notebook, self)
        self.screen_tab = ScreenTab(self.notebook, self)
        self.notebook.add(self.connection_tab, text="Connection")
        self.notebook.add(self.chat_tab, text="Chat")
        self.notebook.add(self.screen_tab, text="Screen Share")
        self.status_dot = tk.Canvas(bar, width=12, height=12, highlightthickness=0,
                                    background=ttk.Style(self.root).lookup("TFrame",
                                                                           "background"))
        self.status_dot.pack(side="left", padx=(0, 6))
        self._dot = self.status_dot.create_oval(1, 1, 11, 11, fill=COLOURS["idle"], width=0)
        self.status_label = ttk.Label(bar, text=self.status_text, style="Status.TLabel")
        self.status_label.pack(side="left")

    # -- connection --------------------------------------------------------------------

    def connect(self, host: str, chat_port: int, screen_port: int, user: str) -> None:
        if self.net is not None:
            return
        self.chat_tab.reset()
        self.screen_tab.reset()
        self.user = user
        self.joining = DEFAULT_ROOM
        self._ever_connected = False
        self._where = f"{host}:{chat_port}"
        self.settings = ClientSettings(user=user, server=host if chat_port == 9999
                                       else f"{host}:{chat_port}", screen_port=screen_port)
        self.net = NetSession(host, user, chat_port=chat_port, screen_port=screen_port,
                              render_pool=self.render_pool)
        self.connection_tab.set_connected(True)
        self.connection_tab.show("")
        self._set_state("connecting")

    def disconnect(self) -> None:
        net, self.net = self.net, None
        if net is not None:
            net.close()
        self.screen_tab.stop_watching()
        self.connection_tab.set_connected(False)
        self._set_state("disconnected", "you disconnected")
        self.connection_tab.show("Disconnected")

    def _on_status(self, ev: Message) -> None:
        state = ev["state"]
        reason = ev.get("reason") or ""
        if state == "connected":
            first = not self._ever_connected
            self._ever_connected = True
            self._set_state("connected")
            self._next_ping = 0.0
            if first:
                self._on_first_connect()
        elif state == "reconnecting":
            self._retry_at = time.monotonic() + float(ev.get("retry_in") or 0)
            self._set_state("reconnecting", reason)
        elif state == "disconnected":
            never = not self._ever_connected
            net, self.net = self.net, None
            if net is not None:
                net.close()
            self.screen_tab.stop_watching()
            self.connection_tab.set_connected(False)
            text = describe_failure(reason) if never else reason
            self._set_state("disconnected", text)
            self.connection_tab.show(text if never else f"Disconnected: {text}", error=True)
            if never:
                self.show_tab(self.connection_tab)
        elif state == "connecting":
            self._set_state("connecting")

    def _on_first_connect(self) -> None:
        net = self.net
        assert net is not None
        save_settings(self.settings)
        self.root.title(f"chatscreen — {self.user} @ {self._where}")
        self.connection_tab.show(f"Connected to {self._where} as {self.user}")
        user = self.user
        net.call(lambda c: c.join(DEFAULT_ROOM), f"Cannot join {DEFAULT_ROOM}")
        net.call(lambda c: c.history(peer=user, limit=200), "Cannot load private messages")
        self.show_tab(self.chat_tab)
        self.chat_tab.entry.focus_set()

    def show_tab(self, tab: ttk.Frame) -> None:
        self.notebook.select(tab)  # type: ignore[no-untyped-call]

    def _set_state(self, state: str, reason: str = "") -> None:
        self.state = state
        self._reason = reason
        self.status_dot.itemconfigure(self._dot, fill=COLOURS.get(state, COLOURS["idle"]))
        self._refresh_status()

    def _refresh_status(self) -> None:
        state, where = self.state, getattr(self, "_where", "")
        if state == "connecting":
            text = f"Connecting to {where}…"
        elif state == "connected":
            rtt = self.net.rtt if self.net is not None else None
            text = f"Connected to {where} as {self.user}"
            if rtt is not None:
                text += f" (rtt {max(1, round(rtt * 1000))} ms)"
        elif state == "reconnecting":
            left = self._retry_at - time.monotonic()
            text = (f"Reconnecting in {math.ceil(left)} s…" if left > 0.05
                    else "Reconnecting…")
            if self._reason:
                text += f" ({self._reason})"
        elif state == "disconnected":
            text = (self._reason if self._reason.startswith(("Failed", "Username"))
                    else f"Disconnected: {self._reason}" if self._reason else "Disconnected")
        else:
            text = "Not connected"
        if text != self.status_text:
            self.status_text = text
            self.status_label.configure(text=text)

    # -- the Tk thread's loop ----------------------------------------------------------

    def _poll(self) -> None:
        if self._closed:
            return
        try:
            net = self.net
            for _ in range(MAX_EVENTS_PER_POLL):
                if net is None or net is not self.net:
                    break
                try:
                    ev = net.events.get_nowait()
                except Exception:  # queue.Empty
                    break
                self.on_event(ev)
            self.screen_tab.poll()
            now = time.monotonic()
            if self.net is not None and self.state == "connected" and now >= self._next_ping:
                self._next_ping = now + PING_EVERY
                self.net.maybe_ping()
            if now >= self._next_tick:
                self._next_tick = now + 0.25
                self._refresh_status()
                self.chat_tab.tick()
        finally:
            if not self._closed:
                self._poll_job = self.root.after(POLL_MS, self._poll)

    def on_event(self, ev: Message) -> None:
        if ev.type == "status":
            self._on_status(ev)
        elif ev.type == "gui_rtt":
            self._refresh_status()
        elif ev.type == "gui_error":
            self.connection_tab.show(ev["text"], error=True)
            self.status_label.configure(text=f"{self.status_text} — {ev['text']}")
        else:
            self.chat_tab.on_event(ev)
            self.screen_tab.on_event(ev)

    def quit(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.root.after_cancel(self._poll_job)
        if self.net is not None:
            self.net.close()
            self.net = None
        self.render_pool.shutdown(wait=False, cancel_futures=True)
        self.root.destroy()
