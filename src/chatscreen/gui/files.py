"""Files in the desktop app: what the Chat tab shows of them and the pieces it uses.

* :class:`TransferPanel`: one row per transfer under the timeline (what, a progress bar,
  how far, Cancel); a finished row says how it ended and goes after a few seconds.
* :class:`PictureWindow`: a picture opened full size (scaled to fit the screen), shown once
  the whole file is downloaded and decoded off the Tk thread.
* :class:`FileCache`: the app's temporary folder (previews, pictures being opened, pasted
  pictures) and the decoded previews as Tk photos (made and freed on the Tk thread).
* ``decode_preview`` / ``decode_fitted`` (worker threads): Pillow, with bounds, on the
  network loop's threads, never on the Tk thread.
* ``clipboard_picture`` (a worker thread): a picture on the X clipboard, by way of xclip
  (Tk reads only text from the clipboard).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import tkinter as tk
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tkinter import ttk
from typing import Any

from PIL import Image, ImageTk

from chatscreen.client.files import format_size
from chatscreen.text import one_line

PREVIEW_MAX = 640  # px: the server makes previews of at most 320x320; larger is not shown
PICTURE_MAX_PIXELS = 50_000_000  # the server's limit for making a preview: ours to open
PREVIEWS_KEPT = 100  # decoded previews kept as photos (~40 MB at most; the oldest dropped)
LABEL_MAX = 48  # characters of a transfer's label shown
FINISHED_SHOWN_MS = 4000  # a finished transfer's row stays this long
CLIPBOARD_TIMEOUT = 3.0  # s for xclip to answer
CLIPBOARD_MAX = 100 * 1000 * 1000  # bytes of a pasted picture read at most

FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a file id is a name in our folder too

KINDS = {"image/png": "PNG image", "image/jpeg": "JPEG image", "image/gif": "GIF image",
         "image/webp": "WebP image", "application/pdf": "PDF document",
         "application/zip": "ZIP archive", "text/plain": "text"}


class PictureError(Exception):
    """A picture that cannot be shown (meant for the user as is)."""


def shorten(text: str, most: int = LABEL_MAX) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def kind_of(mime: str) -> str:
    return KINDS.get(mime, "file")


def is_file_info(info: object) -> bool:
    """A file's description as the timeline needs it (network data: checked)."""
    return (isinstance(info, dict) and isinstance(info.get("id"), str)
            and FILE_ID.fullmatch(info["id"]) is not None
            and isinstance(info.get("name"), str) and isinstance(info.get("size"), int)
            and isinstance(info.get("mime"), str))


def file_summary(info: dict[str, Any]) -> str:
    """``84.2 kB · PNG image · 640x480`` (the server's description: sniffed, not declared)."""
    parts = [format_size(max(0, int(info["size"]))), kind_of(str(info["mime"]))]
    if isinstance(info.get("w"), int) and isinstance(info.get("h"), int):
        parts.append(f"{info['w']}x{info['h']}")
    return " · ".join(parts)


def has_preview(info: dict[str, Any]) -> bool:
    return bool(info.get("thumb")) and not info.get("expired")


# -- decoding (worker threads) ------------------------------------------------------------


def decode_preview(path: Path) -> Image.Image:
    """A server-made preview: a PNG of at most PREVIEW_MAX pixels a side, else PictureError."""
    try:
        with Image.open(path, formats=["PNG"]) as im:
            if max(im.size) > PREVIEW_MAX:
                raise PictureError(f"preview too large ({im.width}x{im.height})")
            return im.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PictureError(f"the preview cannot be shown: {exc}") from None


def decode_fitted(path: Path, box: tuple[int, int]) -> Image.Image:
    """A picture (PNG, JPEG, GIF, WebP: its first frame) scaled down to fit ``box``, never
    up; pictures over PICTURE_MAX_PIXELS are not decoded at all."""
    try:
        with Image.open(path, formats=["PNG", "JPEG", "GIF", "WEBP"]) as im:
            if im.width * im.height > PICTURE_MAX_PIXELS:
                raise PictureError(f"{im.width}x{im.height} is too large to show here; "
                                   "save it and open it with another program")
            im.draft("RGB", box)  # JPEG: decoded at a reduced scale when much larger
            fitted = im.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PictureError(f"the picture cannot be shown: {exc}") from None
    fitted.thumbnail(box, Image.Resampling.LANCZOS)
    return fitted


# -- the clipboard ------------------------------------------------------------------------


class ClipboardError(Exception):
    """Why no picture could be read from the clipboard (meant for the user as is)."""


# what a clipboard of text offers: with one of these, Ctrl+V pastes text
TEXT_TARGETS = frozenset({"UTF8_STRING", "STRING", "TEXT", "COMPOUND_TEXT", "text/plain",
                          "text/plain;charset=utf-8"})


def clipboard_targets(widget: tk.Misc) -> set[str]:
    """The types the clipboard's owner offers (Tk thread: Tk answers for itself when this
    app owns the clipboard); empty when nobody owns it."""
    try:
        targets = widget.selection_get(selection="CLIPBOARD", type="TARGETS")  # type: ignore[no-untyped-call]
        return set(str(targets).split())
    except tk.TclError:
        return set()


def _xclip(*args: str) -> bytes:
    done = subprocess.run(["xclip", "-selection", "clipboard", "-o", *args],
                          capture_output=True, timeout=CLIPBOARD_TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL)
    return done.stdout if done.returncode == 0 else b""


def clipboard_picture() -> bytes | None:
    """The picture on the clipboard (PNG preferred, else any image/* type offered), None if
    there is none; ClipboardError without xclip. Runs xclip: never on the Tk thread (the
    clipboard's owner may be this very app, which must stay free to answer)."""
    if shutil.which("xclip") is None:
        raise ClipboardError("pasting a picture needs xclip (apt install xclip); use "
                             "Attach… instead")
    try:
        targets = _xclip("-t", "TARGETS").decode(errors="replace").split()
        kinds = [t for t in targets if t.startswith("image/")]
        if not kinds:
            return None
        kind = "image/png" if "image/png" in kinds else kinds[0]
        data = _xclip("-t", kind)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClipboardError(f"cannot read the clipboard: {exc}") from None
    if len(data) > CLIPBOARD_MAX:
        raise ClipboardError("the picture on the clipboard is too large")
    return data or None


def pasted_file(text: str) -> Path | None:
    """A file copied in a file manager comes as ``file://`` URIs: the first one, if it is
    a regular file here (other text is pasted as text)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("file://"):
            path = Path(urllib.parse.unquote(urllib.parse.urlparse(line).path))
            return path if path.is_file() else None
    return None


def pasted_name(when: datetime | None = None) -> str:
    return f"pasted-{(when or datetime.now(UTC)).strftime('%Y%m%d-%H%M%S')}.png"


# -- the cache ------------------------------------------------------------------------------


class FileCache:
    """The app's temporary folder and its decoded previews (Tk photos: Tk thread only)."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self.previews: OrderedDict[str, ImageTk.PhotoImage | str] = OrderedDict()
        self.dropped: set[str] = set()  # previews dropped to keep PREVIEWS_KEPT: not again

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="chatscreen-app-"))
        return self._folder

    def scratch(self, prefix: str) -> Path:
        """A new empty folder of ours, for one transfer."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.folder))

    def state(self, file_id: str) -> ImageTk.PhotoImage | str | None:
        """The photo of a preview, "loading", "failed", "dropped" (shown once, then dropped
        for newer ones: not fetched again, or a timeline of many pictures would fetch them
        round and round), or None (not asked for)."""
        if file_id in self.dropped:
            return "dropped"
        return self.previews.get(file_id)

    def put(self, file_id: str, value: Image.Image | str) -> None:
        self.previews[file_id] = (ImageTk.PhotoImage(value) if isinstance(value, Image.Image)
                                  else value)
        self.previews.move_to_end(file_id)
        while len(self.previews) > PREVIEWS_KEPT:
            old, _ = self.previews.popitem(last=False)
            self.dropped.add(old)

    def release(self) -> None:
        """Drop the photos (here, on the Tk thread) and the folder."""
        self.previews.clear()
        self.dropped.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


# -- transfers under the timeline ---------------------------------------------------------


class TransferRow:
    def __init__(self, panel: TransferPanel, tid: int, label: str,
                 cancel: Callable[[], None] | None) -> None:
        self.tid = tid
        self.frame = ttk.Frame(panel)
        self.frame.pack(fill="x", pady=(2, 0))
        # packed from the right first, so that Cancel keeps its room in a narrow window
        self.cancel_button = ttk.Button(self.frame, text="Cancel",
                                        command=cancel or (lambda: None))
        self.cancel_button.pack(side="right", padx=(6, 0))
        self.detail = ttk.Label(self.frame, text="starting…", style="Hint.TLabel", width=26,
                                anchor="w")
        self.detail.pack(side="right")
        self.label = ttk.Label(self.frame, text=shorten(one_line(label, isolate=False)),
                               anchor="w")
        self.label.pack(side="left")
        self.bar = ttk.Progressbar(self.frame, orient="horizontal", mode="determinate",
                                   maximum=1000, length=160)
        self.bar.pack(side="left", padx=(8, 8), fill="x", expand=True)
        self.phase = "starting"
        self.phases: set[str] = set()  # every phase it went through
        self.done = self.total = 0
        self.result: str | None = None  # how it ended: "done", "failed", "cancelled"


class TransferPanel(ttk.Frame):
    """The transfers under way (and those just finished), one row each."""

    def __init__(self, master: tk.Misc) -> None:
        super().__init__(master)
        self.rows: dict[int, TransferRow] = {}
        self.ended: dict[int, tuple[str, str]] = {}  # tid -> (result, text), for tests

    def add(self, tid: int, label: str, cancel: Callable[[], None] | None) -> TransferRow:
        row = self.rows[tid] = TransferRow(self, tid, label, cancel)
        self._shown()
        return row

    def update_row(self, tid: int, phase: str, done: int, total: int) -> None:
        row = self.rows.get(tid)
        if row is None or row.result is not None:
            return
        row.phase, row.done, row.total = phase, done, total
        row.phases.add(phase)
        row.bar.configure(value=round(1000 * done / total) if total else 0)
        words = {"hashing": "checking", "uploading": "sent", "downloading": "received",
                 "reconnecting": "reconnecting…"}
        text = f"{words.get(phase, phase)} {format_size(done)} of {format_size(total)}"
        if phase == "reconnecting":
            text = f"connection lost: resuming at {format_size(done)}"
        row.detail.configure(text=text)

    def finish(self, tid: int, result: str, text: str) -> None:
        """The transfer ended (``result``: "done", "failed" or "cancelled"): say so; the row
        goes after FINISHED_SHOWN_MS (a failure stays until Close)."""
        row = self.rows.get(tid)
        self.ended[tid] = (result, text)
        if row is None:
            return
        row.result = result
        if result == "done":
            row.bar.configure(value=1000)
        row.detail.configure(text=one_line(text, isolate=False),
                             foreground="#b3261e" if result == "failed" else "#1e7d32")
        row.cancel_button.configure(text="Close", command=lambda: self.remove(tid))
        if result != "failed":
            self.after(FINISHED_SHOWN_MS, lambda: self.remove(tid))

    def remove(self, tid: int) -> None:
        row = self.rows.pop(tid, None)
        if row is not None:
            row.frame.destroy()
        self._shown()

    def _shown(self) -> None:
        if self.rows and not self.winfo_ismapped():
            self.grid()
        elif not self.rows:
            self.grid_remove()


# -- a picture full size ------------------------------------------------------------------


class PictureWindow(tk.Toplevel):
    """A picture opened from its preview: "Downloading…" with a bar, then the picture
    scaled to fit the screen (never enlarged). Esc or a click closes it."""

    def __init__(self, master: tk.Misc, info: dict[str, Any],
                 on_close: Callable[[PictureWindow], None]) -> None:
        super().__init__(master, background="#1e1f22")
        self.info = info
        self.on_close = on_close
        self.photo: ImageTk.PhotoImage | None = None
        self.title(f"{one_line(str(info['name']), isolate=False)} — chatscreen")
        self.status = ttk.Label(self, text=f"Downloading {file_summary(info)}…",
                                padding=12)
        self.status.pack(fill="x")
        self.bar = ttk.Progressbar(self, orient="horizontal", mode="determinate",
                                   maximum=1000, length=320)
        self.bar.pack(padx=12, pady=(0, 12))
        self.picture = tk.Label(self, background="#1e1f22", borderwidth=0, cursor="hand2")
        for seq in ("<Escape>", "<Control-w>"):
            self.bind(seq, lambda _e: self.close())
        self.picture.bind("<Button-1>", lambda _e: self.close())
        self.protocol("WM_DELETE_WINDOW", self.close)

    def box(self) -> tuple[int, int]:
        """The most the picture may take: nine tenths of the screen."""
        return (max(64, int(self.winfo_screenwidth() * 0.9)),
                max(64, int(self.winfo_screenheight() * 0.9)))

    def progress(self, done: int, total: int) -> None:
        self.bar.configure(value=round(1000 * done / total) if total else 0)

    def show(self, picture: Image.Image) -> None:
        self.photo = ImageTk.PhotoImage(picture)
        self.bar.pack_forget()
        self.status.pack_forget()
        self.picture.configure(image=self.photo)
        self.picture.pack()
        self.focus_force()

    def fail(self, text: str) -> None:
        self.bar.pack_forget()
        self.status.configure(text=one_line(text, isolate=False), foreground="#b3261e")

    @property
    def shown_size(self) -> tuple[int, int] | None:
        return None if self.photo is None else (self.photo.width(), self.photo.height())

    def close(self) -> None:
        self.on_close(self)
        self.photo = None  # freed here, on the Tk thread
        with contextlib.suppress(tk.TclError):
            self.destroy()
