"""The Screen Share tab: share your screen, pick a share, watch it scaled to the window."""

from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING, Any

from chatscreen.gui.net import FrameMailbox
from chatscreen.gui.render import Blitter, Composer
from chatscreen.protocol import Message

if TYPE_CHECKING:
    from chatscreen.gui.app import App

SHARE_FPS = 15.0
RESIZE_DELAY_MS = 60  # rescale once the window stops changing size


def _monitors() -> list[str]:
    try:
        from chatscreen.capture import ScreenCapture

        found = ScreenCapture.list_monitors()
    except Exception:  # no X display to capture, or mss cannot open it
        return []
    names = [f"{m.index}: {m.width}x{m.height}" for m in found[1:]]
    if len(found) > 2:
        names.append(f"0: all ({found[0].width}x{found[0].height})")
    return names


class ScreenTab(ttk.Frame):
    def __init__(self, master: tk.Misc, app: App) -> None:
        super().__init__(master, padding=8)
        self.app = app
        self.shares: list[dict[str, Any]] = []
        self.wanted: str | None = None  # whose share the user asked to see
        self.composer: Composer | None = None
        self.mailbox: FrameMailbox | None = None
        self._resize_job: str | None = None
        self.picture_shown = False
        self._build()
        self.blitter = Blitter(self.canvas)
        self.image_item = self.canvas.create_image(0, 0, anchor="center",
                                                   image=self.blitter.name, state="hidden")
        self.placeholder = self.canvas.create_text(
            0, 0, anchor="center", fill="#b0b0b0", font=self.app.fonts["body"],
            text="No screen shown.\nPick a shared screen above and click "
                 "“Start Receiving Screen”.", justify="center")
        self.canvas.bind("<Configure>", self._on_resize)

    def _build(self) -> None:
        self.columnconfigure(0, weight=1)
        self.rowconfigure(2, weight=1)
        share = ttk.Frame(self)
        share.grid(row=0, column=0, sticky="ew", pady=(0, 6))
        ttk.Label(share, text="Your screen", style="Heading.TLabel", width=14).pack(side="left")
        self.share_button = ttk.Button(share, text="Start Sharing Screen",
                                       command=self.toggle_share, width=22)
        self.share_button.pack(side="left")
        ttk.Label(share, text="Monitor").pack(side="left", padx=(12, 4))
        monitors = _monitors()
        self.monitor = ttk.Combobox(share, values=monitors, state="readonly", width=18,
                                    font=self.app.fonts["body"])
        if monitors:
            self.monitor.current(0)
        self.monitor.pack(side="left")
        self.share_status = ttk.Label(share, text="", style="Hint.TLabel")
        self.share_status.pack(side="left", padx=(12, 0))

        watch = ttk.Frame(self)
        watch.grid(row=1, column=0, sticky="ew", pady=(0, 8))
        ttk.Label(watch, text="Shared screens", style="Heading.TLabel", width=14).pack(
            side="left")
        self.share_list = ttk.Combobox(watch, values=[], state="readonly", width=30,
                                       font=self.app.fonts["body"])
        self.share_list.pack(side="left")
        self.watch_button = ttk.Button(watch, text="Start Receiving Screen",
                                       command=self.toggle_watch, width=22)
        self.watch_button.pack(side="left", padx=(8, 0))
        self.watch_status = ttk.Label(watch, text="", style="Hint.TLabel")
        self.watch_status.pack(side="left", padx=(12, 0))

        self.canvas = tk.Canvas(self, background="#1e1f22", highlightthickness=0)
        self.canvas.grid(row=2, column=0, sticky="nsew")

    # -- events ------------------------------------------------------------------------

    def on_event(self, ev: Message) -> None:
        if ev.type == "shares":
            self._set_shares(ev["shares"])
        elif ev.type == "gui_share_started":
            self.share_status.configure(text=f"Sharing {ev['w']}x{ev['h']}")
            self.share_button.configure(text="Stop Sharing Screen")
        elif ev.type == "gui_share_ended":
            reason = ev["reason"]
            self.share_status.configure(
                text="Not sharing" if reason == "stopped" else f"Sharing stopped: {reason}")
            self.share_button.configure(text="Start Sharing Screen")
        elif ev.type == "gui_watch_ended" and ev["reason"] != "stopped":
            self.watch_status.configure(text=f"Lost {ev['user']}'s screen: {ev['reason']}")

    def _set_shares(self, shares: list[dict[str, Any]]) -> None:
        self.shares = [s for s in shares if s["user"].casefold() != self.app.user.casefold()] \
            or list(shares)
        labels = [self._label(s) for s in self.shares]
        self.share_list.configure(values=labels)
        if labels and not self.share_list.get():
            self.share_list.current(0)
        elif not labels:
            self.share_list.set("")
        net = self.app.net
        if self.wanted is None or net is None:
            return
        share = net.client.share_of(self.wanted)
        if share is None:
            net.unwatch()
            self.watch_status.configure(text=f"{self.wanted} is not sharing now; "
                                             "waiting for their screen")
        elif not net.watching or self._watching_id != share["id"]:
            self._start(share)

    @staticmethod
    def _label(share: dict[str, Any]) -> str:
        return f"{share['user']}  ({share['w']}x{share['h']})"

    # -- the user's actions ------------------------------------------------------------

    def toggle_share(self) -> None:
        net = self.app.net
        if net is None:
            self.share_status.configure(text="Connect first")
            return
        if net.sharing:
            net.stop_share()
            self.share_status.configure(text="Stopping…")
            return
        choice = self.monitor.get()
        monitor = int(choice.split(":")[0]) if choice else 1
        net.start_share(monitor, SHARE_FPS)
        self.share_status.configure(text="Starting…")

    def toggle_watch(self) -> None:
        net = self.app.net
        if self.wanted is not None:
            self.stop_watching()
            return
        if net is None:
            self.watch_status.configure(text="Connect first")
            return
        index = self.share_list.current()
        if index < 0 or index >= len(self.shares):
            self.watch_status.configure(text="Nobody is sharing a screen")
            return
        share = self.shares[index]
        self.wanted = share["user"]
        self.watch_button.configure(text="Stop Receiving Screen")
        self._start(share)

    _watching_id: int | None = None

    def _start(self, share: dict[str, Any]) -> None:
        net = self.app.net
        assert net is not None
        self.composer = Composer()
        self.composer.set_box(*self._box())
        self.mailbox = FrameMailbox()
        self._watching_id = share["id"]
        net.watch(share, self.composer, self.mailbox)
        self.watch_status.configure(text=f"Watching {share['user']}")

    def stop_watching(self) -> None:
        if self.app.net is not None:
            self.app.net.unwatch()
        self.wanted = None
        self._watching_id = None
        self.composer = self.mailbox = None
        self.watch_button.configure(text="Start Receiving Screen")
        self.watch_status.configure(text="")
        self._show_picture(False)

    def reset(self) -> None:
        self.stop_watching()
        self._set_shares([])
        self.share_status.configure(text="")
        self.share_button.configure(text="Start Sharing Screen")

    # -- drawing (Tk thread) -----------------------------------------------------------

    def poll(self) -> None:
        if self.mailbox is None:
            return
        for redraw in self.mailbox.take():
            if self.blitter.blit(redraw):
                self.canvas.itemconfigure(self.image_item, image=self.blitter.name)
            self._show_picture(True)

    def _show_picture(self, shown: bool) -> None:
        self.picture_shown = shown
        self.canvas.itemconfigure(self.image_item, state="normal" if shown else "hidden")
        self.canvas.itemconfigure(self.placeholder, state="hidden" if shown else "normal")

    def _box(self) -> tuple[int, int]:
        return max(1, self.canvas.winfo_width()), max(1, self.canvas.winfo_height())

    def _on_resize(self, _event: object) -> None:
        w, h = self._box()
        self.canvas.coords(self.image_item, w // 2, h // 2)
        self.canvas.coords(self.placeholder, w // 2, h // 2)
        if self._resize_job is not None:
            self.after_cancel(self._resize_job)
        self._resize_job = self.after(RESIZE_DELAY_MS, self._rescale)

    def _rescale(self) -> None:
        self._resize_job = None
        composer, mailbox = self.composer, self.mailbox
        if composer is not None and mailbox is not None:
            box = self._box()
            # Through the render thread, so that it stays in order with the frames.
            self.app.render_pool.submit(lambda: mailbox.put(composer.set_box(*box)))

    def picture_geometry(self) -> tuple[int, int, int, int] | None:
        """Where the picture is on the screen: x, y, w, h (root coordinates)."""
        if not self.picture_shown:
            return None
        x0, y0, x1, y1 = self.canvas.bbox(self.image_item)
        return (self.canvas.winfo_rootx() + x0, self.canvas.winfo_rooty() + y0,
                x1 - x0, y1 - y0)
