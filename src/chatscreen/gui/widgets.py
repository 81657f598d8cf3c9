"""Small widget helpers shared by the tabs (one look for every list)."""

from __future__ import annotations

import tkinter as tk
from tkinter import font as tkfont


def styled_listbox(master: tk.Misc, font: tkfont.Font, *, width: int,
                   height: int) -> tk.Listbox:
    return tk.Listbox(master, width=width, height=height, activestyle="none",
                      exportselection=False, font=font, relief="flat", borderwidth=0,
                      highlightthickness=1, highlightbackground="#d0d4da",
                      highlightcolor="#0b57d0", selectbackground="#d3e3fd",
                      selectforeground="#041e49", background="#ffffff")


def selection(listbox: tk.Listbox) -> tuple[int, ...]:
    sel: tuple[int, ...] = listbox.curselection()  # type: ignore[no-untyped-call]
    return sel
