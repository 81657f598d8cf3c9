"""Sharing and viewing a screen over a client's screen connection.

The sharer waits for damage, captures and encodes on one dedicated thread (mss handles are
per thread; see :class:`_Pacer`), which wakes the event loop once an update, to send it. Where
the X server has the DAMAGE extension (:mod:`chatscreen.screen.damage`, read on that thread),
it captures when the X server reports a change, right away but not much more often than
``fps`` on average (a change that comes too soon waits for a token: see
:class:`CaptureBucket`), once the drawing
has settled (the listener tells of a burst of damage once it is over), and compares only the
tiles the damage touched; an idle screen costs no capture at all, except when a lossless
refresh falls due. Without DAMAGE (no X, Wayland, ``damage=False``) it polls at a steady
``fps`` cadence that skips missed ticks instead of bursting. Each capture, the
:class:`~chatscreen.screen.encoders.ScreenEncoder` compares it with the previous one tile by
tile and returns only the changed regions, each encoded by its content (lossless for text and
UI, JPEG for photographic regions), plus the lossless refresh of regions that stopped
changing; nothing at all when nothing changed. A key frame (the whole screen) is sent first,
when the server asks (``need_key``) and every ``KEY_INTERVAL`` seconds while the screen
changes. ``send_frame`` waits for the socket to drain, so a slow uplink lowers the frame rate
instead of building a backlog; the server keeps the newest version of every region for its
viewers, so the sharer never waits for any of them. Where XFixes gives the pointer's picture,
the captures leave the pointer out and a ``cursor`` message goes when it moves or changes
(:mod:`chatscreen.screen.cursor`): moving the mouse re-sends no tiles. The pointer is looked at (an
X round trip) with a capture after DAMAGE's listener saw it move, else at most every
``POINTER_RECHECK`` seconds (a new picture without a move: a busy cursor, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chatscreen.client import Client, ScreenChannel
from chatscreen.errors import ServerError
from chatscreen.protocol import Message
from chatscreen.screen.capture import Image, ScreenCapture
from chatscreen.screen.codec import Canvas, DecodeError, fit_within
from chatscreen.screen.cursor import Cursor, CursorTracker
from chatscreen.screen.damage import DamageListener, Rect, damage_mask
from chatscreen.screen.encoders import DEFAULT_PRESET, ScreenEncoder, Update
from chatscreen.screen.scroll import MIN_ROWS
from chatscreen.screen.simulcast import LowLayer
from chatscreen.screen.tiles import Box, Mask, merge_tiles

DEFAULT_FPS = 30.0
PARTIAL_CAPTURE = 0.25  # damage within this share of the screen: capture only its boxes
PARTIAL_BOXES = 8  # at most this many boxes a capture (each is an X round trip)
PARTIAL_SLACK = 0.01  # boxes merge when their union adds at most this share of the screen
CAPTURE_BURST = 2.0  # captures that may follow one another sooner than 1/fps
CAPTURE_SLACK = 1.2  # captures may come at up to 1.2 x fps on average (see CaptureBucket)
POINTER_RECHECK = 0.25  # seconds: the pointer's picture is asked for after it moved, else
#                         at most this often (an X round trip a capture cost ~0.4 ms, more
#                         while the X server is busy drawing)
KEY_INTERVAL = 60.0  # seconds between unrequested key frames, only while the screen changes

log = logging.getLogger(__name__)


@dataclass
class ShareStats:
    frames: int = 0
    key_frames: int = 0
    rects: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    captures: int = 0  # screen captures taken (frames + captures that found no change)
    damage: bool = False  # captures driven by X DAMAGE (else polling at fps)
    channel: ScreenChannel | None = None  # the share's connection (its ``viewers``: live)
    cursors: int = 0  # pointer updates sent (the pointer is not in the tiles)
    fps: float = 0.0  # the update rate asked for (about; see CaptureBucket)
    preset: str = ""  # the encoder's preset (chatscreen.screen.encoders.PRESETS)

    def summary(self) -> str:
        secs = max(time.monotonic() - self.started, 1e-9)
        return (f"sent {self.frames} frames in {secs:.1f} s: {self.frames / secs:.1f} frames/s, "
                f"{self.bytes / secs / 1000:.0f} kB/s")


class _Grabber:
    """Lives on the capture thread."""

    def __init__(self, monitor: int, quality: int | None, max_size: tuple[int, int] | None,
                 preset: str = DEFAULT_PRESET, encoding: str = "auto") -> None:
        # the pointer goes as its own small update where its picture can be had (XFixes),
        # else it is drawn into the captures
        self.capture = ScreenCapture(monitor, with_cursor=False)
        self.pointer: CursorTracker | None = CursorTracker()
        if max_size is not None or self.capture.cursor() is None:
            self.capture.close()
            self.capture = ScreenCapture(monitor)
            self.pointer = None
        self.encoder = ScreenEncoder(preset, quality=quality, encoding=encoding)
        self.max_size = max_size
        self.last_key = 0.0
        self._scratch: Image | None = None  # the screen as last captured, tile by tile
        self.low: LowLayer | None = None  # the low quality layer, while the relay wants it
        self.low_rate: int | None = None  # set by the sharing loop (the relay's low_layer)
        self.refresh_at: float | None = None  # the encoder's refresh_due() after the last grab

    def close(self) -> None:
        self.capture.close()
        self.encoder.close()
        if self.low is not None:
            self.low.close()
            self.low = None

    def _layered(self, img: Image, update: Update) -> Update:
        """``update`` with the low quality layer added while the relay asks for one."""
        if self.low_rate is None:
            if self.low is not None:
                self.low.close()
                self.low = None
            return update
        if self.low is None:
            self.low = LowLayer(self.low_rate)
        self.low.retune(self.low_rate)
        return self.low.add(img, update)

    def _grab_damaged(self, force: bool, damaged: list[Rect] | None,
                      hint: Mask | None) -> tuple[Image, list[Box] | None] | None:
        """Capture the damaged pixels (:func:`capture_boxes`: the damage rectangles
        themselves, merged into a few; the tiles they touch when there are many; the whole
        screen when they are much of it) into the scratch copy of the screen: the picture to
        encode, or None (no scratch copy yet, a key frame due: capture a new picture). The
        rest of the scratch copy holds what was captured before, which is the screen there:
        damage is reported for every change. The encoder, given the damage as ``hint``
        (its tiles), reads only the hinted tiles and those due for a lossless refresh; and
        of those only the boxes captured, when returned with the picture (the other pixels
        of the scratch copy are those of the previous capture)."""
        scratch = self._scratch
        if (scratch is None or force or damaged is None or hint is None
                or self.max_size is not None
                or time.monotonic() - self.last_key >= KEY_INTERVAL):
            return None
        m = self.capture.monitor
        h, w = scratch.shape[:2]
        if not hint.any():
            return scratch, []  # no damage on this monitor (a refresh due): no capture
        boxes = capture_boxes(damaged, hint, w, h, m.left, m.top, self.encoder.tile)
        if boxes is None:
            if self._grab_stream_first(scratch, hint) is None:
                # the whole screen, into the scratch copy: one copy out of the shared
                # memory and no fresh pages (2.5 -> 1.7 ms for 1920x1080 here)
                self.capture.grab_into(scratch, 0, 0, w, h)
            return scratch, None
        self.capture.grab_boxes_into(scratch, [(b.x, b.y, b.w, b.h) for b in boxes])
        return scratch, boxes

    def _grab_stream_first(self, scratch: Image, mask: Mask) -> Image | None:
        """Damage over much of the screen with an H.264 stream running in it (a video, and
        an application that redraws the bounding box of all it changed): capture the stream's
        tiles first and start x264 on its rectangle (:meth:`ScreenEncoder.prefetch`), then the
        other damaged tiles in at most ``PARTIAL_BOXES`` boxes, into the scratch copy, while
        x264 works; None (capture it all) when there is no such stream."""
        stream = self.encoder.stream_area()
        if stream is None:
            return None
        h, w = scratch.shape[:2]
        t = self.encoder.tile
        inside = self.encoder.stream_tiles(mask.shape)
        rest = merge_tiles(mask & ~inside, w, h, t)
        if not (mask & inside).any() or len(rest) > PARTIAL_BOXES:
            return None
        self.capture.grab_into(scratch, stream.x, stream.y, stream.w, stream.h)
        self.encoder.prefetch(scratch, mask)
        for b in rest:  # never inside the stream's rectangle: x264 is reading it
            self.capture.grab_into(scratch, b.x, b.y, b.w, b.h)
        return scratch

    def _hint(self, damaged: list[Rect] | None, w: int, h: int) -> Mask | None:
        """The tiles of a w x h capture of the monitor that ``damaged`` touches (None: no
        damage known: compare all), and whether to look for a scroll in them: only where
        the damage is tall enough to hold one (typing damages a line ~20 pixels high and a
        clock: looking there cost ~0.3 ms a capture, and found nothing)."""
        if damaged is None:
            self.encoder.moves = True
            return None
        m = self.capture.monitor
        self.encoder.moves = tall_enough(damaged, w, h, m.left, m.top)
        return damage_mask(damaged, w, h, left=m.left, top=m.top, tile=self.encoder.tile)

    def grab_with_pointer(self, force: bool, damaged: list[Rect] | None = None,
                          idr: bool = False, pointer: bool = True
                          ) -> tuple[tuple[int, int, Update] | None, tuple[Cursor, bool] | None]:
        """:meth:`grab`, and (``pointer``: look at it) the pointer update due (the cursor,
        and whether its picture changed), if any."""
        grabbed = self.grab(force, damaged, idr)
        return grabbed, self.pointer_update() if pointer else None

    def pointer_update(self) -> tuple[Cursor, bool] | None:
        if self.pointer is None:
            return None
        return self.pointer.update(self.capture.cursor())

    def grab(self, force: bool, damaged: list[Rect] | None = None,
             idr: bool = False) -> tuple[int, int, Update] | None:
        """Capture and encode. ``damaged``: the rectangles (root coordinates) X DAMAGE
        reported since the last capture, to compare only their tiles; None: compare all.
        ``idr``: the relay asked for an H.264 keyframe. Sets :attr:`refresh_at`."""
        try:
            return self._grab(force, damaged, idr)
        finally:  # the encoder changes only here: the sharing loop reads this, not it
            self.refresh_at = self.encoder.refresh_due()

    def _grab(self, force: bool, damaged: list[Rect] | None,
              idr: bool) -> tuple[int, int, Update] | None:
        if idr:
            self.encoder.request_idr()
        scratch = self._scratch
        hint = None if scratch is None else self._hint(damaged, scratch.shape[1],
                                                       scratch.shape[0])
        grabbed = self._grab_damaged(force, damaged, hint)
        if grabbed is not None:  # only the damaged pixels were captured (into the scratch)
            img, boxes = grabbed
            update = self.encoder.encode(img, now=time.monotonic(), hint=hint, damage=boxes)
            return None if update is None else (img.shape[1], img.shape[0],
                                                self._layered(img, update))
        img = self.capture.grab()
        self._scratch = None
        full = img.shape[:2]
        if self.max_size is not None:
            img = fit_within(img, *self.max_size)
        now = time.monotonic()
        key = force or now - self.last_key >= KEY_INTERVAL
        hint = None
        h, w = img.shape[:2]
        if img.shape[:2] == full:  # a scaled picture: compare all
            hint = self._hint(damaged, w, h)
        else:
            self.encoder.moves = True
        update = self.encoder.encode(img, key=force, now=now, hint=hint)
        if update is None:
            if hint is not None and self.max_size is None and img.flags.writeable:
                self._scratch = img
            return None  # nothing changed: send nothing
        if key and not update.key:  # the periodic key frame, only when something changed
            update = self.encoder.encode(img, key=True, now=now)
            assert update is not None
        if update.key:
            self.last_key = now
        elif hint is not None and self.max_size is None and img.flags.writeable:
            self._scratch = img  # the encoder copied what it needed: ours to write into
        return w, h, self._layered(img, update)


def partial_boxes(mask: Mask, w: int, h: int, tile: int) -> list[Box] | None:
    """The rectangles to capture for the damaged tiles of ``mask`` when they are at most
    ``PARTIAL_CAPTURE`` of the screen: the bounding box of each group of them, the groups'
    boxes merged while that does not add more than ``PARTIAL_SLACK`` of the screen, at most
    ``PARTIAL_BOXES`` of them; None: capture the whole screen. Typing damages a line across
    the screen and the clock (or the bench's marker) in a corner: their bounding box is most
    of the screen (3.5 ms to capture), the two boxes 0.3 ms."""
    boxes = _merge_boxes(merge_tiles(mask, w, h, tile), PARTIAL_SLACK * w * h)
    if len(boxes) > PARTIAL_BOXES or sum(b.area for b in boxes) > PARTIAL_CAPTURE * w * h:
        return None
    return boxes


def capture_boxes(damaged: list[Rect], hint: Mask, w: int, h: int, left: int, top: int,
                  tile: int) -> list[Box] | None:
    """The rectangles to capture for ``damaged`` (root coordinates) on a w x h monitor whose
    top left is at root (left, top): the damaged pixels themselves, clipped to the monitor,
    merged while that adds at most ``PARTIAL_SLACK`` of the screen; if more than
    ``PARTIAL_BOXES`` are left, those of the damaged tiles (``hint``: see
    :func:`partial_boxes`); None: capture the whole screen. Typing damages a line (1918x19
    here) and the clock: 0.18 MB to copy, against 1.1 MB for their tiles."""
    rects = [Box(x0, y0, x1 - x0, y1 - y0) for x, y, rw, rh in damaged
             if (x1 := min(x - left + rw, w)) > (x0 := max(x - left, 0))
             and (y1 := min(y - top + rh, h)) > (y0 := max(y - top, 0))]
    if len(rects) <= 4 * PARTIAL_BOXES:  # a quadratic merge of few rectangles is cheap
        boxes = _merge_boxes(rects, PARTIAL_SLACK * w * h)
        if len(boxes) <= PARTIAL_BOXES:
            return boxes if sum(b.area for b in boxes) <= PARTIAL_CAPTURE * w * h else None
    return partial_boxes(hint, w, h, tile)


def tall_enough(damaged: list[Rect], w: int, h: int, left: int, top: int) -> bool:
    """Does the damage on the w x h monitor at (left, top) cover ``MIN_ROWS`` consecutive
    rows? A scroll (a copy of at least that many rows: :mod:`chatscreen.screen.scroll`)
    changes every row it covers, so none is worth looking for otherwise."""
    spans = sorted((max(y - top, 0), min(y - top + rh, h)) for x, y, rw, rh in damaged
                   if min(x - left + rw, w) > max(x - left, 0))
    start = end = -1
    for a, b in spans:
        if a > end:
            start, end = a, b
        else:
            end = max(end, b)
        if end - start >= MIN_ROWS:
            return True
    return False


def _merge_boxes(boxes: list[Box], limit: float) -> list[Box]:
    """``boxes`` with any two merged into their union while that adds at most ``limit``
    pixels (a quadratic pass: for few boxes)."""
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                u = _union(boxes[i], boxes[j])
                if u.area - boxes[i].area - boxes[j].area <= limit:
                    boxes = [b for k, b in enumerate(boxes) if k not in (i, j)] + [u]
                    merged = True
                    break
            if merged:
                break
    return boxes


def _union(a: Box, b: Box) -> Box:
    x, y = min(a.x, b.x), min(a.y, b.y)
    return Box(x, y, max(a.x + a.w, b.x + b.w) - x, max(a.y + a.h, b.y + b.h) - y)


class CaptureBucket:
    """The capture rate limit: tokens refilled at ``fps`` x ``CAPTURE_SLACK``, at most
    ``burst`` kept. The slack: a screen changing at exactly ``fps`` sometimes needs a second
    capture for one change (a redraw caught half done); without it, each such capture costs
    a token never won back, and from then on every capture waits (the latency ratchets up)."""

    def __init__(self, fps: float, burst: float = CAPTURE_BURST) -> None:
        self.fps, self.burst = fps * CAPTURE_SLACK, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self, now: float) -> float:
        """Take a token for a capture at ``now``; how long to wait before capturing."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.fps) - 1.0
        self.at = now
        return max(0.0, -self.tokens / self.fps)


T = TypeVar("T")


class CaptureThread:
    """The thread that captures and encodes (mss handles belong to the thread that made
    them), running the jobs given to :meth:`run` one after the other. A job costs a
    ``SimpleQueue`` put to start and one ``call_soon_threadsafe`` to end: ~0.1 ms less a
    capture than ``run_in_executor`` (a concurrent Future, its Condition, and an asyncio
    Future chained to it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[..., Any],
                                            tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="capture", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` on the thread, after the jobs before it; its result or error."""
        fut: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fut, fn, args))
        return fut

    def stop(self) -> None:
        """End the thread once the jobs given are done."""
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, fn, args = job
            try:
                result = fn(*args)
            except BaseException as exc:  # the caller gets it
                self._loop.call_soon_threadsafe(_fail, fut, exc)
            else:
                self._loop.call_soon_threadsafe(_done, fut, result)


def _done(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():  # not cancelled meanwhile
        fut.set_result(result)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


async def _wait_any(events: list[asyncio.Event], timeout: float | None) -> None:
    """Return when one of ``events`` is set, or after ``timeout`` seconds."""
    if any(e.is_set() for e in events):
        return
    if timeout is not None and timeout <= 0:
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def share_screen(client: Client, stop: asyncio.Event, *, monitor: int = 1,
                       fps: float = DEFAULT_FPS, quality: int | None = None,
                       max_size: tuple[int, int] | None = None,
                       stats: ShareStats | None = None,
                       on_started: Any = None, preset: str = DEFAULT_PRESET,
                       damage: bool = True, viewers: list[str] | None = None,
                       room: str | None = None, encoding: str = "auto",
                       layers: int = 2, may_record: str | list[str] | None = None,
                       on_recording: Callable[[list[str]], None] | None = None
                       ) -> ShareStats:
    """Share ``monitor`` until ``stop`` is set. ``damage``: capture on X DAMAGE reports where
    the X server has the extension (else, or with False, poll at ``fps``). ``viewers`` or
    ``room``: who may watch (default: anyone). ``encoding``: ``auto`` (by content, H.264 for
    regions that change every frame), ``h264`` (H.264 for any region that keeps changing),
    ``lossless`` or ``jpeg`` (every change so, never H.264). ``layers=2``: send a low quality
    layer too while the relay asks for one (:mod:`chatscreen.screen.simulcast`); 1: never.
    ``may_record``: ``"all"`` or who may record the share besides us (default: nobody);
    ``on_recording`` is called with who records it, whenever that changes."""
    stats = stats or ShareStats()
    stats.fps, stats.preset = fps, preset
    loop = asyncio.get_running_loop()
    pool = CaptureThread(loop)
    try:
        grabber = await pool.run(_Grabber, monitor, quality, max_size, preset, encoding)
    except BaseException:
        pool.stop()
        raise
    # the pointer's moves need no capture when it is not in the captures; the capture
    # thread reads the X events itself (pump): no thread of the listener's own
    listener: DamageListener | None = DamageListener(enabled=damage, threaded=False,
                                                     pointer_rects=grabber.pointer is None)
    assert listener is not None
    if not await pool.run(listener.start):
        log.info("polling the screen at %g frames/s: %s", fps, listener.unavailable)
        listener = None
    stats.damage = listener is not None
    screen: ScreenChannel | None = None
    pacer: _Pacer | None = None
    poker: asyncio.Task[None] | None = None
    try:
        screen = stats.channel = await client.open_screen()
        screen.on_recording = on_recording
        if listener is not None:
            listener.take()  # what the first (full) capture covers anyway
        first = await pool.run(grabber.grab, True)
        stats.captures += 1
        assert first is not None
        w, h, update = first
        await screen.share(w, h, viewers=viewers, room=room, layers=layers,
                           may_record=may_record)
        if on_started is not None:
            on_started(w, h)
        pointer = await pool.run(grabber.pointer_update)
        pacer = _Pacer(grabber, listener, fps, stop, screen)
        sent = asyncio.Event()  # set after every update sent (for _poke_on_events)
        poker = asyncio.create_task(_poke_on_events(pacer, stop, screen, sent))
        grabbed: tuple[int, int, Update] | None = first
        while True:
            if pointer is not None:  # the pointer moved or changed: ~40 bytes, no tiles
                await screen.send_cursor(*pointer)
                stats.cursors += 1
            if grabbed is not None:
                w, h, update = grabbed
                rects = update.regions  # already what send_frame takes
                await screen.send_frame(w, h, rects, key=update.key)
                stats.frames += 1
                stats.key_frames += update.key
                stats.rects += len(rects)
                stats.bytes += update.size
            sent.set()
            while True:
                if stop.is_set():
                    return stats
                if screen.closed.is_set():
                    raise ConnectionResetError(str(screen.link.close_reason or "closed"))
                idr = screen.idr_requested.is_set()
                screen.idr_requested.clear()
                grabber.low_rate = screen.low_rate
                # the capture thread waits for damage and captures: the event loop is woken
                # once an update, to send it
                got = await pool.run(pacer.next_update, screen.key_requested.is_set(), idr)
                stats.captures = pacer.captures + 1
                if pacer.listener is None and stats.damage:
                    log.warning("polling the screen at %g frames/s: %s", fps,
                                listener.unavailable if listener is not None else "")
                    stats.damage = False
                if got is not None:
                    grabbed, pointer = got
                    break
    finally:
        if pacer is not None:
            pacer.closing = True  # the capture thread stops waiting
            pacer.poke()
        if poker is not None:
            poker.cancel()
        if screen is not None:
            await screen.close()
        try:
            if listener is not None:
                await pool.run(listener.close)  # on the thread that reads it
            await pool.run(grabber.close)
        finally:
            pool.stop()


async def _poke_on_events(pacer: _Pacer, stop: asyncio.Event, screen: ScreenChannel,
                          sent: asyncio.Event) -> None:
    """Wake the capture thread (waiting for damage in :meth:`_Pacer.next_update`) when
    the sharing loop has to act: stop, a key frame asked for, the connection closed. A key
    request stays set until the key frame is sent: then wait for that before looking
    again."""
    while True:
        await _wait_any([stop, screen.key_requested, screen.closed], None)
        pacer.poke()
        sent.clear()
        await sent.wait()


class _Pacer:
    """On the capture thread: when to capture (X DAMAGE, read on this thread; the lossless
    refresh; the polling cadence; the rate limit), and what to send. The sharing loop asks
    it for the next update (:meth:`next_update`) and sends it: the event loop is woken once
    an update, not for damage nor for a capture that found nothing new."""

    def __init__(self, grabber: _Grabber, listener: DamageListener | None, fps: float,
                 stop: asyncio.Event, screen: ScreenChannel) -> None:
        self.grabber, self.listener = grabber, listener
        self.stop, self.screen = stop, screen
        self.period = 1.0 / fps
        self.bucket = CaptureBucket(fps)
        self.next_tick = time.monotonic()
        self.pointer_moves = None if listener is None else listener.pointer_moves
        self.pointer_looked = time.monotonic()
        self.captures = 0
        self.closing = False
        self._wake = threading.Event()  # polling: poke() ends the wait for the next tick

    def poke(self) -> None:
        """Have :meth:`next_update` return (None) soon to let the sharing loop look; any
        thread."""
        self._wake.set()
        listener = self.listener
        if listener is not None:
            listener.poke()

    def _poked(self) -> bool:
        """Has the sharing loop something to do (read from this thread: flags only)?"""
        s = self.screen
        return (self.closing or self.stop.is_set() or s.key_requested.is_set()
                or s.closed.is_set())

    def _wait(self, seconds: float | None, damage: bool = False) -> bool:
        """Wait ``seconds`` (None: no limit), or (``damage``) until damage comes, reading
        it meanwhile; False when the sharing loop has to look, or the X connection broke
        (then poll from now on)."""
        listener = self.listener
        if listener is None:
            self._wake.wait(seconds)
            self._wake.clear()
            return not self._poked()
        end = None if seconds is None else time.monotonic() + seconds
        while True:
            left = None if end is None else max(end - time.monotonic(), 0.0)
            got = listener.pump(left)
            if not listener.active:
                self.listener = None  # (no poke for it from now on)
                listener.close()  # on this thread, which reads it
                self.next_tick = time.monotonic()
                return False
            if self._poked():
                return False
            if got == "damage" and damage:
                return True
            if got == "timeout" or (end is not None and time.monotonic() >= end):
                return True

    def next_update(self, force: bool, idr: bool
                    ) -> tuple[tuple[int, int, Update] | None, tuple[Cursor, bool] | None] | None:
        """Wait for, capture and encode what is to be sent next: (the update or None, the
        pointer's update or None); None when the sharing loop has to look (stop, a key frame
        asked for, the connection closed, DAMAGE lost). ``force``: a key frame now."""
        g = self.grabber
        if force:
            return self._grab(True, None if self.listener is None else self.listener.take(),
                              idr)
        while True:
            if self._poked():
                return None
            listener = self.listener
            hint: list[Rect] | None = None
            if listener is not None:
                # wait for damage or the next lossless refresh
                due = g.refresh_at
                if not listener.accumulator and not self._wait(
                        None if due is None else max(due - time.monotonic(), 0.0), True):
                    return None
                # never much more often than fps on average: a token bucket (refilled at
                # 1.2 x fps, holding CAPTURE_BURST) lets a change be captured at once unless
                # the last ones came faster than fps; then it waits for the next token
                # (whatever else changes meanwhile comes along). Not fixed slots after each
                # capture: with changes at exactly fps, one late wake-up would push every
                # later capture as late (the slot only ratchets up).
                wait = self.bucket.take(time.monotonic())
                if wait > 0 and not self._wait(wait):
                    return None
                hint = listener.take()
                due = g.refresh_at
                if not hint and (due is None or due > time.monotonic()):
                    if listener.pointer_moves != self.pointer_moves:  # the pointer alone
                        self.pointer_moves = listener.pointer_moves
                        self.pointer_looked = time.monotonic()
                        pointer = g.pointer_update()
                        if pointer is not None:
                            return None, pointer
                    continue  # nothing on the screen to look at
            else:
                self.next_tick += self.period
                now = time.monotonic()
                if self.next_tick < now:
                    self.next_tick = now  # skip missed ticks, don't burst
                if not self._wait(self.next_tick - now):
                    return None
            got = self._grab(False, hint, idr)
            idr = False
            if got[0] is not None or got[1] is not None:
                return got
            # nothing changed (a redraw of the same pixels): wait for more

    def _grab(self, force: bool, hint: list[Rect] | None, idr: bool
              ) -> tuple[tuple[int, int, Update] | None, tuple[Cursor, bool] | None]:
        now = time.monotonic()
        listener = self.listener
        moves = None if listener is None else listener.pointer_moves
        # without XFixes' notice of a new picture, look now and then anyway
        look = moves is None or moves != self.pointer_moves or (
            listener is not None and not listener.cursor_events
            and now - self.pointer_looked >= POINTER_RECHECK)
        if look:
            self.pointer_moves, self.pointer_looked = moves, now
        self.captures += 1
        return self.grabber.grab_with_pointer(force, hint, idr, look)


def frame_rects(msg: Message) -> list[tuple[int, int, int, int, str, bytes]]:
    """Split a frame's payload into its rectangles."""
    out = []
    offset = 0
    payload = msg.payload
    for r in msg["rects"]:
        out.append((r.x, r.y, r.w, r.h, r.enc, payload[offset : offset + r.len]))
        offset += r.len
    return out


async def find_share(client: Client, user: str | None, timeout: float) -> dict[str, Any]:
    """Wait until a share (of ``user``, or any) is announced."""
    async with asyncio.timeout(timeout):
        while True:
            share = client.share_of(user) if user else (client.shares[0] if client.shares
                                                        else None)
            if share is not None:
                return share
            await client.next_event()


async def why_no_share(client: Client, user: str | None) -> str:
    """Why no share of ``user`` (or none at all) is listed, in the words a person needs.

    The server lists only the shares one may watch, and does not say whether a share one
    may not watch exists: "not sharing" and "not with you" are one answer. Whether
    ``user`` is online is looked up in the rooms one can see (``rooms``, then ``who``)."""
    if user is None:
        return "Nobody is sharing a screen you can watch"
    if await _seen_online(client, user):
        return f"{user} has no share you can watch (not sharing, or not with you)"
    return f"{user} is not online (in no room you can see, and not sharing with you)"


async def _seen_online(client: Client, user: str) -> bool:
    wanted = user.casefold()
    try:
        rooms = await client.list_rooms()
        for room in rooms:
            with contextlib.suppress(ServerError):  # a private room, or one gone meanwhile
                if any(u.casefold() == wanted for u in await client.who(room["name"])):
                    return True
    except (ConnectionResetError, TimeoutError):
        pass
    return False


async def snapshot(client: Client, user: str | None, timeout: float = 30.0) -> Canvas:
    """Watch a share until a complete picture has arrived; return it. TimeoutError if no
    share (of ``user``) is listed within ``timeout``; :class:`NoPicture` if one is but no
    complete picture came; :class:`ShareGone` if it ended or the server refused it."""
    share = await find_share(client, user, timeout)
    return await snapshot_of(client, share, timeout)


async def _next_part(screen: ScreenChannel, share: dict[str, Any], canvas: Canvas) -> None:
    msg = await screen.next_frame()
    if msg.type == "unshared" and msg["share"] == share["id"]:
        raise ShareGone(f"{share['user']} stopped sharing")
    if msg.type == "frame" and msg["share"] == share["id"]:
        try:
            canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        except DecodeError as exc:  # the sharer sent something bad: skip it
            log.warning("skipped a frame of %s: %s", share["user"], exc)


class NoPicture(TimeoutError):
    """A share was found, but no complete picture of it arrived in time."""


class ShareGone(ConnectionResetError):
    """The share ended, or the server would not let us watch it."""


async def snapshot_of(client: Client, share: dict[str, Any], timeout: float) -> Canvas:
    """A complete picture of ``share`` (see :func:`snapshot`)."""
    screen = await client.open_screen()
    try:
        try:
            await screen.watch(share["id"])
        except ServerError as exc:  # gone meanwhile, or not for us
            raise ShareGone(f"{share['user']} has no share you can watch ({exc.message})"
                            ) from None
        canvas = Canvas(share["w"], share["h"])
        try:
            async with asyncio.timeout(timeout):
                while not canvas.complete:
                    await _next_part(screen, share, canvas)
        except TimeoutError:
            raise NoPicture(f"No complete picture from {share['user']} within {timeout:g} s "
                            "(they are sharing, but the picture did not arrive)") from None
        return canvas
    finally:
        await screen.close()
