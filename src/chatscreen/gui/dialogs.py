"""Small dialogs. They never run a nested event loop: an answer arrives by callback."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from chatscreen.protocol.schema import MIN_PASSWORD


class NewPasswordDialog(tk.Toplevel):
    """Asks for a new password twice, shown as dots, for ``/register``. ``on_done`` gets
    the password once both agree; Cancel or Escape closes it with nothing sent."""

    def __init__(self, master: tk.Misc, user: str, on_done: Callable[[str], None]) -> None:
        super().__init__(master)
        self.title(f"Register {user}")
        self.transient(master.winfo_toplevel())
        self.resizable(False, False)
        self.on_done = on_done
        body = ttk.Frame(self, padding=16)
        body.pack(fill="both", expand=True)
        ttk.Label(body, text=f"Own the name '{user}': from now on only this password logs "
                  "in as it.", wraplength=360).grid(row=0, column=0, columnspan=2, sticky="w",
                                                    pady=(0, 10))
        self.entries: list[ttk.Entry] = []
        for row, label in enumerate(("Password", "Again"), start=1):
            ttk.Label(body, text=label).grid(row=row, column=0, sticky="w", padx=(0, 10),
                                             pady=3)
            entry = ttk.Entry(body, show="•", width=28)
            entry.grid(row=row, column=1, sticky="w", pady=3)
            entry.bind("<Return>", lambda _e: self.submit())
            entry.bind("<Escape>", lambda _e: self.destroy())
            self.entries.append(entry)
        self.message = ttk.Label(body, text="", foreground="#b3261e", wraplength=360)
        self.message.grid(row=3, column=0, columnspan=2, sticky="w", pady=(6, 0))
        buttons = ttk.Frame(body)
        buttons.grid(row=4, column=0, columnspan=2, sticky="e", pady=(10, 0))
        self.ok_button = ttk.Button(buttons, text="Register", command=self.submit)
        self.ok_button.pack(side="left")
        ttk.Button(buttons, text="Cancel", command=self.destroy).pack(side="left", padx=(8, 0))
        self.entries[0].focus_set()

    def submit(self) -> None:
        password, again = (e.get() for e in self.entries)
        if len(password) < MIN_PASSWORD:
            self.message.configure(text=f"A password needs at least {MIN_PASSWORD} characters")
        elif password != again:
            self.message.configure(text="The two passwords differ")
        else:
            self.destroy()
            self.on_done(password)
            return
        for e in self.entries:
            e.delete(0, "end")
        self.entries[0].focus_set()
