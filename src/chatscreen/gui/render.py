"""The fast redraw path: a shared screen shown in one Tk photo image, scaled to fit.

Two halves, so that the Tk thread does as little as possible:

* :class:`Composer` (no Tk; runs on a render worker thread) keeps the shared screen at full
  resolution as a PIL image, pastes each frame's rectangles into it, and recomputes only the
  part of the *scaled* picture those rectangles change (``Image.resize`` with a ``box`` gives
  exactly the pixels a full resize gives there). Its output is a :class:`Redraw`: a few
  regions already at display scale.
* :class:`Blitter` (Tk thread) writes those regions into the photo: a region covering the
  whole picture goes straight in with PIL's block put; a small one as PPM bytes
  (``photo put -to``); a larger one through a scratch PIL photo and ``photo copy -to``. Tk
  then repaints only that part of the window. ``bench/bench_gui.py`` measures the choices.
"""

from __future__ import annotations

import math
import threading
import tkinter as tk
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageTk

from chatscreen.screen.codec import copy_source, decode_rect
from chatscreen.screen.cursor import Cursor, composite
from chatscreen.screen.scroll import Move  # a copy rect: what the picture already has, moved

RGB = npt.NDArray[np.uint8]
Method = Literal["auto", "ppm", "pil"]
#: Regions up to this many pixels go in as PPM (cheaper than a PIL block put + copy there).
PPM_MAX_PIXELS = 40_000


@dataclass(frozen=True, slots=True)
class Patch:
    """A decoded rectangle of a frame: its place on the shared screen and its pixels."""

    x: int
    y: int
    pixels: RGB  # h x w x 3


def patch_of(x: int, y: int, w: int, h: int, enc: str, data: bytes,
             size: tuple[int, int]) -> Patch | Move:
    """Decode one rect of a frame of a ``size`` screen (raises DecodeError)."""
    if enc == "copy":
        sx, sy = copy_source(data, w, h, size)
        return Move(x, y, w, h, sx, sy)
    return Patch(x, y, decode_rect(enc, data, w, h))


@dataclass(frozen=True, slots=True)
class Region:
    """Part of the scaled picture, at its place in the photo."""

    x: int
    y: int
    image: Image.Image


@dataclass(slots=True)
class Redraw:
    """What the photo must show next: its size, and the regions that changed."""

    size: tuple[int, int]
    regions: list[Region] = field(default_factory=list)
    full: bool = False  # the regions cover the whole picture (older redraws may be dropped)
    source: tuple[int, int] = (0, 0)  # the shared screen's size


def resample_for(src: tuple[int, int], dst: tuple[int, int]) -> Image.Resampling:
    """Area averaging (BOX) when shrinking: right for screens and ~25% cheaper than bilinear;
    bilinear when enlarging."""
    return Image.Resampling.BOX if dst[0] < src[0] else Image.Resampling.BILINEAR


def fit_size(w: int, h: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The size of a w x h picture scaled to fit box_w x box_h, keeping the aspect ratio."""
    scale = min(box_w / w, box_h / h)
    if abs(scale - 1.0) < 1e-3:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


class Composer:
    """The shared screen at full resolution and the regions of its scaled picture to redraw.

    Thread-safe: frames are applied on a worker thread, ``set_box`` comes from the Tk thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.full: Image.Image | None = None
        self.box = (1, 1)
        self.fit = True  # scale to fit the box; False: show the picture 1:1
        self.shown = (0, 0)
        self.complete = False  # a key frame has been applied
        self.video: Any = None  # chatscreen.screen.video.VideoStreams, at the first h264 rect
        self.cursor: Cursor | None = None  # the sharer's pointer, drawn over the picture
        self._under: tuple[int, int, Image.Image] | None = None  # what the pointer covers

    def decode_h264(self, x: int, y: int, w: int, h: int, data: bytes) -> RGB | None:
        """An h264 rect's picture, by its stream's decoder (render worker thread: frames come
        in order); None while the stream waits for an IDR. DecodeError for bad data."""
        if self.video is None:
            from chatscreen.screen.video import VideoStreams  # PyAV loads only when needed

            self.video = VideoStreams()
        pic: RGB | None = self.video.decode(x, y, w, h, data)
        return pic

    def _lift(self) -> tuple[int, int, int, int] | None:
        """Take the pointer off the full picture; the box it covered."""
        if self._under is None or self.full is None:
            return None
        x, y, img = self._under
        self._under = None
        self.full.paste(img, (x, y))
        return x, y, img.width, img.height

    def _drop(self) -> tuple[int, int, int, int] | None:
        """Draw the pointer on the full picture (keeping what it covers); its box."""
        c = self.cursor
        if c is None or c.shape is None or self.full is None:
            return None
        fw, fh = self.full.size
        x0, y0 = max(c.x, 0), max(c.y, 0)
        x1, y1 = min(c.x + c.shape.w, fw), min(c.y + c.shape.h, fh)
        if x1 <= x0 or y1 <= y0:
            return None
        under = self.full.crop((x0, y0, x1, y1))
        drawn = composite(np.asarray(under), Cursor(c.x - x0, c.y - y0, c.shape))
        self.full.paste(Image.fromarray(drawn, "RGB"), (x0, y0))
        self._under = (x0, y0, under)
        return x0, y0, x1 - x0, y1 - y0

    def set_cursor(self, cursor: Cursor | None) -> Redraw | None:
        """The pointer moved or changed: the regions to redraw (its old and new places)."""
        with self._lock:
            self.cursor = cursor
            if self.full is None:
                return None
            boxes = [self._lift(), self._drop()]
            if self._target(*self.full.size) != self.shown:
                return self._redraw_all()
            out = Redraw(self.shown, source=self.full.size)
            out.regions += [self._region(*b) for b in boxes if b is not None]
            return out

    def picture(self) -> Image.Image | None:
        """A copy of the shared screen at full resolution, without the pointer drawn on it
        (None before a complete picture): what "Snapshot to chat" posts."""
        with self._lock:
            if self.full is None or not self.complete:
                return None
            out = self.full.copy()
            if self._under is not None:
                x, y, under = self._under
                out.paste(under, (x, y))
            return out

    def _target(self, w: int, h: int) -> tuple[int, int]:
        return fit_size(w, h, *self.box) if self.fit else (w, h)

    def set_box(self, box_w: int, box_h: int, fit: bool | None = None) -> Redraw | None:
        """The room for the picture (or the fit / 1:1 choice) changed; returns a full redraw
        if the size the picture is shown at changes."""
        with self._lock:
            self.box = (max(1, box_w), max(1, box_h))
            if fit is not None:
                self.fit = fit
            if self.full is None or self._target(*self.full.size) == self.shown:
                return None
            return self._redraw_all()

    def apply(self, w: int, h: int, key: bool, patches: Sequence[Patch | Move]) -> Redraw:
        """Apply one frame (a key frame covers the whole screen)."""
        with self._lock:
            if self.full is None or self.full.size != (w, h):
                self.full = Image.new("RGB", (w, h))
                self.complete = False
                self._under = None
            if key:
                self.complete = True
            lifted = self._lift()  # the patches and copies apply to the picture alone
            first = patches[0] if len(patches) == 1 else None
            covers = isinstance(first, Patch) and first.pixels.shape[:2] == (h, w)
            if (isinstance(first, Patch) and covers and self._target(w, h) == (w, h)
                    and self.cursor is None):
                # A whole picture shown 1:1: it is its own redraw, no crop needed.
                img = Image.fromarray(first.pixels, "RGB")
                self.full.paste(img, (0, 0))
                self.shown = (w, h)
                return Redraw((w, h), [Region(0, 0, img)], full=True, source=(w, h))
            for p in patches:
                if isinstance(p, Move):  # crop copies: overlapping source is fine
                    self.full.paste(self.full.crop((p.sx, p.sy, p.sx + p.w, p.sy + p.h)),
                                    (p.x, p.y))
                else:
                    self.full.paste(Image.fromarray(p.pixels, "RGB"), (p.x, p.y))
            dropped = self._drop()
            if covers or self._target(w, h) != self.shown:
                return self._redraw_all()
            out = Redraw(self.shown, source=(w, h))
            for p in patches:
                pw, ph = (p.w, p.h) if isinstance(p, Move) else p.pixels.shape[1::-1]
                out.regions.append(self._region(p.x, p.y, pw, ph))
            out.regions += [self._region(*b) for b in (lifted, dropped) if b is not None]
            return out

    def _redraw_all(self) -> Redraw:
        assert self.full is not None
        w, h = self.full.size
        self.shown = self._target(w, h)
        return Redraw(self.shown, [self._region(0, 0, w, h)], full=True, source=(w, h))

    def _region(self, x: int, y: int, w: int, h: int) -> Region:
        """The part of the scaled picture that source rect x,y,w,h changes."""
        assert self.full is not None
        fw, fh = self.full.size
        sw, sh = self.shown
        if (sw, sh) == (fw, fh):
            return Region(x, y, self.full.crop((x, y, x + w, y + h)))
        sx, sy = sw / fw, sh / fh
        # The filter reaches about one output pixel beyond the rect: widen by 1 and clip.
        dx0 = max(0, math.floor(x * sx) - 1)
        dy0 = max(0, math.floor(y * sy) - 1)
        dx1 = min(sw, math.ceil((x + w) * sx) + 1)
        dy1 = min(sh, math.ceil((y + h) * sy) + 1)
        box = (dx0 / sx, dy0 / sy, dx1 / sx, dy1 / sy)
        img = self.full.resize((dx1 - dx0, dy1 - dy0), resample_for((fw, fh), (sw, sh)),
                               box=box)
        return Region(dx0, dy0, img)

    def scaled_picture(self) -> Image.Image | None:
        """What the photo should show: the full picture resized to the shown size."""
        with self._lock:
            if self.full is None:
                return None
            if self.shown == self.full.size:
                return self.full.copy()
            return self.full.resize(self.shown, resample_for(self.full.size, self.shown))


class Blitter:
    """Writes :class:`Redraw` regions into a Tk photo image. Tk thread only."""

    def __init__(self, master: tk.Misc, method: Method = "auto") -> None:
        self.master = master
        self.method: Method = method
        self.photo = ImageTk.PhotoImage("RGB", (1, 1), master=master)
        self._scratch: ImageTk.PhotoImage | None = None
        self.size = (1, 1)
        self.updates = 0  # regions written (for tests and benchmarks)

    @property
    def name(self) -> str:
        return str(self.photo)

    def blit(self, redraw: Redraw) -> bool:
        """Draw; True if the photo was replaced (the widget showing it must be told)."""
        replaced = False
        if redraw.size != self.size:
            self.photo = ImageTk.PhotoImage("RGB", redraw.size, master=self.master)
            self._scratch = None
            self.size = redraw.size
            replaced = True
        for region in redraw.regions:
            self._put(region)
        return replaced

    def _put(self, region: Region) -> None:
        img = region.image
        w, h = img.size
        if (region.x, region.y, w, h) == (0, 0, *self.size) and self.method != "ppm":
            self.photo.paste(img)  # the whole picture: one block put
        elif self.method == "ppm" or (self.method == "auto" and w * h <= PPM_MAX_PIXELS):
            data = b"P6\n%d %d\n255\n" % (w, h) + img.tobytes()
            self.photo.tk.call(self.name, "put", data, "-format", "ppm",
                               "-to", region.x, region.y)
        else:
            if self._scratch is None:
                self._scratch = ImageTk.PhotoImage("RGB", self.size, master=self.master)
            self._scratch.paste(img)
            self.photo.tk.call(self.name, "copy", str(self._scratch), "-from", 0, 0, w, h,
                               "-to", region.x, region.y)
        self.updates += 1

    def release(self) -> None:
        """Forget the photos (Tk thread). An ImageTk photo deletes its Tcl image when it is
        freed; freed by the garbage collector on another thread, that call would block."""
        self._scratch = None
        if hasattr(self, "photo"):
            del self.photo

    def clear(self) -> bool:
        return self.blit(Redraw((1, 1), [Region(0, 0, Image.new("RGB", (1, 1)))], full=True))
