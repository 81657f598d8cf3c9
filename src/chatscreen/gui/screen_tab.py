"""The Screen Share tab: share your screen (monitor, preset), the live list of shared screens,
and the one you watch: scaled to fit with its aspect ratio, 1:1 (scrollable), or full screen.
"""

from __future__ import annotations

import contextlib
import time
import tkinter as tk
from pathlib import Path
from tkinter import filedialog, ttk
from typing import TYPE_CHECKING, Any

from chatscreen.gui.net import FrameMailbox
from chatscreen.gui.render import Blitter, Composer
from chatscreen.gui.widgets import selection, styled_listbox
from chatscreen.protocol import Message
from chatscreen.screen.encoders import DEFAULT_PRESET, PRESETS
from chatscreen.screen.sharing import DEFAULT_FPS
from chatscreen.text import one_line

if TYPE_CHECKING:
    from chatscreen.gui.host import ScreenHost

RECORDED = "  ·  \N{BLACK CIRCLE} recorded"  # a share someone records, in the list
RESIZE_DELAY_MS = 60  # rescale once the window stops changing size
STATS_EVERY = 1.0  # s between updates of the frames/s and bitrate shown
SNAPSHOT_LABEL_MAX = 14  # characters of the room shown on "Snapshot to #room"


# who may watch our share: the choice, and what `share` is sent with
AUDIENCES = {"Everyone": "everyone", "Only the people named": "viewers",
             "The members of a room": "room"}

# The presets are the sharing library's (chatscreen.screen.encoders), the same as `chatscreen
# share --preset`, at the same rate (DEFAULT_FPS): what they do, in a few words.
PRESET_HINTS = {"text": "sharpest text", "balanced": "sharp text, photos as JPEG",
                "motion": "smoothest motion"}


def _monitors() -> list[str]:
    try:
        from chatscreen.screen.capture import ScreenCapture

        found = ScreenCapture.list_monitors()
    except Exception:  # no X display to capture, or mss cannot open it
        return []
    names = [f"{m.index}: {m.width}x{m.height}" for m in found[1:]]
    if len(found) > 2:
        names.append(f"0: all ({found[0].width}x{found[0].height})")
    return names


def format_rate(fps: float, bps: float) -> str:
    rate = f"{bps / 1e6:.1f} Mbit/s" if bps >= 1e6 else f"{bps / 1e3:.0f} kbit/s"
    return f"{fps:.1f} frames/s · {rate}"


class ScreenTab(ttk.Frame):
    def __init__(self, master: tk.Misc, app: ScreenHost) -> None:
        super().__init__(master, padding=8)
        self.app = app
        self.shares: list[dict[str, Any]] = []
        self.wanted: str | None = None  # whose share the user asked to see
        self.watching: dict[str, Any] | None = None
        self.composer: Composer | None = None
        self.mailbox: FrameMailbox | None = None
        self._resize_job: str | None = None
        self.picture_shown = False
        self.fullscreen: tk.Toplevel | None = None
        self._full_canvas: tk.Canvas | None = None
        self._full_item: int | None = None
        self.shown_frames = 0  # redraws put on screen (for the "shown" rate)
        self._shown_mark = 0
        self.fit = True  # scale to fit; False: 1:1
        self._build()
        self.blitter = Blitter(self.canvas)
        self.image_item = self.canvas.create_image(0, 0, anchor="center",
                                                   image=self.blitter.name, state="hidden")
        self.placeholder = self.canvas.create_text(
            0, 0, anchor="center", fill="#9aa0a6", font=self.app.fonts["body"],
            text="No screen shown.\nPick a shared screen on the left and click "
                 "“Start Receiving Screen”.", justify="center")
        # Over the last picture once the share has ended: greyed, and why, in large type.
        self.ended_shade = self.canvas.create_rectangle(0, 0, 0, 0, fill="#1e1f22",
                                                        stipple="gray75", width=0,
                                                        state="hidden")
        self.ended_box = self.canvas.create_rectangle(0, 0, 0, 0, fill="#1e1f22",
                                                      outline="#9aa0a6", state="hidden")
        self.ended_text = self.canvas.create_text(
            0, 0, anchor="center", fill="#ffffff", font=self.app.fonts["title"], text="",
            justify="center", state="hidden")
        self.ended = ""  # why the picture shown is no longer live ("" while it is)
        self.canvas.bind("<Configure>", self._on_resize)
        self.canvas.bind("<ButtonPress-1>", lambda e: self.canvas.scan_mark(e.x, e.y))
        self.canvas.bind("<B1-Motion>", lambda e: self.canvas.scan_dragto(e.x, e.y, gain=1))
        self.canvas.bind("<Double-Button-1>", lambda _e: self.toggle_fullscreen())
        # shown again (the Chat tab may show another conversation now): where a snapshot goes
        self.bind("<Map>", lambda _e: self._refresh_snapshot(), add="+")

    # -- layout ------------------------------------------------------------------------

    def _build(self) -> None:
        fonts = self.app.fonts
        self.columnconfigure(1, weight=1)
        self.rowconfigure(1, weight=1)

        card = ttk.Frame(self, style="Card.TFrame", padding=(12, 10))
        card.grid(row=0, column=0, columnspan=2, sticky="ew", pady=(0, 10))
        share = ttk.Frame(card, style="Card.TFrame")
        share.pack(fill="x")
        audience = ttk.Frame(card, style="Card.TFrame")
        audience.pack(fill="x", pady=(8, 0))
        ttk.Label(audience, text="Who may watch", style="Card.TLabel").pack(side="left",
                                                                           padx=(0, 6))
        self.audience = ttk.Combobox(audience, values=list(AUDIENCES), state="readonly",
                                     width=22, font=fonts["body"])
        self.audience.set(next(iter(AUDIENCES)))
        self.audience.pack(side="left")
        # packed before the entry and its hint, so that it keeps its room when space is short
        self.viewers_label = ttk.Label(audience, text="", style="Card.TLabel")
        self.viewers_label.pack(side="right")
        # who records our share: a red notice, so that no one is recorded without knowing
        self.recording_label = ttk.Label(audience, text="", style="Recording.TLabel")
        self.recording_label.pack(side="right", padx=(0, 12))

        self.audience_entry = ttk.Entry(audience, width=24, font=fonts["body"])
        self.audience_entry.pack(side="left", padx=(6, 0))
        ttk.Label(audience, text="names, comma-separated, or a room",
                  style="CardHint.TLabel").pack(side="left", padx=(8, 0))
        ttk.Label(share, text="Your screen", style="CardHeading.TLabel").pack(side="left",
                                                                            padx=(0, 14))
        self.share_button = ttk.Button(share, text="Start Sharing Screen", width=20,
                                       command=self.toggle_share, style="Accent.TButton")
        self.share_button.pack(side="left")
        ttk.Label(share, text="Monitor", style="Card.TLabel").pack(side="left", padx=(16, 4))
        monitors = _monitors()
        self.monitor = ttk.Combobox(share, values=monitors, state="readonly", width=16,
                                    font=fonts["body"])
        if monitors:
            self.monitor.current(0)
        self.monitor.pack(side="left")
        ttk.Label(share, text="Optimise for", style="Card.TLabel").pack(side="left",
                                                                       padx=(16, 4))
        self.preset = ttk.Combobox(share, values=list(PRESETS), state="readonly", width=9,
                                   font=fonts["body"])
        self.preset.set(DEFAULT_PRESET)
        self.preset.pack(side="left")
        self.preset.bind("<<ComboboxSelected>>", lambda _e: self._show_preset())
        self.may_record = tk.BooleanVar(value=False)  # those who may watch may record
        self.may_record_box = ttk.Checkbutton(share, text="Allow recording",
                                              variable=self.may_record,
                                              style="Card.TCheckbutton")
        self.may_record_box.pack(side="left", padx=(12, 0))
        # What the preset does and how the share goes: a row of their own, wrapped to the
        # card's width, so that neither is cut off when the window is narrow or scaled up.
        info = ttk.Frame(card, style="Card.TFrame")
        info.pack(fill="x", pady=(6, 0))
        info.columnconfigure(1, weight=1)
        self.preset_hint = ttk.Label(info, text="", style="CardHint.TLabel")
        self.preset_hint.grid(row=0, column=0, sticky="w")
        self.share_status = ttk.Label(info, text="", style="CardHint.TLabel", anchor="e",
                                      justify="right")
        self.share_status.grid(row=0, column=1, sticky="e", padx=(12, 0))
        info.bind("<Configure>", lambda e: self.share_status.configure(
            wraplength=max(100, e.width - self.preset_hint.winfo_reqwidth() - 12)))
        self._show_preset()

        side = ttk.Frame(self)
        side.grid(row=1, column=0, sticky="ns", padx=(0, 10))
        side.rowconfigure(1, weight=1)
        ttk.Label(side, text="Shared screens", style="Heading.TLabel").grid(row=0, column=0,
                                                                           sticky="w")
        self.share_list = styled_listbox(side, fonts["body"], width=26, height=8)
        self.share_list.grid(row=1, column=0, sticky="nsew", pady=(4, 6))
        self.share_list.bind("<Double-Button-1>", lambda _e: self.watch_selected())
        self.share_list.bind("<Return>", lambda _e: self.watch_selected())
        self.watch_button = ttk.Button(side, text="Start Receiving Screen",
                                       command=self.toggle_watch)
        self.watch_button.grid(row=2, column=0, sticky="ew")
        # what one does with the share watched, under the list: the viewer's own bar
        # keeps only its title and the view's buttons, so it fits at large scales
        self.record_button = ttk.Button(side, text="Record…", command=self.toggle_record,
                                        state="disabled")
        self.record_button.grid(row=3, column=0, sticky="ew", pady=(6, 0))
        # the share's picture, lossless, into chat: where it goes is on the button
        self.snapshot_button = ttk.Button(side, text="Snapshot to chat", state="disabled",
                                          command=self.snapshot_to_chat)
        self.snapshot_button.grid(row=4, column=0, sticky="ew", pady=(6, 0))
        self.empty_hint = ttk.Label(side, text="Nobody is sharing right now.",
                                    style="Hint.TLabel", wraplength=220)
        self.empty_hint.grid(row=5, column=0, sticky="w", pady=(6, 0))

        viewer = ttk.Frame(self)
        viewer.grid(row=1, column=1, sticky="nsew")
        viewer.columnconfigure(0, weight=1)
        viewer.rowconfigure(1, weight=1)
        bar = ttk.Frame(viewer)
        bar.grid(row=0, column=0, columnspan=2, sticky="ew", pady=(0, 4))
        self.watch_title = ttk.Label(bar, text="Not watching", style="Heading.TLabel")
        self.watch_title.pack(side="left")
        self.full_button = ttk.Button(bar, text="Full screen (F11)",
                                      command=self.toggle_fullscreen)
        self.full_button.pack(side="right")
        self.one_button = ttk.Button(bar, text="1:1", width=4,
                                     command=lambda: self.set_fit(False))
        self.one_button.pack(side="right", padx=(0, 12))
        self.fit_button = ttk.Button(bar, text="Fit", width=4, style="Selected.TButton",
                                     command=lambda: self.set_fit(True))
        self.fit_button.pack(side="right")
        self.watch_status = ttk.Label(viewer, text="", style="Hint.TLabel")
        self.watch_status.grid(row=4, column=0, sticky="w", pady=(4, 0))
        self.stats_label = ttk.Label(viewer, text="", style="Hint.TLabel")
        self.stats_label.grid(row=4, column=0, columnspan=2, sticky="e", pady=(4, 0))

        self.canvas = tk.Canvas(viewer, background="#1e1f22", highlightthickness=0)
        self.canvas.grid(row=1, column=0, sticky="nsew")
        self.xscroll = ttk.Scrollbar(viewer, orient="horizontal", command=self.canvas.xview)
        self.yscroll = ttk.Scrollbar(viewer, orient="vertical", command=self.canvas.yview)
        self.canvas.configure(xscrollcommand=self.xscroll.set,
                              yscrollcommand=self.yscroll.set)

    def _show_preset(self) -> None:
        p = PRESETS[self.preset_name]
        self.preset_hint.configure(text=f"{PRESET_HINTS.get(p.name, p.name)}: about "
                                        f"{DEFAULT_FPS:g} updates/s, JPEG q{p.quality}")

    # -- events ------------------------------------------------------------------------

    def on_event(self, ev: Message) -> None:
        if ev.type == "shares":
            self._set_shares(ev["shares"])
        elif ev.type == "gui_share_started":
            p = PRESETS[self.preset_name]
            self.share_status.configure(text="")  # the red banner says it all
            self.share_detail = (f"monitor {self._monitor_index()}, {ev['w']}x{ev['h']}, "
                                 f"{p.name} (q{p.quality}, about {DEFAULT_FPS:g} updates/s)")
            self.app.set_sharing(True, self.share_detail)
        elif ev.type == "gui_share_ended":
            reason = ev["reason"]
            self.share_status.configure(
                text="Not sharing" if reason == "stopped" else f"Sharing stopped: {reason}")
            self._sharing_controls(False)
            self.app.set_sharing(False)
        elif ev.type == "gui_recording":
            self._on_recording(ev)
        elif (ev.type == "gui_watch_ended" and ev["reason"] != "stopped"
              and self.wanted is not None and not self.ended):
            reason = str(ev["reason"])
            self._show_ended(reason if reason.endswith("stopped sharing")
                             else f"Lost {ev['user']}'s screen: {reason}")

    def _on_recording(self, ev: Message) -> None:
        """The recording started, was refused (watching goes on), or its file is complete."""
        state = ev["state"]
        if state == "started":
            text = f"\N{BLACK CIRCLE} Recording to {ev['path']}"
        else:
            text = one_line(ev["text"], isolate=False)  # it may quote the server
        if state == "refused":
            self.recording = None
            self.record_button.configure(text="Record…")
        self.record_status = text
        self.watch_status.configure(text=text)

    record_status = ""

    def _set_shares(self, shares: list[dict[str, Any]]) -> None:
        me = self.app.user.casefold()
        chosen = self._selected_share_id
        # Other people's screens first; your own (to check what others see) last.
        self.shares = sorted(shares, key=lambda s: (s["user"].casefold() == me,
                                                   s["user"].casefold()))
        self._relabel(chosen)
        net = self.app.net
        if self.wanted is None or net is None:
            return
        share = net.client.share_of(self.wanted)
        if share is None:
            net.unwatch()
            self.watching = None
            if not self.ended:
                self._show_ended(f"{self.wanted} stopped sharing")
        elif not net.watching or self._watching_id != share["id"]:
            self._start(share)
        else:
            self.watching = share  # its audience may have changed (a snapshot's room)
            self._refresh_snapshot()

    def _relabel(self, chosen: int | None = None) -> None:
        me = self.app.user.casefold()
        if chosen is None:
            chosen = self._selected_share_id
        self.share_list.delete(0, "end")
        for i, s in enumerate(self.shares):
            own = s["user"].casefold() == me
            watching = self.watching is not None and self.watching["id"] == s["id"]
            label = (f"  {'▶' if watching else '▣'} {s['user']}{' (you)' if own else ''}"
                     f"  ·  {s['w']}x{s['h']}{RECORDED if s.get('recording') else ''}")
            self.share_list.insert("end", label)
            if watching:
                self.share_list.itemconfigure(i, foreground="#0b57d0")
            if s["id"] == chosen:
                self.share_list.selection_set(i)
        if self.shares and not selection(self.share_list):
            self.share_list.selection_set(0)
        self.empty_hint.configure(text="" if self.shares else "Nobody is sharing right now.")

    @property
    def _selected_share_id(self) -> int | None:
        share = self._selected_share()
        return None if share is None else int(share["id"])

    def _selected_share(self) -> dict[str, Any] | None:
        sel = selection(self.share_list)
        if not sel or sel[0] >= len(self.shares):
            return None
        return self.shares[sel[0]]

    def selected_label(self) -> str:
        sel = selection(self.share_list)
        return str(self.share_list.get(sel[0])).strip() if sel else ""

    # -- the user's actions ------------------------------------------------------------

    def toggle_share(self) -> None:
        net = self.app.net
        if net is None:
            self.share_status.configure(text="Connect first")
            return
        if net.sharing:
            self.stop_share()
            return
        who, text = AUDIENCES[self.audience.get()], self.audience_entry.get().strip()
        names = [n.strip() for n in text.split(",") if n.strip()]
        if who != "everyone" and not names:
            self.share_status.configure(text="Name the people, or the room, who may watch")
            self.audience_entry.focus_set()
            return
        self._show_preset()
        net.start_share(self._monitor_index(), self.preset_name,
                        viewers=names if who == "viewers" else None,
                        room=names[0].lstrip("#") if who == "room" else None,
                        may_record=self.may_record.get())
        self._sharing_controls(True)
        self.share_status.configure(text="Starting…")

    share_detail = ""

    def _monitor_index(self) -> int:
        choice = self.monitor.get()
        return int(choice.split(":")[0]) if choice else 1

    def stop_share(self) -> None:
        net = self.app.net
        if net is not None and net.sharing:
            net.stop_share()
            self.share_status.configure(text="Stopping…")

    def _sharing_controls(self, sharing: bool) -> None:
        self.share_button.configure(text="Stop Sharing Screen" if sharing
                                    else "Start Sharing Screen")
        for box in (self.monitor, self.preset, self.audience):
            box.configure(state="disabled" if sharing else "readonly")
        self.audience_entry.configure(state="disabled" if sharing else "normal")
        self.may_record_box.configure(state="disabled" if sharing else "normal")
        if not sharing:
            self.viewers_label.configure(text="")
            self.recording_label.configure(text="")

    def show_viewers(self, users: list[str] | None) -> None:
        """Who watches our share right now, as the server says (None: not known yet)."""
        text = "" if users is None else (
            "Watched by " + ", ".join(users) if users else "Nobody is watching")
        if str(self.viewers_label.cget("text")) != text:
            self.viewers_label.configure(text=text)

    def show_recorders(self, users: list[str]) -> None:
        """Who records our share right now, as the server says: "● Recording (bob)"."""
        text = f"\N{BLACK CIRCLE} Recording ({', '.join(users)})" if users else ""
        if str(self.recording_label.cget("text")) != text:
            self.recording_label.configure(text=text)

    def watch_selected(self) -> None:
        if self.wanted is not None:
            self.stop_watching()
        self.toggle_watch()

    def toggle_watch(self) -> None:
        net = self.app.net
        if self.wanted is not None:
            self.stop_watching()
            return
        if net is None:
            self.watch_status.configure(text="Connect first")
            return
        share = self._selected_share()
        if share is None:
            self.watch_status.configure(text="Nobody is sharing a screen")
            return
        self.wanted = share["user"]
        self.watch_button.configure(text="Stop Receiving Screen")
        self._start(share)

    _watching_id: int | None = None
    recording: Path | None = None  # the file the share watched is recorded to

    def toggle_record(self) -> None:
        """Record the share watched to an MP4 (asks where), or stop recording it."""
        share = self.watching
        if share is None:
            return
        if self.recording is not None:
            self._start(share)  # watch on, without recording: the file is completed
            return
        path = filedialog.asksaveasfilename(
            parent=self, title="Record the share to", defaultextension=".mp4",
            filetypes=[("MP4 video", "*.mp4")],
            initialfile=f"{share['user']}-{time.strftime('%Y%m%d-%H%M%S')}.mp4")
        if path:
            self._start(share, record=Path(path))

    def _start(self, share: dict[str, Any], record: Path | None = None) -> None:
        net = self.app.net
        assert net is not None
        self.composer = Composer()
        self.composer.set_box(*self._box(), fit=self.fit)
        self.mailbox = FrameMailbox()
        self._watching_id = share["id"]
        self.watching = share
        self.recording = record  # a new watch records only when asked again
        self.record_button.configure(state="normal", text="Stop Recording" if record
                                     else "Record…")
        net.watch(share, self.composer, self.mailbox, record)
        net.watch_meter.rates()
        self.watch_title.configure(text=f"{share['user']}'s screen  ({share['w']}x{share['h']})")
        self.watch_status.configure(text="")
        self._show_ended("")
        self.stats_label.configure(text="waiting for the picture…")
        self._relabel()

    def stop_watching(self) -> None:
        if self.app.net is not None:
            self.app.net.unwatch()
        self.leave_fullscreen()
        self.wanted = None
        self.watching = None
        self._watching_id = None
        self.recording = None
        self.record_button.configure(state="disabled", text="Record…")
        self.composer = self.mailbox = None
        self.watch_button.configure(text="Start Receiving Screen")
        self.watch_title.configure(text="Not watching")
        self.watch_status.configure(text="")
        self.stats_label.configure(text="")
        self._show_ended("")
        self._show_picture(False)
        self._relabel()

    def _show_ended(self, why: str) -> None:
        """The share watched has ended (``why``), or is live again (""): the last picture
        stays, greyed, with why across it in large type; the title says so too."""
        self.ended = why
        state = "normal" if why else "hidden"
        shown = one_line(why, isolate=False)  # it may quote the server
        self.canvas.itemconfigure(self.ended_text, text=shown, state=state)
        for item in (self.ended_shade, self.ended_box):
            self.canvas.itemconfigure(item, state=state)
        if why:
            for item in (self.ended_shade, self.ended_box, self.ended_text):
                self.canvas.tag_raise(item)
            who = self.wanted or ""
            self.watch_title.configure(text=f"{who}'s screen: ended" if who else "Ended")
            self.watch_status.configure(text=f"{shown}. The picture is the last one received;"
                                             " it comes back by itself if they share again.")
            self.stats_label.configure(text="")
        self._place()

    def reset(self) -> None:
        self.stop_watching()
        self._set_shares([])
        self.share_status.configure(text="")
        self._sharing_controls(False)

    @property
    def preset_name(self) -> str:
        name = self.preset.get()
        return name if name in PRESETS else DEFAULT_PRESET

    def set_fit(self, fit: bool) -> None:
        """Fit the window (keeping the aspect ratio), or 1:1 (scroll or drag to pan)."""
        self.fit = fit
        self.fit_button.configure(style="Selected.TButton" if fit else "TButton")
        self.one_button.configure(style="TButton" if fit else "Selected.TButton")
        self._rescale()

    # -- full screen -------------------------------------------------------------------

    def toggle_fullscreen(self) -> None:
        if self.fullscreen is not None:
            self.leave_fullscreen()
        else:
            self.enter_fullscreen()

    def enter_fullscreen(self) -> None:
        if self.fullscreen is not None or self.composer is None:
            return
        top = tk.Toplevel(self, background="black")
        sw, sh = top.winfo_screenwidth(), top.winfo_screenheight()
        top.geometry(f"{sw}x{sh}+0+0")
        with contextlib.suppress(tk.TclError):  # no window manager to ask
            top.attributes("-fullscreen", True)
        canvas = tk.Canvas(top, background="black", highlightthickness=0, width=sw, height=sh)
        canvas.pack(fill="both", expand=True)
        self._full_item = canvas.create_image(sw // 2, sh // 2, anchor="center",
                                              image=self.blitter.name)
        canvas.create_text(sw // 2, sh - 24, text="Esc leaves full screen", fill="#777777",
                           font=self.app.fonts["small"])
        for seq in ("<Escape>", "<F11>", "<Double-Button-1>"):
            top.bind(seq, lambda _e: self.leave_fullscreen())
        top.bind("<Control-q>", lambda _e: self.app.quit())
        top.protocol("WM_DELETE_WINDOW", self.leave_fullscreen)
        self.fullscreen, self._full_canvas = top, canvas
        top.focus_force()
        self._rescale()

    def leave_fullscreen(self) -> None:
        top, self.fullscreen, self._full_canvas, self._full_item = (
            self.fullscreen, None, None, None)
        if top is None:
            return
        top.destroy()
        self.app.root.focus_force()
        self._rescale()

    # -- drawing (Tk thread) -----------------------------------------------------------

    def release(self) -> None:
        """The window is gone: drop the photos here, on the Tk thread (see App.quit)."""
        self.blitter.release()

    def poll(self) -> None:
        if self.mailbox is None:
            return
        for redraw in self.mailbox.take():
            if self.blitter.blit(redraw):
                self.canvas.itemconfigure(self.image_item, image=self.blitter.name)
                if self._full_canvas is not None and self._full_item is not None:
                    self._full_canvas.itemconfigure(self._full_item, image=self.blitter.name)
                self._place()
            self.shown_frames += 1
            if not self.picture_shown:
                self._show_picture(True)
                self._place()
                self._refresh_snapshot()

    def snapshot_to_chat(self) -> None:
        """Post the picture watched, as it is now (full resolution, lossless), into chat."""
        composer, share = self.composer, self.watching
        if composer is None or share is None or not composer.complete:
            self.watch_status.configure(text="No complete picture yet")
            return
        where = self.app.snapshot_target(share)
        self.app.post_snapshot(share, composer.picture)
        self.watch_status.configure(text=f"Posting the picture to {where} (progress in the "
                                         "Chat tab)")

    def _refresh_snapshot(self) -> None:
        """The button says where the picture goes, and is there only with a picture."""
        where = self.app.snapshot_target(self.watching)
        ready = (self.watching is not None and self.picture_shown and where is not None
                 and self.composer is not None and self.composer.complete)
        if where is not None and len(where) > SNAPSHOT_LABEL_MAX:  # the list's width
            where = where[:SNAPSHOT_LABEL_MAX - 1] + "…"
        text = f"Snapshot to {one_line(where, isolate=False)}" if where else "Snapshot to chat"
        if str(self.snapshot_button.cget("text")) != text:
            self.snapshot_button.configure(text=text)
        self.snapshot_button.configure(state="normal" if ready else "disabled")

    def tick(self) -> None:
        """About once a second: the received frames/s and bitrate."""
        self._refresh_snapshot()
        net = self.app.net
        if net is None or self.watching is None:
            return
        fps, bps = net.watch_meter.rates()
        shown = self.shown_frames - self._shown_mark
        self._shown_mark = self.shown_frames
        if self.picture_shown and not self.ended:
            self.stats_label.configure(text=f"received {format_rate(fps, bps)}")
        self.last_rates = (fps, bps, shown)

    last_rates: tuple[float, float, int] = (0.0, 0.0, 0)

    def _show_picture(self, shown: bool) -> None:
        self.picture_shown = shown
        self.canvas.itemconfigure(self.image_item, state="normal" if shown else "hidden")
        self.canvas.itemconfigure(self.placeholder, state="hidden" if shown else "normal")
        if not shown:
            self._scrollbars(False)

    def _box(self) -> tuple[int, int]:
        if self._full_canvas is not None:
            top = self._full_canvas
            return top.winfo_screenwidth(), top.winfo_screenheight()
        return max(1, self.canvas.winfo_width()), max(1, self.canvas.winfo_height())

    def _scrollbars(self, shown: bool) -> None:
        if shown:
            self.xscroll.grid(row=3, column=0, sticky="ew")
            self.yscroll.grid(row=1, column=1, sticky="ns")
        else:
            self.xscroll.grid_remove()
            self.yscroll.grid_remove()

    def _place(self) -> None:
        """Centre the picture; when it is larger than the canvas (1:1), scroll it."""
        cw, ch = max(1, self.canvas.winfo_width()), max(1, self.canvas.winfo_height())
        pw, ph = self.blitter.size
        self.canvas.coords(self.placeholder, cw // 2, ch // 2)
        x0, y0 = int(self.canvas.canvasx(0)), int(self.canvas.canvasy(0))  # type: ignore[no-untyped-call]
        self.canvas.coords(self.ended_shade, x0, y0, x0 + cw, y0 + ch)
        self.canvas.coords(self.ended_text, x0 + cw // 2, y0 + ch // 2)
        self.canvas.itemconfigure(self.ended_text, width=max(cw - 80, 100))
        box = self.canvas.bbox(self.ended_text) if self.ended else None
        if box:
            pad = self.app.px(18)
            self.canvas.coords(self.ended_box, box[0] - pad, box[1] - pad // 2,
                               box[2] + pad, box[3] + pad // 2)
        big = self.picture_shown and (pw > cw or ph > ch)
        if big:
            self.canvas.itemconfigure(self.image_item, anchor="nw")
            self.canvas.coords(self.image_item, max(0, (cw - pw) // 2), max(0, (ch - ph) // 2))
            self.canvas.configure(scrollregion=(0, 0, max(pw, cw), max(ph, ch)))
        else:
            self.canvas.itemconfigure(self.image_item, anchor="center")
            self.canvas.coords(self.image_item, cw // 2, ch // 2)
            self.canvas.configure(scrollregion=(0, 0, cw, ch))
            self.canvas.xview_moveto(0)
            self.canvas.yview_moveto(0)
        self._scrollbars(big)
        if self._full_canvas is not None and self._full_item is not None:
            fc = self._full_canvas
            self._full_canvas.coords(self._full_item, fc.winfo_screenwidth() // 2,
                                     fc.winfo_screenheight() // 2)

    def _on_resize(self, _event: object) -> None:
        self._place()
        if self._resize_job is not None:
            self.after_cancel(self._resize_job)
        self._resize_job = self.after(RESIZE_DELAY_MS, self._rescale)

    def _rescale(self) -> None:
        if self._resize_job is not None:
            self.after_cancel(self._resize_job)
        self._resize_job = None
        composer, mailbox = self.composer, self.mailbox
        if composer is not None and mailbox is not None:
            box = self._box()
            fit = self.fit or self._full_canvas is not None
            # Through the render thread, so that it stays in order with the frames.
            self.app.render_pool.submit(lambda: mailbox.put(composer.set_box(*box, fit=fit)))

    def picture_geometry(self) -> tuple[int, int, int, int] | None:
        """Where the picture is on the screen: x, y, w, h (root coordinates), clipped to
        the canvas."""
        if not self.picture_shown:
            return None
        x0, y0, x1, y1 = self.canvas.bbox(self.image_item)
        ox = int(self.canvas.canvasx(0))  # type: ignore[no-untyped-call]
        oy = int(self.canvas.canvasy(0))  # type: ignore[no-untyped-call]
        x0, y0 = max(x0, ox), max(y0, oy)
        x1 = min(x1, ox + self.canvas.winfo_width())
        y1 = min(y1, oy + self.canvas.winfo_height())
        return (self.canvas.winfo_rootx() + x0 - ox, self.canvas.winfo_rooty() + y0 - oy,
                x1 - x0, y1 - y0)
