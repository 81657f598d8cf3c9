"""Drive the real desktop app on an Xvfb display, as a person would.

The app runs in the test process (its Tk main loop is pumped here, so the test can read
widget state to check what a person would see), input comes from xdotool (real X key and
pointer events through XTEST), and pictures from the display itself (``grab_display``).
Waiting never sleeps: ``wait_for`` runs Tk's event loop (which wakes at least every few
milliseconds for the app's own poll timer) until a condition holds or a deadline passes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk

import numpy as np
import numpy.typing as npt
from PIL import Image

from chatscreen.gui.app import App
from chatscreen.gui.settings import load_settings
from tests.helpers.display import grab_display

GUI_TIMEOUT = float(os.environ.get("CHATSCREEN_TEST_TIMEOUT", "10")) * 2
WINDOW = (1100, 720)


class GuiHarness:
    def __init__(self, display: str) -> None:
        self.display = display
        self.root = tk.Tk(screenName=display, className="chatscreen")
        self.app = App(self.root, load_settings())
        self.root.geometry(f"{WINDOW[0]}x{WINDOW[1]}+0+0")
        self.wait_for(lambda: self.root.winfo_ismapped() and self.root.winfo_width() > 100,
                      "the window to appear")
        self.xdo("windowfocus", "--sync", str(self.window_id()))

    def window_id(self) -> int:
        return int(self.root.wm_frame(), 16)

    # -- waiting -----------------------------------------------------------------------

    def wait_for(self, cond: Callable[[], object], what: str,
                 timeout: float = GUI_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        self.root.update()
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                                     f"status line: {self.app.status_text!r}")
            self.root.tk.dooneevent(0)  # blocks until an event or the app's poll timer

    def pump(self) -> None:
        self.root.update()

    # -- input ---------------------------------------------------------------------------

    def xdo(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": self.display},
                       check=True, timeout=GUI_TIMEOUT, capture_output=True)

    def _move(self, x: int, y: int) -> list[str]:
        """xdotool words that put the pointer at (x, y): none when it is there already
        (``mousemove --sync`` to where the pointer is waits for a motion that never comes,
        15 s, before xdotool gives up and goes on)."""
        if self.root.winfo_pointerxy() == (x, y):
            return []
        return ["mousemove", "--sync", str(x), str(y)]

    def click_at(self, x: int, y: int, *, double: bool = False) -> None:
        clicks = ["click", "--repeat", "2", "1"] if double else ["click", "1"]
        self.xdo(*self._move(x, y), *clicks)
        self.pump()

    def click(self, widget: tk.Misc, *, double: bool = False) -> None:
        self.pump()
        x = widget.winfo_rootx() + widget.winfo_width() // 2
        y = widget.winfo_rooty() + widget.winfo_height() // 2
        self.click_at(x, y, double=double)

    def type_into(self, widget: tk.Misc, text: str, *, enter: bool = False) -> None:
        self.click(widget)
        self.wait_for(lambda: self.root.focus_get() is widget, "the field to take focus")
        if isinstance(widget, ttk.Entry) and widget.get():
            self.xdo("key", "End", *["BackSpace"] * len(widget.get()))
        elif isinstance(widget, tk.Text) and widget.get("1.0", "end-1c"):
            self.xdo("key", "ctrl+End", *["BackSpace"] * len(widget.get("1.0", "end-1c")))
        if text:
            self.xdo("type", "--delay", "4", text)
        if enter:
            self.xdo("key", "Return")
        self.pump()

    def key(self, *keys: str) -> None:
        """Press keys (xdotool names: "Return", "shift+Return", "ctrl+Tab") where the focus is."""
        self.xdo("key", "--delay", "20", *keys)
        self.pump()

    def wheel_up(self, widget: tk.Misc, clicks: int = 5) -> None:
        """Turn the mouse wheel up over a widget (X button 4)."""
        self.pump()
        x = widget.winfo_rootx() + widget.winfo_width() // 2
        y = widget.winfo_rooty() + widget.winfo_height() // 2
        self.xdo(*self._move(x, y), "click", "--repeat", str(clicks), "--delay", "10", "4")
        self.pump()

    def focus_window(self) -> None:
        self.xdo("windowfocus", "--sync", str(self.window_id()))
        self.pump()

    def select_tab(self, title: str) -> None:
        nb = self.app.notebook
        self.pump()
        y = 12
        for x in range(4, nb.winfo_width(), 4):
            try:
                index = nb.index(f"@{x},{y}")  # type: ignore[no-untyped-call]
            except tk.TclError:
                continue
            if nb.tab(index, "text") == title:  # type: ignore[no-untyped-call]
                self.click_at(nb.winfo_rootx() + x + 10, nb.winfo_rooty() + y)
                self.wait_for(lambda: nb.tab(nb.select(), "text") == title,  # type: ignore[no-untyped-call]
                              f"the {title} tab")
                return
        raise AssertionError(f"no tab {title!r}")

    # -- output --------------------------------------------------------------------------

    def window_picture(self) -> npt.NDArray[np.uint8]:
        self.pump()
        x, y = self.root.winfo_rootx(), self.root.winfo_rooty()
        w, h = self.root.winfo_width(), self.root.winfo_height()
        return grab_display(self.display)[y : y + h, x : x + w]

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.window_picture(), "RGB").save(path)
        return path

    def close(self) -> None:
        """Close the window as a person would (the app logs out), and wait until the app's
        network threads are done, so that nothing of this test outlives it."""
        with contextlib.suppress(tk.TclError):
            self.app.quit()
        closed = self.app.wait_closed(GUI_TIMEOUT)
        # The app is a web of reference cycles holding Tkinter objects; collect it now, on
        # this (the Tk) thread. Left to the garbage collector, it can be freed on some
        # network thread of a later test, where every Tcl call in a __del__ blocks for 1 s
        # and raises "main thread is not in main loop" (an unraisable exception: the
        # test running at that moment fails).
        del self.app, self.root
        gc.collect()
        assert closed, "the app did not log out in time"
