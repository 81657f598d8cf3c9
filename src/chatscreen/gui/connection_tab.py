"""The Connection tab: username, server, Connect / Disconnect, and what happened."""

from __future__ import annotations

import argparse
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING

from chatscreen.client.address import split_server
from chatscreen.errors import ChatscreenError
from chatscreen.gui.settings import ClientSettings, server_key
from chatscreen.text import one_line
from chatscreen.tls import parse_fingerprint

if TYPE_CHECKING:
    from chatscreen.gui.host import ConnectionHost


class ConnectionTab(ttk.Frame):
    def __init__(self, master: tk.Misc, app: ConnectionHost, settings: ClientSettings) -> None:
        super().__init__(master, padding=24)
        self.app = app
        self._build()
        # No tk.StringVar here on purpose: a Tcl variable's __del__ calls Tcl, and if the
        # garbage collector runs it on another thread that call blocks for a second and fails.
        for label, value in (("Username", settings.user), ("Server", settings.server),
                             ("Screen port", str(settings.screen_port)),
                             ("Fingerprint", settings.fingerprints.get(settings.server, ""))):
            self.entries[label].insert(0, value)
        self.entries["Server"].bind("<FocusOut>", self._on_server_changed, add="+")
        # Typing goes to the first field: a name, then Enter connects as filled in.
        self.entries["Username"].focus_set()
        self.entries["Username"].icursor("end")

    def _build(self) -> None:
        body = self.app.fonts["body"]
        ttk.Label(self, text="Connect to a chatscreen server", style="Title.TLabel").grid(
            row=0, column=0, columnspan=3, sticky="w", pady=(0, 16))
        rows = [("Username", ""),
                ("Password", "only if your name is registered"),
                ("Server", "HOST or HOST:PORT (chat port, default 9999)"),
                ("Screen port", "default 9998"),
                ("Server password", "only if the server asks for one"),
                ("Fingerprint", "SHA256:… of the server's certificate, from its admin: "
                                "checked even the first time (optional)")]
        self.entries: dict[str, ttk.Entry] = {}
        for i, (label, hint) in enumerate(rows, start=1):
            ttk.Label(self, text=label).grid(row=i, column=0, sticky="w", pady=4, padx=(0, 12))
            # passwords are shown as dots, kept in memory only, never saved
            secret = "password" in label.lower()
            entry = ttk.Entry(self, width=32, font=body, show="•" if secret else "")
            if label == "Fingerprint":
                entry.configure(width=48)
            entry.grid(row=i, column=1, sticky="w", pady=4, ipady=2)
            entry.bind("<Return>", lambda _e: self.connect())
            self.entries[label] = entry
            ttk.Label(self, text=hint, style="Hint.TLabel").grid(row=i, column=2, sticky="w",
                                                                padx=(10, 0))
        buttons = ttk.Frame(self)
        buttons.grid(row=len(rows) + 1, column=1, sticky="w", pady=(14, 8))
        self.connect_button = ttk.Button(buttons, text="Connect", command=self.connect,
                                         style="Accent.TButton")
        self.connect_button.pack(side="left")
        self.disconnect_button = ttk.Button(buttons, text="Disconnect",
                                            command=self.app.disconnect, state="disabled")
        self.disconnect_button.pack(side="left", padx=(8, 0))
        self.message = ttk.Label(self, text="", style="Message.TLabel", wraplength=640)
        self.message.grid(row=len(rows) + 2, column=0, columnspan=3, sticky="w", pady=(8, 0))

    def connect(self, *, password: str | None = None,
                server_password: str | None = None) -> None:
        """Connect with what the fields say (``password``, ``server_password``: used when
        their field is empty)."""
        user = self.entries["Username"].get().strip()
        if not user:
            self.show("Please enter a username", error=True)
            self.entries["Username"].focus_set()
            return
        try:
            host, chat_port = split_server(argparse.Namespace(
                server=self.entries["Server"].get().strip() or "localhost", chat_port=None))
            screen_port = int(self.entries["Screen port"].get().strip() or "9998")
        except (ChatscreenError, ValueError):
            self.show("The server is HOST or HOST:PORT and the screen port a number",
                      error=True)
            return
        typed = self.entries["Fingerprint"].get().strip()
        try:
            fingerprint = parse_fingerprint(typed) if typed else None
        except ValueError:
            self.show("The fingerprint is SHA256: and 32 two-digit hex numbers, as the "
                      "server's banner or `chatscreen admin invite` prints it", error=True)
            return
        self.app.connect(host, chat_port, screen_port, user,
                         password=self.entries["Password"].get() or password,
                         server_password=self.entries["Server password"].get()
                         or server_password,
                         fingerprint=fingerprint)

    def _on_server_changed(self, _event: object) -> None:
        """Another server: the fingerprint remembered for it (or none), unless the user
        typed one of their own."""
        remembered = self.app.settings.fingerprints
        entry = self.entries["Fingerprint"]
        typed = entry.get().strip()
        try:
            if typed and parse_fingerprint(typed) not in remembered.values():
                return
        except ValueError:
            return  # being typed: leave it
        try:
            host, port = split_server(argparse.Namespace(
                server=self.entries["Server"].get().strip() or "localhost", chat_port=None))
        except ChatscreenError:
            return
        entry.delete(0, "end")
        entry.insert(0, remembered.get(server_key(host, port), ""))

    def set_connected(self, active: bool) -> None:
        """active: a session exists (connecting, connected or reconnecting)."""
        self.connect_button.configure(state="disabled" if active else "normal")
        self.disconnect_button.configure(state="normal" if active else "disabled")
        for entry in self.entries.values():
            entry.configure(state="disabled" if active else "normal")

    def show(self, text: str, *, error: bool = False) -> None:
        self.message.configure(text=one_line(text, isolate=False),  # it may quote the server
                               foreground="#b3261e" if error else "#1e6b2f")
