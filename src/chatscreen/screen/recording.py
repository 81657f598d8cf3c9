"""A watched share recorded to an MP4 file (H.264, PyAV), at the share's own size.

Variable frame rate: a picture is encoded when the viewer's picture changed, stamped with
the time it arrived (milliseconds since the first), and nothing while the screen is still;
at the end the last picture is stamped again at the stop time, so that the file lasts as
long as the recording did. The pointer is drawn in, as the viewer sees it.

The viewer's event loop only copies what changed into the recorder's own copy of the
picture (:meth:`Recorder.update`, under a lock: for typed text a few hundred bytes); one
thread of the recorder's own converts the changed region to 4:2:0 (into a picture it
keeps) and encodes. It always takes the newest picture: a change that comes while it
encodes is merged with the next, so an encoder that falls behind records fewer pictures,
never a queue. :meth:`Recorder.close` ends the file (the MP4 index, ``moov``, is written
there): call it on every way out (Ctrl+C, SIGTERM, the share ending).

libx264: preset ``ultrafast`` on one thread (1080p typing costs about 7 ms of CPU a picture,
docs/benchmarks.md), CRF 21, 4:2:0, a keyframe (IDR) every :data:`KEY_INTERVAL` seconds.
An odd width or height is coded one larger, the last column or row repeated.
PyAV loads only here and in :mod:`chatscreen.screen.video`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from chatscreen.client import Client, ScreenChannel
from chatscreen.errors import ChatscreenError
from chatscreen.protocol import Message
from chatscreen.screen.codec import Canvas, DecodeError
from chatscreen.screen.cursor import Cursor, composite
from chatscreen.screen.pictures import RGB
from chatscreen.screen.resume import RecordRefused, keep_watching
from chatscreen.screen.sharing import frame_rects
from chatscreen.screen.video import CHROMA_FILTER, coded_size

__all__ = ["RecordError", "RecordRefused", "RecordStats", "Recorder", "ShareRecording",
           "record_share"]

log = logging.getLogger(__name__)

PRESET = "ultrafast"
CRF = 21
KEY_INTERVAL = 2.0  # seconds between keyframes (where a player can seek to)
TIME_BASE = Fraction(1, 1000)  # timestamps in milliseconds

MAX_BOXES = 16  # changed regions kept apart for the encoder; more are merged into one
ENCODER_THREADS = 1  # x264's: more cut the wall time a picture, not the CPU (it adds some)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


class RecordError(ChatscreenError):
    """The recording could not be written (the file, the encoder)."""


@dataclass(frozen=True)
class RecordStats:
    path: Path
    frames: int  # pictures in the file
    seconds: float  # how long it lasts
    w: int
    h: int

    def summary(self) -> str:
        return (f"Recorded {self.w}x{self.h}, {self.seconds:.1f} s, {self.frames} frames "
                f"to {self.path}")


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _add(boxes: list[Box], box: Box) -> None:
    """What changed, as few boxes: the typed character and a clock far from it stay two
    small regions (converted apart), past MAX_BOXES they become their bounding box."""
    if box[2] <= box[0] or box[3] <= box[1]:
        return
    boxes.append(box)
    if len(boxes) > MAX_BOXES:
        whole = boxes[0]
        for b in boxes[1:]:
            whole = _union(whole, b)
        boxes[:] = [whole]


class Recorder:
    """Pictures in (:meth:`update`, from one thread), an MP4 out (on its own thread). The
    file is opened at the first picture: a recorder that got none writes nothing."""

    def __init__(self, path: Path, *, crf: int = CRF, preset: str = PRESET,
                 key_interval: float = KEY_INTERVAL) -> None:
        self.path = Path(path)
        self.crf, self.preset, self.key_interval = crf, preset, key_interval
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._mirror: RGB | None = None  # the newest picture, with the pointer, coded size
        self._size = (0, 0)  # the picture's size (the mirror is coded_size of it)
        self._dirty: list[Box] = []  # what changed in it since the encoder last looked
        self._changed_at = 0.0  # when the newest change arrived
        self._pointer: Box | None = None  # where the pointer was drawn into the mirror
        self._closing = False
        self._thread: threading.Thread | None = None
        self._container: Any = None
        self._stream: Any = None
        self._frame: Any = None  # the 4:2:0 picture kept and updated region by region
        self._planes: list[Any] = []
        self._first: float | None = None
        self._last_pts = -1
        self._last_key = -1
        self.frames = 0
        self.error: BaseException | None = None

    # -- the viewer's side -------------------------------------------------------------

    def update(self, pixels: RGB, boxes: Iterable[tuple[int, int, int, int]] | None,
               cursor: Cursor | None, at: float | None = None) -> None:
        """The viewer's picture (without the pointer) changed in ``boxes`` (x, y, w, h;
        None: anywhere); ``cursor``: the pointer now. Copies what changed, and returns."""
        at = time.monotonic() if at is None else at
        with self._lock:
            if self._closing:
                return
            h, w = pixels.shape[:2]
            if self._mirror is None or (w, h) != self._size:
                cw, ch = coded_size(w, h)
                self._mirror = np.zeros((ch, cw, 3), np.uint8)
                self._size, self._pointer, boxes = (w, h), None, None
            if self._thread is None:
                self._start(w, h)
                self._first = at  # the recording starts here, whatever is merged after
            dirty = self._dirty
            mirror = self._mirror
            if boxes is None:
                dirty.clear()
            changed = ([(0, 0, w, h)] if boxes is None else
                       [(x, y, x + bw, y + bh) for x, y, bw, bh in boxes])
            if self._pointer is not None:  # the pointer moves, or what is under it changed
                changed.append(self._pointer)
            for x0, y0, x1, y1 in changed:
                mirror[y0:y1, x0:x1] = pixels[y0:y1, x0:x1]
                _add(dirty, (x0, y0, x1, y1))
            self._pointer = self._draw_pointer(pixels, cursor)
            if self._pointer is not None:
                _add(dirty, self._pointer)
            if dirty:
                self._pad()
                self._changed_at = at
                self._wake.notify()

    def _draw_pointer(self, pixels: RGB, cursor: Cursor | None) -> Box | None:
        if cursor is None or cursor.shape is None or self._mirror is None:
            return None
        w, h = self._size
        x0, y0 = max(cursor.x, 0), max(cursor.y, 0)
        x1, y1 = min(cursor.x + cursor.shape.w, w), min(cursor.y + cursor.shape.h, h)
        if x1 <= x0 or y1 <= y0:
            return None
        under = pixels[y0:y1, x0:x1]
        self._mirror[y0:y1, x0:x1] = composite(under, Cursor(cursor.x - x0, cursor.y - y0,
                                                             cursor.shape))
        return x0, y0, x1, y1

    def _pad(self) -> None:
        """An odd size: the extra column or row repeats the last one."""
        assert self._mirror is not None
        w, h = self._size
        mirror = self._mirror
        if mirror.shape[1] != w:
            mirror[:h, w] = mirror[:h, w - 1]
        if mirror.shape[0] != h:
            mirror[h] = mirror[h - 1]

    # -- the encoder thread ------------------------------------------------------------

    def _start(self, w: int, h: int) -> None:
        """Open the file and start the encoder thread (under the lock, at the first
        picture)."""
        cw, ch = coded_size(w, h)
        try:
            container: Any = av.open(str(self.path), "w", format="mp4")
        except (OSError, av.FFmpegError) as exc:
            raise RecordError(f"cannot write {self.path}: {exc}") from None
        stream = container.add_stream("libx264")
        stream.width, stream.height = cw, ch
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        ctx = stream.codec_context
        ctx.time_base = TIME_BASE
        ctx.max_b_frames = 0
        ctx.gop_size = 100_000  # keyframes by time (KEY_INTERVAL), not by count
        ctx.thread_count = ENCODER_THREADS
        ctx.options = {"preset": self.preset, "tune": "zerolatency", "crf": str(self.crf),
                       "forced-idr": "1", "x264-params": "scenecut=0:keyint=infinite"}
        self._container, self._stream = container, stream
        self._frame = av.VideoFrame(cw, ch, "yuv420p")
        self._planes = [np.frombuffer(memoryview(p), np.uint8).reshape(
            p.height, p.line_size)[:, : p.width] for p in self._frame.planes]
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while self._encode_next():
                pass
            self._finish()
        except (OSError, av.FFmpegError, ValueError) as exc:
            log.warning("recording to %s failed: %s", self.path, exc)
            self.error = exc
            self._abandon()

    def _encode_next(self) -> bool:
        """Encode the newest picture once something changed; False once closing."""
        with self._lock:
            while not self._dirty and not self._closing:
                self._wake.wait()
            if not self._dirty:
                return False
            at = self._changed_at
            assert self._mirror is not None
            ch, cw = self._mirror.shape[:2]
            scaled = (cw, ch) != (self._frame.width, self._frame.height)  # a new size
            parts = ([(0, 0, self._mirror.copy())] if scaled else
                     [(x0, y0, self._mirror[y0:y1, x0:x1].copy())
                      for x0, y0, x1, y1 in (_even(b, cw, ch) for b in self._dirty)])
            self._dirty = []
        for x0, y0, part in parts:
            if scaled:
                self._convert_scaled(part)  # the whole picture, fit to the file's size
            else:
                self._convert(part, x0, y0)
        self._encode(at)
        return True

    def _convert(self, part: RGB, x0: int, y0: int) -> None:
        # (regions of whole 2x2 blocks: their chroma is theirs alone)
        """Convert a region (even position and size) into the kept 4:2:0 picture."""
        h, w = part.shape[:2]
        yuv = av.VideoFrame.from_ndarray(part, format="rgb24").reformat(
            format="yuv420p", interpolation=CHROMA_FILTER)
        for i, plane in enumerate(yuv.planes):
            s = 1 if i == 0 else 2
            src = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height,
                                                                      plane.line_size)
            self._planes[i][y0 // s : (y0 + h) // s, x0 // s : (x0 + w) // s] = \
                src[: h // s, : w // s]

    def _convert_scaled(self, whole: RGB) -> None:
        yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(whole), format="rgb24").reformat(
            width=self._frame.width, height=self._frame.height, format="yuv420p")
        for i, plane in enumerate(yuv.planes):
            src = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height,
                                                                      plane.line_size)
            self._planes[i][:] = src[:, : self._planes[i].shape[1]]

    def _encode(self, at: float) -> None:
        assert self._first is not None
        # the first picture at 0 (it may be a later one than the first given: merged)
        pts = max(round((at - self._first) * 1000), self._last_pts + 1) if self.frames else 0
        frame = self._frame
        frame.pts = pts
        frame.time_base = TIME_BASE
        key = self._last_key < 0 or pts - self._last_key >= self.key_interval * 1000
        frame.pict_type = (av.video.frame.PictureType.I if key
                           else av.video.frame.PictureType.NONE)
        if key:
            self._last_key = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._last_pts = pts
        self.frames += 1

    def _finish(self) -> None:
        """The last picture again at the stop time (the file lasts as long as the
        recording), the encoder's last packets, and the MP4 index."""
        stop, first = self._stop_at, self._first
        if stop is not None and first is not None and round((stop - first) * 1000) > \
                self._last_pts:
            self._encode(stop)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def _abandon(self) -> None:
        with contextlib.suppress(OSError, av.FFmpegError, ValueError):
            self._container.close()

    # -- the end -----------------------------------------------------------------------

    _stop_at: float | None = None

    def close(self, at: float | None = None) -> RecordStats | None:
        """Stop: the pictures given so far are encoded and the file is complete. None if
        no picture ever came (no file was written). RecordError if writing failed."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._stop_at = time.monotonic() if at is None else at
            self._wake.notify()
            thread = self._thread
        if thread is None:
            return None
        thread.join()
        if self.error is not None:
            raise RecordError(f"recording to {self.path} failed: {self.error}")
        w, h = self._size
        return RecordStats(self.path, self.frames, max(self._last_pts, 0) / 1000, w, h)


def _even(box: Box, w: int, h: int) -> Box:
    """The box grown to whole 2x2 blocks (4:2:0), within the (even) coded size."""
    return box[0] & ~1, box[1] & ~1, min(box[2] + (box[2] & 1), w), min(box[3] + (box[3] & 1), h)


# -- a watched share into a recorder ----------------------------------------------------


class ShareRecording:
    """Feeds a :class:`Recorder` from a watched share's messages: the viewer's canvas once
    it holds a complete picture, with what each frame changed and the pointer."""

    def __init__(self, recorder: Recorder,
                 on_start: Callable[[int, int], None] | None = None) -> None:
        self.recorder = recorder
        self.on_start = on_start  # called with the size at the first picture recorded
        self._whole = True  # the next picture given whole (the first, a key frame)

    def frame_applied(self, msg: Message, canvas: Canvas, cursor: Cursor | None) -> None:
        """After ``msg`` (a ``frame`` or a ``cursor``) was applied to ``canvas``."""
        if not canvas.complete:
            self._whole = True
            return
        if msg.type == "frame" and not msg["key"] and not self._whole:
            boxes: list[tuple[int, int, int, int]] | None = [
                (r.x, r.y, r.w, r.h) for r in msg["rects"]]
        elif msg.type == "frame":
            boxes = None
        else:
            boxes = []  # only the pointer moved
        self._whole = False
        self.recorder.update(canvas.pixels, boxes, cursor)
        if self.on_start is not None:
            self.on_start(*canvas.size)
            self.on_start = None


async def record_share(client: Client, share: dict[str, Any], recorder: Recorder,
                       stop: asyncio.Event,
                       on_start: Callable[[int, int], None] | None = None) -> str:
    """Watch ``share`` and record it until ``stop`` is set or the share ends (after a
    reconnect, the same user's share again, asking to record again). Returns why it ended;
    RecordRefused if the server does not let us record. ``on_start(w, h)``: called at the
    first picture recorded. The recorder is left open."""
    canvas = Canvas(share["w"], share["h"])
    feed = ShareRecording(recorder, on_start)

    async def show(msg: Message, screen: ScreenChannel) -> None:
        if msg.type == "frame":
            try:
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
            except DecodeError as exc:
                log.warning("skipped a frame: %s", exc)
                return
        feed.frame_applied(msg, canvas, screen.cursors.get(msg["share"]))

    watching = asyncio.ensure_future(keep_watching(client, share, show, cursor_messages=True,
                                                   record=True))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if watching.done():
            return watching.result()
        return "stopped"
    finally:
        stopping.cancel()
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
