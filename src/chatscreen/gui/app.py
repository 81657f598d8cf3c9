"""The desktop app: a window with the Connection, Chat and Screen Share tabs of the original,
and a status line that tells the truth about the connection.

Threading: the network runs on the client library's event loop in its own thread
(:mod:`chatscreen.gui.net`), screen frames are decoded and scaled on a render worker thread
(:mod:`chatscreen.gui.render`), and widgets are touched only here, on the Tk main thread,
which polls the event queue and the frame mailbox every few milliseconds with ``after``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import tkinter as tk
import webbrowser
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from tkinter import filedialog, ttk
from tkinter import font as tkfont
from typing import Any, Literal

from chatscreen.gui.chat_tab import ChatTab
from chatscreen.gui.connection_tab import ConnectionTab
from chatscreen.gui.net import NetSession
from chatscreen.gui.screen_tab import ScreenTab
from chatscreen.gui.settings import ClientSettings, save_settings, server_key
from chatscreen.protocol import Message
from chatscreen.text import local_times, one_line

POLL_MS = 8  # the Tk thread looks for events and frames this often
MAX_EVENTS_PER_POLL = 300  # the window stays responsive under a flood of messages
PING_EVERY = 2.0  # s between round-trip measurements
DEFAULT_ROOM = "general"
SCREEN_SHARE_MAX = 0.92  # the window takes at most this share of the screen's width/height

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
        self.first_contact: dict[str, Any] | None = None  # the "tls" event of a new pin
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
        self._next_second = 0.0
        self._closed = False
        self._closing: list[NetSession] = []  # sessions logging out in the background
        self.base_title = "chatscreen"
        self.unseen = 0  # messages that arrived while the window was not focused
        self.bells = 0
        self.sharing = False
        self.open_url: Callable[[str], object] = webbrowser.open
        # the file dialogs (tests put their own answers here)
        self.ask_open_file: Callable[[], str] = lambda: str(
            filedialog.askopenfilename(parent=self.root, title="Attach a file") or "")
        self.ask_save_file: Callable[[str], str] = lambda name: str(
            filedialog.asksaveasfilename(parent=self.root, title="Save as",
                                         initialfile=name) or "")
        self._setup_scaling()
        self._setup_style()
        self._build()
        root.protocol("WM_DELETE_WINDOW", self.quit)
        self._bind_shortcuts()
        root.bind("<FocusIn>", self._on_focus_in, add="+")
        self._poll_job = root.after(POLL_MS, self._poll)
        # a guest's rooms of its last session in this window: (server, user, rooms)
        self._guest_rooms: tuple[str, str, list[str]] = ("", "", [])
        root.after_idle(self.auto_connect)

    # -- look --------------------------------------------------------------------------

    def _setup_scaling(self) -> None:
        """High DPI: Tk turns point sizes into pixels with ``tk scaling`` (pixels per point),
        taken from the screen's reported DPI. ``CHATSCREEN_SCALE`` (or the desktop's
        ``GDK_SCALE``) multiplies it, for screens that report 96 DPI but are not."""
        self.scale = 1.0
        for var in ("CHATSCREEN_SCALE", "GDK_SCALE"):
            try:
                factor = float(os.environ.get(var, ""))
            except ValueError:
                continue
            if 0.5 <= factor <= 4:
                self.scale = factor
                break
        base = float(self.root.tk.call("tk", "scaling"))
        self.dpi = base * 72 * self.scale
        self.root.tk.call("tk", "scaling", base * self.scale)
        # Pixel sizes (paddings, the window) follow the same factor as the fonts.
        self.px_scale = max(1.0, self.dpi / 96)

    def px(self, n: float) -> int:
        return round(n * self.px_scale)

    def _setup_style(self) -> None:
        families = set(tkfont.families(self.root))
        family = next((f for f in ("Inter", "Noto Sans", "DejaVu Sans", "Liberation Sans")
                       if f in families), "Helvetica")
        # Sizes in points (positive): Tk scales them to the screen's DPI (see above).
        for name, size in (("TkDefaultFont", 11), ("TkTextFont", 11), ("TkMenuFont", 11),
                           ("TkHeadingFont", 11), ("TkCaptionFont", 12),
                           ("TkSmallCaptionFont", 10), ("TkTooltipFont", 10)):
            tkfont.nametofont(name, self.root).configure(family=family, size=size)
        spec: dict[str, tuple[int, Literal["normal", "bold"], Literal["roman", "italic"]]] = {
            "body": (11, "normal", "roman"), "bold": (11, "bold", "roman"),
            "italic": (10, "normal", "italic"), "title": (15, "bold", "roman"),
            "small": (10, "normal", "roman"), "banner": (12, "bold", "roman")}
        self.fonts: dict[str, tkfont.Font] = {}
        for key, (size, weight, slant) in spec.items():
            name = f"Chatscreen{key.title()}"
            try:
                font = tkfont.Font(self.root, name=name, exists=True)
                font.configure(family=family, size=size, weight=weight, slant=slant)
            except tk.TclError:
                font = tkfont.Font(self.root, name=name, family=family, size=size,
                                   weight=weight, slant=slant)
            self.fonts[key] = font
        px = self.px
        style = ttk.Style(self.root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        bg = "#f3f4f6"
        style.configure(".", background=bg)
        style.configure("TFrame", background=bg)
        style.configure("TLabel", background=bg)
        style.configure("TRadiobutton", background=bg)
        style.configure("TNotebook", background=bg, borderwidth=0)
        style.configure("TNotebook.Tab", padding=(px(18), px(7)), font=self.fonts["body"])
        style.map("TNotebook.Tab", background=[("selected", "#ffffff"), ("!selected", "#e3e5e8")])
        style.configure("Title.TLabel", font=self.fonts["title"], foreground="#1f2328")
        style.configure("Heading.TLabel", font=self.fonts["bold"], foreground="#1f2328")
        style.configure("Hint.TLabel", font=self.fonts["small"], foreground="#6b7078")
        style.configure("Message.TLabel", font=self.fonts["bold"])
        style.configure("Status.TLabel", font=self.fonts["body"], foreground="#3c4043")
        style.configure("TButton", padding=(px(12), px(5)))
        style.configure("Accent.TButton", padding=(px(12), px(5)), foreground="#ffffff",
                        background="#0b57d0", bordercolor="#0b57d0",
                        font=self.fonts["bold"])
        style.map("Accent.TButton",
                  background=[("disabled", "#a8c4f0"), ("pressed", "#0842a0"),
                              ("active", "#1a66e0")],
                  foreground=[("disabled", "#eef3fb")])
        style.configure("Selected.TButton", padding=(px(12), px(5)), background="#d3e3fd",
                        foreground="#041e49", bordercolor="#0b57d0")
        style.configure("Card.TFrame", background="#ffffff", relief="solid", borderwidth=1,
                        bordercolor="#d0d4da")
        style.configure("Card.TLabel", background="#ffffff")
        style.configure("Card.TCheckbutton", background="#ffffff")
        style.configure("Recording.TLabel", background="#ffffff", foreground="#c5221f",
                        font=self.fonts["bold"])
        style.configure("CardHeading.TLabel", background="#ffffff", font=self.fonts["bold"])
        style.configure("CardHint.TLabel", background="#ffffff", foreground="#6b7078",
                        font=self.fonts["small"])
        style.configure("Banner.TFrame", background="#c5221f")
        style.configure("Banner.TLabel", background="#c5221f", foreground="#ffffff",
                        font=self.fonts["banner"])
        style.configure("BannerHint.TLabel", background="#c5221f", foreground="#fde7e6",
                        font=self.fonts["small"])
        style.configure("Banner.TButton", padding=(px(12), px(3)), foreground="#c5221f",
                        background="#ffffff", font=self.fonts["bold"])
        style.map("Banner.TButton", background=[("active", "#fde7e6")])
        self.root.configure(background=bg)

    def _build(self) -> None:
        px = self.px
        self.root.title("chatscreen")
        # Never larger than the screen, at any scale (room left for a panel and the frame).
        sw, sh = self.root.winfo_screenwidth(), self.root.winfo_screenheight()
        fit_w, fit_h = int(sw * SCREEN_SHARE_MAX), int(sh * SCREEN_SHARE_MAX)
        self.root.geometry(f"{min(px(1100), fit_w)}x{min(px(720), fit_h)}")
        self.root.minsize(min(px(760), fit_w), min(px(500), fit_h))
        # The status line is packed first, so that it keeps its room when the window shrinks.
        bar = ttk.Frame(self.root, padding=(px(10), px(5)))
        bar.pack(fill="x", side="bottom")
        # Shown across the top of every tab while the screen is shared: hard to miss.
        self.banner = ttk.Frame(self.root, style="Banner.TFrame", padding=(px(14), px(8)))
        self.banner_label = ttk.Label(self.banner, text="●  You are sharing your screen",
                                      style="Banner.TLabel")
        self.banner_label.pack(side="left")
        self.banner_detail = ttk.Label(self.banner, text="", style="BannerHint.TLabel")
        self.banner_detail.pack(side="left", padx=(px(14), 0))
        self.banner_stop = ttk.Button(self.banner, text="Stop sharing", style="Banner.TButton",
                                      command=lambda: self.screen_tab.stop_share())
        self.banner_stop.pack(side="right")
        self.notebook = ttk.Notebook(self.root)
        self.notebook.pack(fill="both", expand=True, padx=px(8), pady=(px(8), 0))
        self.connection_tab = ConnectionTab(self.notebook, self, self.settings)
        self.chat_tab = ChatTab(self.notebook, self)
        self.screen_tab = ScreenTab(self.notebook, self)
        self.notebook.add(self.connection_tab, text="Connection")
        self.notebook.add(self.chat_tab, text="Chat")
        self.notebook.add(self.screen_tab, text="Screen Share")
        d = px(12)
        self.status_dot = tk.Canvas(bar, width=d, height=d, highlightthickness=0,
                                    background=ttk.Style(self.root).lookup("TFrame",
                                                                           "background"))
        self.status_dot.pack(side="left", padx=(0, px(6)))
        self._dot = self.status_dot.create_oval(1, 1, d - 1, d - 1, fill=COLOURS["idle"],
                                                width=0)
        self.status_label = ttk.Label(bar, text=self.status_text, style="Status.TLabel")
        self.status_label.pack(side="left")

    # -- connection --------------------------------------------------------------------

    def connect(self, host: str, chat_port: int, screen_port: int, user: str, *,
                password: str | None = None, server_password: str | None = None,
                fingerprint: str | None = None) -> None:
        if self.net is not None:
            return
        self._guest_rooms = (self.settings.server, self.user.casefold(),
                             [k[1:] for k in self.chat_tab.order if k.startswith("#")])
        self.chat_tab.reset()
        self.screen_tab.reset()
        self.user = user
        self.joining = DEFAULT_ROOM
        self._ever_connected = False
        self._where = f"{host}:{chat_port}"
        self.first_contact = None
        server = server_key(host, chat_port)
        fingerprints = dict(self.settings.fingerprints)
        if fingerprint:
            fingerprints[server] = fingerprint
        self.settings = ClientSettings(user=user, server=server, screen_port=screen_port,
                                       fingerprints=fingerprints,
                                       auto_connect=self.settings.auto_connect,
                                       password=password is not None,
                                       server_password=server_password is not None)
        self.net = NetSession(host, user, chat_port=chat_port, screen_port=screen_port,
                              render_pool=self.render_pool, password=password,
                              server_password=server_password, fingerprint=fingerprint)
        self.connection_tab.set_connected(True)
        self.connection_tab.show("")
        self._set_state("connecting")

    def disconnect(self) -> None:
        self.chat_tab.send_marks(now=True)
        net, self.net = self.net, None
        if net is not None:
            self._close_session(net)
        self.chat_tab.give_back_unsent("you disconnected")
        self.screen_tab.stop_watching()
        self.set_sharing(False)
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
            if self.net is not None:  # what the server keeps of us: read markers, invitations
                client = self.net.client
                self.chat_tab.set_state(dict(client.read_markers), dict(client.invitations))
            if first:
                self._on_first_connect()
        elif state == "reconnecting":
            self._retry_at = time.monotonic() + float(ev.get("retry_in") or 0)
            self._set_state("reconnecting", reason)
        elif state == "disconnected":
            never = not self._ever_connected
            net, self.net = self.net, None
            if net is not None:
                self._close_session(net)
            self.chat_tab.give_back_unsent(reason or "disconnected")
            self.screen_tab.stop_watching()
            self.set_sharing(False)
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
        self.base_title = f"chatscreen — {self.user} @ {self._where}"
        self._refresh_title()
        self.connection_tab.show(f"Connected to {self._where} as {self.user}. "
                                 f"{self.first_contact_text()}".strip())
        user = self.user
        rooms = self._rooms_to_join(net)
        for room in rooms:
            self._join(net, room)
        # the room shown first: #general if it is among ours, else the first of them
        ours = sorted(net.client.server_rooms or rooms, key=str.casefold)
        if ours and DEFAULT_ROOM.casefold() not in {r.casefold() for r in ours}:
            self.joining = ours[0]
        net.call(lambda c: c.history(peer=user, limit=200), "Cannot load private messages")
        self.show_tab(self.chat_tab)
        self.chat_tab.entry.focus_set()

    @staticmethod
    def _join(net: NetSession, room: str) -> None:
        net.call(lambda c: c.join(room), f"Cannot join {room}")

    def _rooms_to_join(self, net: NetSession) -> list[str]:
        """An account's rooms are the server's (the client library joins them again); a
        guest's, those it had in this window before (Disconnect / Connect); else #general."""
        if net.client.server_rooms:
            return []
        server, user, rooms = self._guest_rooms
        if net.client.server_rooms is None and (server, user) == (self.settings.server,
                                                                 self.user.casefold()):
            return rooms or [DEFAULT_ROOM]
        return [DEFAULT_ROOM]

    def auto_connect(self) -> None:
        """At launch: connect as the user who connected last, if the settings say so
        (``auto_connect``) and the passwords it needs are at hand (CHATSCREEN_PASSWORD,
        CHATSCREEN_SERVER_PASSWORD: the app never saves one)."""
        s = self.settings
        if not (s.auto_connect and s.connected_before and s.user) or self.net is not None:
            return
        password = os.environ.get("CHATSCREEN_PASSWORD") or None
        server_password = os.environ.get("CHATSCREEN_SERVER_PASSWORD") or None
        if (s.password and password is None) or (s.server_password and server_password is None):
            self.connection_tab.show(f"Give the password for {s.user} and Connect")
            return
        self.connection_tab.connect(password=password if s.password else None,
                                    server_password=server_password if s.server_password
                                    else None)

    def first_contact_text(self) -> str:
        """What the user should know of a certificate seen for the first time."""
        ev = self.first_contact
        if ev is None:
            return ""
        if ev.get("checked"):
            return (f"Its certificate {ev['fingerprint']} is the one given; it is "
                    "remembered.")
        return (f"First connection to {ev['where']}: its certificate is {ev['fingerprint']}. "
                "Compare it with the server's banner (or ask its admin for `chatscreen admin "
                "invite`); it is remembered from now on.")

    def _bind_shortcuts(self) -> None:
        """Window-wide keys, in a bind tag put first on every widget: class bindings (an
        entry's own Tab handling, for one) must not swallow them."""
        tag = "ChatscreenKeys"
        keys: list[tuple[str, Callable[[], object]]] = [
            ("<Control-q>", self.quit), ("<Control-Q>", self.quit),
            ("<Control-Tab>", lambda: self.cycle_tabs(1)),
            ("<Control-Shift-Tab>", lambda: self.cycle_tabs(-1)),
            ("<Control-ISO_Left_Tab>", lambda: self.cycle_tabs(-1)),
            ("<F11>", lambda: self.screen_tab.toggle_fullscreen()),
        ]
        for seq, action in keys:
            def handler(_e: object, action: Callable[[], object] = action) -> str:
                action()
                return "break"

            self.root.bind_class(tag, seq, handler)

        def tag_all(w: tk.Misc) -> None:
            tags = w.bindtags()
            if tag not in tags:
                w.bindtags((tag, *tags))
            for child in w.winfo_children():
                tag_all(child)

        tag_all(self.root)

    def show_tab(self, tab: ttk.Frame) -> None:
        self.notebook.select(tab)  # type: ignore[no-untyped-call]

    def cycle_tabs(self, step: int) -> str:
        """Ctrl+Tab / Ctrl+Shift+Tab."""
        tabs = self.notebook.tabs()  # type: ignore[no-untyped-call]
        current = tabs.index(self.notebook.select())  # type: ignore[no-untyped-call]
        self.notebook.select(tabs[(current + step) % len(tabs)])  # type: ignore[no-untyped-call]
        selected = self.notebook.nametowidget(self.notebook.select())  # type: ignore[no-untyped-call]
        if selected is self.chat_tab:
            self.chat_tab.entry.focus_set()
        else:
            self.notebook.focus_set()
        return "break"

    # -- notices, title, sharing indicator ---------------------------------------------

    def has_focus(self) -> bool:
        try:
            return self.root.focus_get() is not None
        except (KeyError, tk.TclError):  # focus in a widget Tkinter does not know (popdown)
            return True

    def notify(self, text: str) -> None:
        """A message from someone else arrived: if the window is not focused, count it in
        the title and ring the bell."""
        if self.has_focus():
            return
        self.unseen += 1
        self.bells += 1
        self.root.bell()
        self._refresh_title()

    def _on_focus_in(self, _event: object) -> None:
        if self.unseen:
            self.unseen = 0
            self._refresh_title()

    def _refresh_title(self) -> None:
        title = self.base_title
        if self.sharing:
            title = f"● Sharing your screen — {title}"
        if self.unseen:
            title = f"({self.unseen}) {title}"
        if self.root.title() != title:
            self.root.title(title)

    def set_sharing(self, sharing: bool, detail: str = "") -> None:
        self.sharing = sharing
        if sharing:
            self.banner_detail.configure(text=detail)
            if not self.banner.winfo_ismapped():
                self.banner.pack(fill="x", side="top", before=self.notebook)
        else:
            self.banner.pack_forget()
        self._refresh_title()

    def _share_tick(self) -> None:
        net = self.net
        stats = net.share_stats if net is not None else None
        if self.sharing and stats is not None:
            secs = max(time.monotonic() - stats.started, 1e-6)
            channel = stats.channel
            recorders = list(channel.recorders) if channel is not None else []
            recording = (f"\N{BLACK CIRCLE} Recording ({', '.join(recorders)})  ·  "
                         if recorders else "")
            self.banner_detail.configure(
                text=f"{recording}{self.screen_tab.share_detail}  ·  sending "
                     f"{stats.frames / secs:.1f} frames/s, {stats.bytes * 8 / secs / 1e6:.1f}"
                     " Mbit/s")
            self.screen_tab.show_viewers(list(channel.viewers) if channel is not None else None)
            self.screen_tab.show_recorders(recorders)

    def snapshot_target(self, share: dict[str, Any] | None) -> str | None:
        return self.chat_tab.files.snapshot_target(share)

    def post_snapshot(self, share: dict[str, Any], take: Callable[[], Any]) -> None:
        self.chat_tab.files.post_snapshot(share, take)

    def _set_state(self, state: str, reason: str = "") -> None:
        self.state = state
        self.chat_tab.set_live(state == "connected")
        self._reason = one_line(local_times(reason), isolate=False)  # it may quote the server
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
            first = self.first_contact
            if first is not None and not first.get("checked"):
                text += (f" — new certificate {first['fingerprint']}: compare it with the "
                         "server's banner")
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
            self.chat_tab.flush()
            self.screen_tab.poll()
            now = time.monotonic()
            if self.net is not None and self.state == "connected" and now >= self._next_ping:
                self._next_ping = now + PING_EVERY
                self.net.maybe_ping()
            if now >= self._next_tick:
                self._next_tick = now + 0.25
                self._refresh_status()
                self.chat_tab.tick()
                if self.unseen and self.has_focus():  # FocusIn may not come (no WM)
                    self._on_focus_in(None)
            if now >= self._next_second:
                self._next_second = now + 1.0
                self.screen_tab.tick()
                self._share_tick()
        finally:
            if not self._closed:
                self._poll_job = self.root.after(POLL_MS, self._poll)

    def on_event(self, ev: Message) -> None:
        if ev.type == "registered":  # from now on this name logs in with a password
            self.settings.password = True
            save_settings(self.settings)
        if ev.type == "status":
            self._on_status(ev)
        elif ev.type == "tls":
            self.first_contact = ev.fields
        elif ev.type == "gui_rtt":
            self._refresh_status()
        elif ev.type == "gui_error":
            text = local_times(ev["text"])
            self.connection_tab.show(text, error=True)
            self.status_label.configure(
                text=f"{self.status_text} — {one_line(text, isolate=False)}")
        else:
            self.chat_tab.on_event(ev)
            self.screen_tab.on_event(ev)

    def _close_session(self, net: NetSession) -> None:
        """Stop sharing and watching, log out: in the background (the window stays live)."""
        self._closing = [n for n in self._closing if not n.close_done.is_set()]
        self._closing.append(net)
        net.close()

    def quit(self) -> None:
        """Ctrl+Q or closing the window: stop sharing, disconnect, close the window."""
        if self._closed:
            return
        self._closed = True
        self.root.after_cancel(self._poll_job)
        self.chat_tab.send_marks(now=True)
        if self.net is not None:
            self._close_session(self.net)
            self.net = None
        self.render_pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(tk.TclError):  # already destroyed
            self.root.destroy()
        # Objects whose __del__ calls Tcl (photos, fonts) are freed here, on the Tk thread.
        # Left to the garbage collector (the App is full of reference cycles) they could be
        # freed on the network thread, where each such call blocks for a second and raises
        # "main thread is not in main loop".
        self.screen_tab.release()
        self.chat_tab.files.release()
        self.fonts.clear()

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """After the window is gone: wait until every session has logged out (so that the
        process does not exit in the middle). True if they all did in time."""
        deadline = time.monotonic() + timeout
        for net in self._closing:
            if not net.close_done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True
