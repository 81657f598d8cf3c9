"""Per-viewer quality layers (simulcast): what each viewer's link carries, and which layer
of a share it gets.

A sharer that can (``share`` with ``layers: 2``) sends, when the relay asks (``low_layer``),
its lossy regions (``jpeg``, ``h264``) a second time at a lower quality: the **low layer**.
Everything else (lossless pieces, copies) is common to both layers. The relay never decodes;
it only has to decide, per viewer, which layer to send. This module is that decision, pure
(time is a parameter), so that it is tested on its own.

What the relay sees of a viewer's link is newest wins at work. A frame that adds pieces to
the viewer's layer is an **arrival**; a catch-up frame sent to it is a **delivery**. A viewer
whose link carries the layer gets every arrival at once (deliveries / arrivals = 1); a viewer
whose link does not is paused (its connection past the high water mark) when pieces arrive,
and gets several of them merged into one frame later: the ratio falls. While the connection
is paused nothing is written to it, so how fast it drains from the high to the low water mark
is what the link carries (``drained``, a **capacity** sample).

* Down: on the full layer, fewer than ``DOWN_RATIO`` of the arrivals of the last ``WINDOW``
  delivered (at least ``MIN_ARRIVALS`` of them) moves the viewer to the low layer.
* Up: on the low layer and calm (``UP_RATIO`` of arrivals delivered, or too few arrivals to
  judge) it moves back up at once when the full layer's byte rate is within ``HEADROOM`` of
  the link's measured capacity (the motion stopped, say), unless a move up failed lately,
  else after ``hold`` seconds of calm: a probe. A move up that ends down again within
  ``PROBE_FAIL`` doubles ``hold`` (up to ``HOLD_MAX``); a stay of that long on the full layer
  resets it.
* The relay stops the low layer when no viewer has been on it for ``LINGER`` seconds.
"""

from __future__ import annotations

from collections import deque

FULL, LOW = 0, 1
WINDOW = 2.0  # seconds of arrivals and deliveries looked at
MIN_ARRIVALS = 10  # ... at least this many before judging a link
DOWN_RATIO = 0.6  # full layer: fewer arrivals delivered than this, down
UP_RATIO = 0.9  # low layer: at least this many delivered counts as calm
HOLD = 5.0  # seconds of calm on the low layer before probing the full layer
HOLD_MAX = 60.0
PROBE_FAIL = 10.0  # down again within this after a probe: the probe failed
HEADROOM = 0.8  # the full layer's rate within this share of the capacity: up at once
CAPACITY_WEIGHT = 0.5  # weight of a new capacity sample (exponential average)
LINGER = 10.0  # seconds the low layer runs with nobody on it before the relay stops it
LOW_SHARE = 0.6  # the low layer's lossy parts may take this share of the slowest capacity
MIN_RATE = 32_000  # bytes/s asked of the low layer, at least ...
MAX_RATE = 1_200_000  # ... and at most
RATE_STEP = 0.3  # the rate asked of the sharer changes only by more than this share
RATE_INTERVAL = 2.0  # ... and at most this often
BACKLOG_SECONDS = 0.25  # a viewer's connection holds about this much of its link's capacity
MIN_BACKLOG = 64 << 10  # ... at least


class Rate:
    """Bytes per second over the last ``WINDOW`` seconds (e.g. what a share's full layer
    generates)."""

    def __init__(self) -> None:
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, now: float, nbytes: int) -> None:
        self._events.append((now, nbytes))
        self._total += nbytes
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - WINDOW:
            self._total -= self._events.popleft()[1]

    def per_second(self, now: float) -> float:
        self._trim(now)
        return self._total / WINDOW


class LinkMeter:
    """One viewer of one share: its layer, and what its link carries."""

    def __init__(self, now: float) -> None:
        self.layer = FULL
        self.capacity: float | None = None  # bytes/s drained while it was the bottleneck
        self.hold = HOLD
        self.probed_at: float | None = None  # when it last went up on a probe
        self.switches = 0
        self._arrived: deque[float] = deque()
        self._delivered: deque[float] = deque()
        self._calm_since = now

    def arrived(self, now: float) -> None:
        self._arrived.append(now)
        self._trim(now)

    def delivered(self, now: float) -> None:
        self._delivered.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        for q in (self._arrived, self._delivered):
            while q and q[0] < now - WINDOW:
                q.popleft()

    def drained(self, nbytes: int, seconds: float) -> None:
        """The connection drained ``nbytes`` in ``seconds`` while nothing was written to it."""
        if seconds <= 0 or nbytes <= 0:
            return
        sample = nbytes / seconds
        self.capacity = sample if self.capacity is None else (
            CAPACITY_WEIGHT * sample + (1 - CAPACITY_WEIGHT) * self.capacity)

    def ratio(self, now: float) -> float | None:
        """Deliveries / arrivals over the last ``WINDOW`` (None: too few arrivals)."""
        self._trim(now)
        if len(self._arrived) < MIN_ARRIVALS:
            return None
        return min(1.0, len(self._delivered) / len(self._arrived))

    def decide(self, now: float, full_rate: float | None, can_low: bool) -> int:
        """The layer this viewer should be on now (``can_low``: the sharer can send a low
        layer; ``full_rate``: bytes/s the full layer generates, if known). Switching is the
        caller's business; it calls :meth:`switched` when it does."""
        ratio = self.ratio(now)
        if self.layer == FULL:
            if self.probed_at is not None and now - self.probed_at >= PROBE_FAIL:
                self.hold, self.probed_at = HOLD, None  # the probe held: the link carries it
            if can_low and ratio is not None and ratio < DOWN_RATIO:
                return LOW
            return FULL
        if not can_low:
            return FULL
        if ratio is not None and ratio < UP_RATIO:
            self._calm_since = now  # it hardly carries the low layer: no probing
            return LOW
        calm = now - self._calm_since
        if (full_rate is not None and self.capacity is not None and calm >= WINDOW / 2
                and self.hold == HOLD and full_rate <= HEADROOM * self.capacity):
            return FULL
        if calm >= self.hold:
            return FULL
        return LOW

    def switched(self, now: float, layer: int) -> None:
        """The viewer now gets ``layer``: its arrivals are counted afresh."""
        if layer == LOW and self.probed_at is not None and now - self.probed_at < PROBE_FAIL:
            self.hold = min(2 * self.hold, HOLD_MAX)  # the probe failed: wait longer
        self.probed_at = now if layer == FULL and self.layer == LOW else None
        self.layer = layer
        self.switches += 1
        self._arrived.clear()
        self._delivered.clear()
        self._calm_since = now


def backlog(capacity: float) -> int:
    """How many bytes a viewer's connection may hold (our buffer, the kernel's) for a link
    that carries ``capacity`` bytes/s: a quarter of a second, at least ``MIN_BACKLOG`` (the
    peer caps it at its usual limit). Held data is stale data on a slow link: 768 KiB at
    300 kB/s was 2.6 s behind before anything newer could go."""
    return max(MIN_BACKLOG, int(capacity * BACKLOG_SECONDS))


def low_rate(capacities: list[float], current: int | None) -> int:
    """The byte rate to ask of the sharer's low layer for viewers whose links carry
    ``capacities`` (bytes/s; the slowest decides), or ``current`` when the change would be
    small."""
    want = int(min(capacities) * LOW_SHARE) if capacities else MAX_RATE // 4
    want = max(MIN_RATE, min(MAX_RATE, want))
    if current is not None and abs(want - current) <= RATE_STEP * current:
        return current
    return want
