"""Transfers take the event loop's idle capacity, never chat's or the screen's.

While uploads run, a timer looks every PROBE seconds at how late the loop ran it. Later than
LAG_MAX means the loop (or the machine under it) is busy with other work: the transfer links
are then not read (their TLS decryption and framing wait, the bytes stay in the kernel's
socket buffer and TCP slows the sender down) and downloads send nothing, for PAUSE seconds,
then the gate looks again. So a chat message waits behind transfer work for about LAG_MAX
at most, and a transfer still moves at least PROBE / (PROBE + PAUSE) of the time.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

PROBE = 0.005  # s between looks while the gate is open
LAG_MAX = 0.002  # s late: the loop is busy, transfers wait
PAUSE = 0.01  # s the transfers wait before the next look


class Holdable(Protocol):
    def hold_transfer(self) -> None: ...

    def release_transfer(self) -> None: ...


class TransferGate:
    def __init__(self, probe: float = PROBE, lag_max: float = LAG_MAX,
                 pause: float = PAUSE) -> None:
        self.probe, self.lag_max, self.pause = probe, lag_max, pause
        self.peers: set[Holdable] = set()
        self.opened = asyncio.Event()
        self.opened.set()
        self.closes = 0  # how many times the gate closed (for tests and stats)
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.downloads = 0  # running downloads

    @property
    def is_open(self) -> bool:
        return self.opened.is_set()

    def add(self, peer: Holdable) -> None:
        """A link carrying an upload: read only while the gate is open."""
        if peer in self.peers:
            return
        self.peers.add(peer)
        if not self.is_open:
            peer.hold_transfer()
        self._watch()

    def discard(self, peer: Holdable) -> None:
        if peer in self.peers:
            self.peers.discard(peer)
            if not self.is_open:
                peer.release_transfer()

    def download_started(self) -> None:
        """A download runs (it sends only while :attr:`opened` is set): keep looking."""
        self.downloads += 1
        self._watch()

    def download_ended(self) -> None:
        self.downloads -= 1

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._open()

    def _watch(self) -> None:
        if self._timer is None:
            self._schedule(self.probe)

    def _schedule(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + delay
        self._timer = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        lag = asyncio.get_running_loop().time() - self._due
        if lag > self.lag_max and (self.peers or self.downloads):
            self._close()
            self._schedule(self.pause)
            return
        self._open()
        if self.peers or self.downloads:
            self._schedule(self.probe)

    def _close(self) -> None:
        if self.is_open:
            self.closes += 1
            self.opened.clear()
            for peer in self.peers:
                peer.hold_transfer()

    def _open(self) -> None:
        if not self.is_open:
            self.opened.set()
            for peer in self.peers:
                peer.release_transfer()
