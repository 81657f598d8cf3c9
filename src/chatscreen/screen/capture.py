"""Screen capture with mss (XShm on X11): about 2.5-3.5 ms per 1920x1080 frame here.

An mss handle belongs to the thread that made it, so :class:`ScreenCapture` is created and
used on one capture thread (see ``chatscreen.screen.sharing``).

mss copies every grab out of its shared memory segment into a new ``bytearray``; a rectangle
captured into a picture we keep (:meth:`ScreenCapture.grab_into`, the hot path while the
screen changes) is read straight out of the segment instead (:class:`_ShmReader`): one copy
instead of two and no fresh pages, 1.1 -> 0.7 ms for a 1088x640 rectangle here. Where mss's
XShm backend is not the one in use (another platform, MIT-SHM refused, the pointer drawn in)
the public ``grab`` serves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mss
import numpy as np
import numpy.typing as npt
from mss.exception import ScreenShotError

from chatscreen.errors import ChatscreenError
from chatscreen.screen.cursor import MAX_CURSOR, Cursor, shape_of_bgra

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]  # H x W x 4, BGRA (what mss gives, no copy)


class CaptureError(ChatscreenError):
    pass


@dataclass(frozen=True, slots=True)
class Monitor:
    index: int
    left: int
    top: int
    width: int
    height: int


class ScreenCapture:
    """Grab one monitor (1, 2, ...) or all of them as one picture (0)."""

    def __init__(self, monitor: int = 1, *, with_cursor: bool = True) -> None:
        try:
            self._sct = mss.MSS(with_cursor=with_cursor)
        except Exception as exc:  # mss raises its own ScreenShotError, or OSError without X
            raise CaptureError(f"cannot open the screen: {exc}") from None
        monitors = self._sct.monitors
        if not 0 <= monitor < len(monitors):
            self._sct.close()
            raise CaptureError(f"no monitor {monitor}; this screen has {len(monitors) - 1} "
                               "(0 means all of them)")
        m = monitors[monitor]
        self.monitor = Monitor(monitor, m["left"], m["top"], m["width"], m["height"])
        # the pointer drawn in is mss's doing: then only its own grab will do
        self._shm: _ShmReader | None = None if with_cursor else _ShmReader.of(self._sct)

    @staticmethod
    def list_monitors() -> list[Monitor]:
        with mss.MSS() as sct:
            return [Monitor(i, m["left"], m["top"], m["width"], m["height"])
                    for i, m in enumerate(sct.monitors)]

    @property
    def size(self) -> tuple[int, int]:
        return self.monitor.width, self.monitor.height

    def grab(self) -> Image:
        """The monitor now, BGRA: a new array each call (mss copies out of its shared memory
        segment), so the caller may keep it as the previous picture."""
        m = self.monitor
        shot = self._sct.grab({"left": m.left, "top": m.top, "width": m.width,
                               "height": m.height})
        return np.asarray(shot)

    def cursor(self) -> Cursor | None:
        """The pointer now (its picture's top left relative to the monitor, and the
        picture), or None where it cannot be had (no XFixes, another platform)."""
        # mss 10 draws the pointer into captures (with_cursor) from its implementation's
        # cursor(), which the public object does not expose: use it where it is there
        impl = getattr(self._sct, "_impl", None)
        cursor = getattr(impl, "cursor", None)
        if cursor is None:
            return None
        try:
            shot = cursor()
        except Exception:  # mss raises ScreenShotError without XFixes
            return None
        if shot is None or shot.width <= 0 or shot.height <= 0:
            return None
        if shot.width > MAX_CURSOR or shot.height > MAX_CURSOR:
            return None
        m = self.monitor
        return Cursor(shot.left - m.left, shot.top - m.top,
                      shape_of_bgra(shot.raw, shot.width, shot.height))

    def grab_into(self, out: Image, x: int, y: int, w: int, h: int) -> None:
        """Capture only the w x h rectangle at (x, y) of the monitor into ``out`` (a picture
        of the monitor's size) at the same place: ~0.1 ms for a few tiles against ~1.5-3 ms
        for the whole 1920x1080 monitor."""
        m = self.monitor
        if self._shm is not None:
            try:
                if self._shm.read_into(out[y : y + h, x : x + w], m.left + x, m.top + y):
                    return
            except (ScreenShotError, AttributeError, TypeError, ValueError) as exc:
                log.info("reading the shared memory segment failed, mss grabs: %s", exc)
            self._shm = None
        shot = self._sct.grab({"left": m.left + x, "top": m.top + y, "width": w, "height": h})
        out[y : y + h, x : x + w] = np.asarray(shot)

    def grab_boxes_into(self, out: Image, boxes: list[tuple[int, int, int, int]]) -> None:
        """:meth:`grab_into` for each (x, y, w, h) of ``boxes``: where the shared memory
        segment is read in place, every request goes before the first reply is waited for
        (one round trip to the X server, not one a box: typing's line and clock, 2 -> 1)."""
        m = self.monitor
        if self._shm is not None and len(boxes) > 1:
            try:
                if self._shm.read_many(out, boxes, m.left, m.top):
                    return
            except (ScreenShotError, AttributeError, TypeError, ValueError) as exc:
                log.info("reading the shared memory segment failed, mss grabs: %s", exc)
                self._shm = None
        for x, y, w, h in boxes:
            self.grab_into(out, x, y, w, h)

    def close(self) -> None:
        self._shm = None
        self._sct.close()


class _ShmReader:
    """XShmGetImage into mss's own shared memory segment, read in place. It uses mss's
    XCB backend's internals (``mss>=10.2,<11``): :meth:`of` gives None where they are not
    what it expects, and :meth:`read_into` False until mss has shown that MIT-SHM works (its
    first grab, which falls back to XGetImage if not)."""

    def __init__(self, impl: Any, xcb: Any, all_planes: int, available: Any) -> None:
        self._impl, self._xcb, self._planes = impl, xcb, all_planes
        self._available = available  # mss's ShmStatus.AVAILABLE

    @classmethod
    def of(cls, sct: Any) -> _ShmReader | None:
        impl = getattr(sct, "_impl", None)
        if impl is None or not all(hasattr(impl, a) for a in
                                   ("conn", "drawable", "_buf", "_shmseg", "shm_status",
                                    "drawable_depth")):
            return None
        try:
            from mss.linux import xcb
            from mss.linux.base import ALL_PLANES
            from mss.linux.xshmgetimage import ShmStatus
        except ImportError:
            return None
        return cls(impl, xcb, ALL_PLANES, ShmStatus.AVAILABLE)

    def read_many(self, out: Image, boxes: list[tuple[int, int, int, int]], left: int,
                  top: int) -> bool:
        """The (x, y, w, h) ``boxes`` of the monitor whose top left is at root (left, top),
        each into ``out`` at the same place: every request first, each into its own part of
        the segment, then the replies; False: not possible this way (not yet, or the boxes
        do not fit in the segment together: then nothing was asked)."""
        impl = self._impl
        if impl.shm_status != self._available or impl._buf is None or impl.conn is None:
            return False
        offsets, end = [], 0
        for _, _, w, h in boxes:
            offsets.append(end)
            end += -(-w * h * 4 // 64) * 64  # each part 64-byte aligned
        if end > len(impl._buf):
            return False
        xcb = self._xcb
        cookies = [xcb.LIB.shm.xcb_shm_get_image(impl.conn, impl.drawable, left + x, top + y,
                                                 w, h, self._planes, xcb.ImageFormat.ZPixmap,
                                                 impl._shmseg, off)
                   for (x, y, w, h), off in zip(boxes, offsets, strict=True)]
        replies = [c.reply(impl.conn) for c in cookies]  # all of them, even after a bad one
        if any(r.depth != impl.drawable_depth for r in replies):
            raise ScreenShotError(f"the X server sent depth {replies[0].depth}")
        for (x, y, w, h), off in zip(boxes, offsets, strict=True):
            view = np.frombuffer(impl._buf, np.uint8, count=w * h * 4,
                                 offset=off).reshape(h, w, 4)
            out[y : y + h, x : x + w] = view
            del view  # (see read_into)
        return True

    def read_into(self, out: Image, left: int, top: int) -> bool:
        """Capture the rectangle of ``out``'s size at (left, top) of the root window into
        ``out``; False: not (yet) possible this way."""
        impl = self._impl
        if impl.shm_status != self._available or impl._buf is None or impl.conn is None:
            return False
        h, w = out.shape[:2]
        reply = self._xcb.shm_get_image(impl.conn, impl.drawable, left, top, w, h,
                                        self._planes, self._xcb.ImageFormat.ZPixmap,
                                        impl._shmseg, 0)
        if reply.depth != impl.drawable_depth:
            raise ScreenShotError(f"the X server sent depth {reply.depth}")
        view = np.frombuffer(impl._buf, np.uint8, count=w * h * 4).reshape(h, w, 4)
        out[...] = view
        del view  # mss closes its segment at close(): no view may outlive the copy
        return True
