"""A plain viewer window for ``chatscreen view`` without ``--snapshot``; with ``--record``,
it records what it shows (:mod:`chatscreen.screen.recording`, on the network thread's side).

The network runs on its own thread (asyncio); Tk widgets are only touched on the main thread,
which polls for the newest picture. The picture is scaled to fit the window, keeping its
aspect ratio.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import tkinter as tk
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageTk

from chatscreen.client import Client, ScreenChannel
from chatscreen.errors import ChatscreenError
from chatscreen.protocol import Message
from chatscreen.screen.codec import Canvas
from chatscreen.screen.cursor import composite
from chatscreen.screen.resume import RecordRefused, keep_watching
from chatscreen.screen.sharing import find_share, frame_rects, why_no_share
from chatscreen.text import one_line

FIRST_LOOK = 2.0  # s: the share asked for not listed by then: say why, and wait on
ENDED_BRIGHTNESS = 0.35  # the last picture of a share that ended, dimmed to this


class _Latest:
    """One-slot mailbox: the newest picture replaces an unread one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: Any = None
        self.status = "Connecting…"
        self.ended = False  # the share is over: the picture shown is the last one
        self.refused: str | None = None  # the server would not let us record: why
        self.recorded: Any = None  # recording.RecordStats once the file is complete
        self.record_error: str | None = None

    def put(self, item: Any) -> None:
        with self._lock:
            self._item = item

    def take(self) -> Any:
        with self._lock:
            item, self._item = self._item, None
            return item


async def _watch(host: str, port: int, screen_port: int, user: str, sharer: str | None,
                 box: _Latest, stop: threading.Event, tls: dict[str, Any],
                 record: Path | None = None) -> None:
    client = Client(host, user, chat_port=port, screen_port=screen_port, **tls)
    feed: Any = None
    try:
        await client.connect()
        box.status = "Waiting for a share…"
        try:
            share = await find_share(client, sharer, timeout=FIRST_LOOK)
        except TimeoutError:  # say why while waiting on
            box.status = f"Waiting: {await why_no_share(client, sharer)}"
            share = await find_share(client, sharer, timeout=3600)
        canvas = Canvas(share["w"], share["h"])
        box.status = f"Watching {share['user']}"
        if record is not None:
            feed = _recording(record, share["user"])

        async def show(msg: Message, screen: ScreenChannel) -> None:
            if msg.type == "frame":
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
            if canvas.complete:  # with the sharer's pointer drawn over (a copy)
                box.put(composite(canvas.pixels, screen.cursors.get(msg["share"])))
            if feed is not None:
                feed.frame_applied(msg, canvas, screen.cursors.get(msg["share"]))

        # cursor messages too: redraw when only the pointer moves
        watching = asyncio.ensure_future(keep_watching(client, share, show,
                                                       cursor_messages=True,
                                                       record=feed is not None))
        while not stop.is_set() and not watching.done():  # the window closing sets stop
            await asyncio.wait({watching}, timeout=0.5)
        if watching.done():
            box.status = watching.result()
        else:
            watching.cancel()
    except RecordRefused as exc:
        box.refused = str(exc)
    except (ChatscreenError, OSError) as exc:
        box.status = f"Disconnected: {exc}"
    finally:
        box.ended = True
        if feed is not None:  # the file is complete when the share ends, or we stop
            try:
                box.recorded = await asyncio.to_thread(feed.recorder.close)
            except ChatscreenError as exc:
                box.record_error = str(exc)
        await client.close()


def _recording(path: Path, user: str) -> Any:
    """What records the share (recording.ShareRecording): PyAV loads only when recording."""
    from chatscreen.screen.recording import Recorder, ShareRecording

    def started(w: int, h: int) -> None:
        print(f"Recording {user}'s share ({w}x{h}) to {path}; close the window or press "
              "Ctrl+C to stop", flush=True)

    return ShareRecording(Recorder(path), started)


def _ended(img: Image.Image) -> Image.Image:
    """The last picture of a share that is over: dimmed, so that it cannot pass for live."""
    return ImageEnhance.Brightness(img).enhance(ENDED_BRIGHTNESS)


def run_viewer_window(host: str, port: int, screen_port: int, user: str,
                      sharer: str | None, tls: dict[str, Any] | None = None,
                      record: Path | None = None) -> int:
    """Show a share until the window closes (or Ctrl+C, SIGTERM); with ``record``, record it
    too, and print where, how long and how many frames."""
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        raise ChatscreenError(f"cannot open a window ({exc}); use --snapshot FILE.png") from None
    root.title("chatscreen viewer")
    root.geometry("1024x640")
    label = tk.Label(root, bg="black", fg="white")
    label.pack(fill="both", expand=True)
    box, stop, quit_ = _Latest(), threading.Event(), threading.Event()
    net = threading.Thread(target=lambda: asyncio.run(
        _watch(host, port, screen_port, user, sharer, box, stop, tls or {}, record)),
        daemon=True)
    net.start()
    photo: list[ImageTk.PhotoImage] = []
    shown: list[Image.Image] = []  # the picture on screen, for dimming it once it ends
    latest: list[Any] = []  # the newest picture received, and the label size it was fit to
    fitted: list[tuple[int, int]] = []

    def poll() -> None:
        if quit_.is_set() or box.refused is not None:
            root.destroy()
            return
        pixels = box.take()
        if pixels is not None:
            latest[:] = [pixels]
        size = (max(label.winfo_width(), 1), max(label.winfo_height(), 1))
        if pixels is None and latest and fitted and fitted[0] != size:
            pixels = latest[0]  # the window changed size (or was mapped): fit it again
        if box.ended and shown:  # the status, large, across the dimmed last picture
            photo[:] = [ImageTk.PhotoImage(_ended(shown.pop()))]
            label.configure(image=photo[0], compound="center", font=("TkDefaultFont", 20),
                            text=one_line(box.status, isolate=False))
        elif pixels is not None and not box.ended:
            w, h = size
            fitted[:] = [size]
            img = Image.fromarray(np.asarray(pixels), "RGB")
            scale = min(w / img.width, h / img.height)
            if scale > 0 and abs(scale - 1) > 0.01:
                img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))),
                                 Image.Resampling.BILINEAR)
            photo[:] = [ImageTk.PhotoImage(img)]
            shown[:] = [img]
            label.configure(image=photo[0], text="")
        elif not photo:
            label.configure(text=one_line(box.status, isolate=False))  # may quote the server
        root.title(f"chatscreen viewer: {one_line(box.status, isolate=False)}")
        root.after(15, poll)

    root.bind("<Control-q>", lambda _e: root.destroy())
    root.after(15, poll)
    handlers = {sig: signal.signal(sig, lambda *_: quit_.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        root.mainloop()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        stop.set()
        net.join(30 if record is not None else 2)  # a recording ends its file first
    if box.refused is not None:
        raise ChatscreenError(box.refused)
    if box.record_error is not None:
        raise ChatscreenError(box.record_error)
    if record is not None:
        print(box.recorded.summary() if box.recorded is not None
              else f"nothing recorded: no picture came ({box.status})", flush=True)
    return 0
