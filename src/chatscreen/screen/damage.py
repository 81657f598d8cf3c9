"""Which parts of the screen changed, and when, as the X server tells (the DAMAGE extension).

:class:`DamageListener` opens its own X connection (python-xlib) to ``$DISPLAY`` (or the
display it is given), asks for ``DamageReportRawRectangles`` on the root window (which covers
every window on it), then reads the events off the socket itself (:class:`_Wire`: 32 bytes
an event, no python-xlib objects) and, on its own thread, collects the damaged rectangles into a
thread-safe accumulator. Once a burst of drawing is over (no new damage for ``SETTLE``
seconds, or ``MAX_SETTLE`` after its first rectangle), it sets
:attr:`~DamageListener.event` and calls the ``on_damage`` callback (from the listener
thread: an asyncio user passes ``lambda: loop.call_soon_threadsafe(ev.set)``): a scroll is a
copy then a redraw of the exposed lines (here 0.1-0.3 ms apart), and a capture in between
would get it half drawn, the rest waiting for the next capture. The listener waits in
``select`` with that timeout, to the tenth of a millisecond (an asyncio sleep has 1 ms
steps). With ``threaded=False`` there is no such thread: the caller's thread reads the events
(:meth:`~DamageListener.pump`), which is how the sharer's capture thread waits for damage.

The mouse pointer is not drawn into the framebuffer (mss draws it into captures from XFixes),
so DAMAGE does not see it move: while ``track_pointer`` is on, the listener also asks the X
server for the pointer position (a round trip, no capture), counts its moves in
:attr:`~DamageListener.pointer_moves` and (``pointer_rects``: for captures with the pointer
drawn in) reports a :data:`POINTER_BOX` square around its old and new positions. Where the X
server has XInput 2.2 it asks only when a raw motion event says the pointer moved (at most
``pointer_hz`` times a second), and every ``1 / STILL_HZ`` seconds besides (a warp makes no
motion event): a still pointer costs no round trip at 30 Hz. Where it has XFixes, a change
of the pointer's picture (a busy cursor) counts as a move too
(:attr:`~DamageListener.cursor_events`), so that the sharer need not ask for the picture
every so often.

Where DAMAGE cannot be had (python-xlib missing, no X server, no DAMAGE extension: Wayland,
a VNC or RDP session without it), :meth:`~DamageListener.start` returns False and
:attr:`~DamageListener.unavailable` says why; the caller polls instead. ``enabled=False``
forces that (tests, or ``--no-damage``).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from chatscreen.screen.tiles import TILE, Box, Mask, grid

MAX_RECTS = 1024  # above this many pending rectangles the accumulator keeps their bounding box
POINTER_BOX = 128  # side of the square reported around the pointer when it moves
POINTER_HZ = 30.0
STILL_HZ = 1.0  # with XInput motion events: how often the position is asked for anyway
SETTLE = 0.0004  # seconds without new damage before telling of it (see the module doc)
MAX_SETTLE = 0.006  # ... but no later than this after the first of it

GENERIC_EVENT = 35  # the core protocol's GenericEvent (XInput 2's events come as one)
RAW_MOTION = 17  # XInput 2's XI_RawMotion
X_ERROR, X_REPLY = 0, 1  # the first byte of what the X server sends: an error, a reply, else
#                          an event (32 bytes; GenericEvent and replies: more, by their length)
QUERY_POINTER = 38  # the core protocol's QueryPointer request
REPLY_TIMEOUT = 5.0  # seconds to wait for the X server's reply to QueryPointer

Rect = tuple[int, int, int, int]  # x, y, w, h in root-window pixels


class DamageAccumulator:
    """Damaged rectangles since the last :meth:`take`; thread-safe."""

    def __init__(self, max_rects: int = MAX_RECTS) -> None:
        self.max_rects = max_rects
        self._lock = threading.Lock()
        self._rects: list[Rect] = []
        self.total = 0  # rectangles added since creation (for stats and tests)

    def add(self, rects: Iterable[Rect]) -> bool:
        """Add rectangles; True when the accumulator was empty before (time to wake up)."""
        new = [r for r in rects if r[2] > 0 and r[3] > 0]
        if not new:
            return False
        with self._lock:
            was_empty = not self._rects
            self._rects.extend(new)
            self.total += len(new)
            if len(self._rects) > self.max_rects:
                self._rects = [bounding_box(self._rects)]
        return was_empty

    def take(self) -> list[Rect]:
        """The rectangles added since the last call (and forget them)."""
        with self._lock:
            out, self._rects = self._rects, []
        return out

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._rects)


def bounding_box(rects: Iterable[Rect]) -> Rect:
    rs = list(rects)
    x0 = min(r[0] for r in rs)
    y0 = min(r[1] for r in rs)
    x1 = max(r[0] + r[2] for r in rs)
    y1 = max(r[1] + r[3] for r in rs)
    return x0, y0, x1 - x0, y1 - y0


def damage_mask(rects: Iterable[Rect], w: int, h: int, *, left: int = 0, top: int = 0,
                tile: int = TILE) -> Mask:
    """The tiles of a w x h picture (whose top left is at root (left, top)) that any of
    ``rects`` (root coordinates) touches."""
    rows, cols = grid(w, h, tile)
    mask: Mask = np.zeros((rows, cols), np.bool_)
    for x, y, rw, rh in rects:
        x0, y0 = max(x - left, 0), max(y - top, 0)
        x1, y1 = min(x - left + rw, w), min(y - top + rh, h)
        if x1 <= x0 or y1 <= y0:
            continue
        mask[y0 // tile : -(-y1 // tile), x0 // tile : -(-x1 // tile)] = True
    return mask


def box_rect(box: Box) -> Rect:
    return box.x, box.y, box.w, box.h


class DamageListener:
    """Reports damaged regions of the root window of an X display; see the module doc."""

    def __init__(self, display: str | None = None, *,
                 on_damage: Callable[[], None] | None = None, enabled: bool = True,
                 track_pointer: bool = True, pointer_hz: float = POINTER_HZ,
                 settle: float = SETTLE, max_settle: float = MAX_SETTLE,
                 pointer_rects: bool = True, threaded: bool = True) -> None:
        self.display_name = display if display is not None else os.environ.get("DISPLAY")
        self.on_damage = on_damage
        self.enabled = enabled
        self.track_pointer = track_pointer
        self.pointer_period = 1.0 / pointer_hz
        self.pointer_rects = pointer_rects
        self.threaded = threaded  # False: the caller reads the events (pump), no thread
        self._broken = False
        self._next_pointer = 0.0  # when the pointer's position is asked for next
        self._burst: float | None = None  # when the damage not yet told of began
        self._last = 0.0  # when the latest damage came
        self.settle, self.max_settle = settle, max_settle
        self.accumulator = DamageAccumulator()
        self.event = threading.Event()  # set when damage is pending, cleared by take()
        self.unavailable: str | None = None  # why DAMAGE is not used, once start() said so
        self._disp: Any = None
        self._wire: _Wire | None = None  # the connection once set up (see _Wire)
        self._root = 0  # the root window's id
        self._damage: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._pointer: tuple[int, int] | None = None
        self._last_poll = 0.0
        self.pointer_moves = 0  # times the pointer was seen to move or change its picture
        #                         (the sharer asks XFixes for the picture then, not every
        #                         capture)
        self.motion_events = False  # XInput 2.2 raw motion tells when the pointer moves
        self.cursor_events = False  # XFixes tells when the pointer's picture changes
        self.pointer_polls = 0  # pointer position round trips (for tests and stats)
        self._notify_code = -1
        self._motion_opcode = -1
        self._cursor_code = -1

    @property
    def active(self) -> bool:
        if not self.threaded:
            return self._disp is not None and not self._broken
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Connect and start the listener thread; False (and :attr:`unavailable` set) when
        DAMAGE cannot be used, in which case the caller should poll."""
        if self._thread is not None:
            return self.active
        if not self.enabled:
            self.unavailable = "disabled"
            return False
        if not self.display_name:
            self.unavailable = "no X display (DISPLAY is not set; Wayland?)"
            return False
        try:
            from Xlib import display as xdisplay
            from Xlib.ext import damage
        except ImportError as exc:
            self.unavailable = f"python-xlib is not installed ({exc})"
            return False
        try:
            disp = xdisplay.Display(self.display_name)
        except Exception as exc:  # Xlib raises DisplayError, ConnectionClosedError, OSError
            self.unavailable = f"cannot connect to {self.display_name}: {exc}"
            return False
        try:
            if not disp.has_extension(damage.extname):
                raise RuntimeError(f"the X server of {self.display_name} has no DAMAGE "
                                   "extension")
            disp.damage_query_version()
            root = disp.screen().root
            self._damage = root.damage_create(damage.DamageReportRawRectangles)
            if self.track_pointer:
                p = root.query_pointer()
                self._pointer = (int(p.root_x), int(p.root_y))
                self._select_pointer_events(disp, root)
            disp.sync()
        except Exception as exc:
            with contextlib.suppress(Exception):
                disp.close()
            self.unavailable = f"DAMAGE unavailable: {exc}"
            return False
        self._disp = disp
        self._root = int(root.id)
        self._notify_code = int(disp.extension_event.DamageNotify)
        self._wire = _Wire(disp.display)
        self._take_queued(disp)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._next_pointer = time.monotonic()
        if self.threaded:
            self._thread = threading.Thread(target=self._run, name="damage", daemon=True)
            self._thread.start()
        return True

    def pump(self, timeout: float | None) -> str:
        """Without a thread of its own (``threaded=False``): read the X server's events on
        the caller's thread until a burst of damage is over ("damage": :meth:`take` it, the
        callback is not called), ``timeout`` seconds pass ("timeout") or :meth:`poke` is
        called ("poked"). One thread then waits for damage and captures: no hand-off
        between two (each wake-up of a thread costs ~0.1 ms of CPU on a small VM)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.active:
            return "damage"  # broken: the caller sees it (active) and polls
        try:
            while True:
                told = self._cycle(deadline, notify=False)
                if told is not None:
                    return told
        except Exception as exc:  # the X connection broke: say so, wake the user to poll
            self.unavailable = f"DAMAGE listener stopped: {exc}"
            self._broken = True
            return "damage"

    def poke(self) -> None:
        """Make :meth:`pump` return "poked" now (or at its next call); any thread."""
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"p")

    def _select_pointer_events(self, disp: Any, root: Any) -> None:
        """Ask for XInput 2.2 raw motion and XFixes cursor notify events where the X server
        has them (each is optional: without it, the pointer is polled as before)."""
        try:
            from Xlib.ext import xfixes, xinput

            if disp.has_extension(xinput.extname):
                opcode = disp.display.get_extension_major(xinput.extname)
                # 2.2: raw events reach us during other clients' grabs too (a drag)
                v = xinput.XIQueryVersion(display=disp.display, opcode=opcode,
                                          major_version=2, minor_version=2)
                if (v.major_version, v.minor_version) >= (2, 2):
                    root.xinput_select_events([(xinput.AllMasterDevices,
                                                xinput.RawMotionMask)])
                    disp.sync()
                    self._motion_opcode = int(opcode)
                    self.motion_events = True
            if disp.has_extension(xfixes.extname):
                disp.xfixes_query_version()
                disp.xfixes_select_cursor_input(root, xfixes.XFixesDisplayCursorNotifyMask)
                disp.sync()
                self._cursor_code = int(disp.extension_event.DisplayCursorNotify[0])
                self.cursor_events = True
        except Exception:  # an X error: poll the pointer as without these extensions
            return

    def take(self) -> list[Rect]:
        """Damaged rectangles (root coordinates) since the last call; clears :attr:`event`
        first, so damage arriving during or after the call sets it again."""
        self.event.clear()
        return self.accumulator.take()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait (on the event, up to ``timeout`` seconds) until damage is pending."""
        return self.event.wait(timeout)

    def close(self) -> None:
        """Stop the thread and close the X connection; idempotent."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if thread is not None:
            thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        disp, self._disp = self._disp, None
        self._wire = None
        if disp is not None:
            # python-xlib no longer knows where the byte stream is (see _Wire): no request
            # of its own, no flush; closing the connection ends the Damage object with it
            with contextlib.suppress(Exception):
                disp.display.close_internal("client")

    def __enter__(self) -> DamageListener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the listener thread -------------------------------------------------------------

    def _notify(self) -> None:
        self.event.set()
        if self.on_damage is not None:
            self.on_damage()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._cycle(None, notify=True) == "poked":
                    break
        except Exception as exc:  # the X connection broke: say so, wake the user to poll
            self.unavailable = f"DAMAGE listener stopped: {exc}"
            self._notify()

    def _cycle(self, deadline: float | None, *, notify: bool) -> str | None:
        """Read the pending events, ask for the pointer when due, tell of a burst of damage
        that is over ("damage"; ``notify``: by the event and callback), else wait in select
        for more, up to ``deadline`` ("timeout") or the wake pipe ("poked"); None: go on."""
        wire = self._wire
        assert wire is not None
        moves = self.pointer_moves
        rects, moved = self._parse(wire.read())
        now = time.monotonic()
        if moved:  # ask soon, but not more often than pointer_hz
            self._next_pointer = min(self._next_pointer, self._last_poll + self.pointer_period)
        if self.track_pointer and now >= self._next_pointer:
            self._next_pointer = now + (self.pointer_period if not self.motion_events
                                        else 1.0 / STILL_HZ)
            self._last_poll = now
            rects += self._pointer_moved(wire)
        if rects or self.pointer_moves != moves:  # wake the sharer for either
            self.accumulator.add(rects)
            self._last = now
            if self._burst is None:
                self._burst = now
        if wire.queued:
            # events read while waiting for the pointer's reply sit in the wire's queue, not
            # in the socket: select() would not see them until the next event or pointer
            # poll (up to 1/pointer_hz later: a change now and then merged with the next one)
            return None
        now = time.monotonic()
        burst = self._burst
        if burst is not None and (now - self._last >= self.settle
                                  or now - burst >= self.max_settle):
            self._burst = None  # the drawing is over (or has gone on long enough)
            if notify:
                self._notify()
            return "damage"
        timeout = max(self._next_pointer - now, 0.0) if self.track_pointer else None
        if burst is not None:
            due = max(min(self._last + self.settle, burst + self.max_settle) - now, 0.0)
            timeout = due if timeout is None else min(timeout, due)
        if deadline is not None:
            timeout = max(deadline - now, 0.0) if timeout is None else \
                min(timeout, max(deadline - now, 0.0))
        readable, _, _ = select.select([wire.fileno(), self._wake_r], [], [], timeout)
        if self._wake_r in readable:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)
            return "poked"
        if deadline is not None and not readable and time.monotonic() >= deadline \
                and self._burst is None:
            return "timeout"
        return None

    def _parse(self, packets: list[bytes]) -> tuple[list[Rect], bool]:
        """The damaged rectangles in ``packets`` (what the X server sent), and whether one
        was a raw motion event; counts a new picture of the pointer as a move."""
        rects: list[Rect] = []
        moved = False
        for p in packets:
            code = p[0] & 0x7F
            if code == self._notify_code:  # DamageNotify: its area at byte 16
                rects.append(_RECT.unpack_from(p, 16))
            elif code == self._cursor_code:  # a new picture counts as a move
                self.pointer_moves += 1
            elif (code == GENERIC_EVENT and p[1] == self._motion_opcode
                  and _CARD16.unpack_from(p, 8)[0] == RAW_MOTION):
                moved = True
        return rects, moved

    def _take_queued(self, disp: Any) -> None:
        """The events python-xlib read while setting up (the wire reads the rest)."""
        rects: list[Rect] = []
        for ev in disp.display.event_queue or []:
            code = ev.type & 0x7F
            if code == self._notify_code:
                a = ev.area
                rects.append((int(a.x), int(a.y), int(a.width), int(a.height)))
            elif code == self._cursor_code:  # (a raw motion: the pointer is asked for at
                self.pointer_moves += 1  # the first cycle anyway)
        disp.display.event_queue[:] = []
        if rects:
            self.accumulator.add(rects)
            self._last = self._burst = time.monotonic()

    def _pointer_moved(self, wire: _Wire) -> list[Rect]:
        pos = wire.query_pointer(self._root)
        self.pointer_polls += 1
        old, self._pointer = self._pointer, pos
        if old is None or old == pos:
            return []
        self.pointer_moves += 1
        if not self.pointer_rects:
            return []
        half = POINTER_BOX // 2
        return [(x - half, y - half, POINTER_BOX, POINTER_BOX) for x, y in (old, pos)]


_RECT = struct.Struct("=hhHH")  # x, y, width, height (the X server's byte order: ours)
_CARD16 = struct.Struct("=H")
_CARD32 = struct.Struct("=I")
_INT16X2 = struct.Struct("=hh")


class _Wire:
    """The X connection's bytes, read and written here once python-xlib has set it up.

    python-xlib makes an object of every event, and each look at the connection (its
    ``pending_events``) takes locks and a ``select``: ~0.1 ms a wake-up for the two damaged
    rectangles of a typed character, ~0.4 ms an update. Here an event is its 32 bytes and
    a damaged rectangle one ``struct`` unpack. After this takes over, python-xlib must not
    send or read anything on the connection (its sequence numbers and buffers are stale): the
    listener only reads events and asks for the pointer's position (QueryPointer), and
    closes the connection without a word."""

    def __init__(self, display: Any) -> None:
        self._sock: socket.socket = display.socket
        self._buf = bytes(display.data_recv or b"")  # what python-xlib read but not parsed
        display.data_recv = b""
        self.queued: list[bytes] = []  # events read while waiting for a reply

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[bytes]:
        """The complete packets the X server has sent so far (events, errors), without
        waiting; the queued ones first."""
        out, self.queued = self.queued, []
        self._receive()
        return out + self._split()

    def _receive(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            if not chunk:
                raise ConnectionError("the X server closed the connection")
            self._buf += chunk
            if len(chunk) < 65536:
                return

    def _split(self) -> list[bytes]:
        buf, out, i, n = self._buf, [], 0, len(self._buf)
        while n - i >= 32:
            size = 32
            if buf[i] & 0x7F in (X_REPLY, GENERIC_EVENT):
                size += 4 * _CARD32.unpack_from(buf, i + 4)[0]
            if n - i < size:
                break
            out.append(buf[i : i + size])
            i += size
        self._buf = buf[i:]
        return out

    def query_pointer(self, window: int) -> tuple[int, int]:
        """The pointer's position on ``window``'s screen (root coordinates): a round trip;
        the events that come before the reply wait in :attr:`queued`."""
        self._sock.sendall(struct.pack("=BxHI", QUERY_POINTER, 2, window))
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            self._receive()
            for k, p in enumerate(packets := self._split()):
                if p[0] == X_REPLY:
                    self.queued += packets[:k]
                    self._buf = b"".join(packets[k + 1 :]) + self._buf
                    x, y = _INT16X2.unpack_from(p, 16)
                    return x, y
                if p[0] == X_ERROR:
                    raise ConnectionError(f"the X server refused QueryPointer (error {p[1]})")
            self.queued += packets
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from the X server to QueryPointer")
            select.select([self._sock], [], [], left)
