"""The thin asyncio adapter between a TCP connection and the protocol core.

A :class:`Peer` feeds received bytes to a :class:`~chatscreen.protocol.Connection`, hands the
validated messages to its service (chat or screen) and writes what the service sends. Writes
never block. Screen peers write straight to the transport, a frame larger than WRITE_CHUNK in
pieces while the transport takes them (the rest waits as a reference to the relay's encoded
frame, not as a private, with TLS encrypted, copy); when its buffer passes the high water mark
``writable`` goes false and the relay keeps only the newest picture for them.

Chat peers (``buffers`` given) write the first frame due in a turn of the loop straight to
the transport, so that fan-out reaches the first recipient at once and costs one call per
recipient; any more frames due to them in that turn are queued and written at the end of the
turn in one write, for all chat peers in one callback (:class:`SendBuffers`). A chat peer
whose transport is paused gets nothing more written into
the transport: its backlog stays a list of references to the frames, which fan-out encoded
once and shares between all recipients, so a slow reader costs neither a private copy (with
TLS, an encrypted one that OpenSSL's memory BIO would keep the capacity of) nor encryption
work until it reads again. It is cut off as too slow past ``slow_limit`` bytes behind, or
when the total over all chat peers passes the server's budget and it is among the largest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from chatscreen.errors import ErrorCode, RemoteProtocolError, RequestError
from chatscreen.protocol import Connection, Limits, Message, Role, State
from chatscreen.server.limits import RATED, REFUSALS_BURST, REFUSALS_RATE, TokenBucket

if TYPE_CHECKING:
    from chatscreen.server.session import Session

log = logging.getLogger("chatscreen.server")

CLOSE_GRACE = 2.0  # seconds a closing transport may take to flush before it is aborted
WRITE_CHUNK = 16 << 10  # a backlog is handed to the transport in pieces of at most this size
# With TLS the encrypted bytes wait in one more buffer that the app transport does not report
# (uvloop's and asyncio's TCP transport under the TLS layer, 64 KiB high water): whenever the
# TLS transport reports anything buffered, that one is full, and the budget counts it too.
TLS_HIDDEN = 64 << 10
# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, a u64 at this offset (Linux >= 4.1)
TCPI_BYTES_ACKED = 120
TCP_INFO_LEN = TCPI_BYTES_ACKED + 8
BUDGET_RETRY = 0.25  # s: over budget with no one to cut, look again no sooner than this
# s: over budget, only a peer behind this long is cut: paused all along, or, while senders
# are held back (SendBuffers.hold_back), without catching up once, however much it took. One
# handed a reply larger than the budget (a history page, or every client's paced catch-up
# after a restart) catches up at every frame: it is behind for a moment, not falling behind.
BUDGET_GRACE = 0.5
# s: while over budget (no chat peer is read, see SendBuffers), how often the total is looked at
HOLD_POLL = 0.01
# why a peer is not read: any of these holds it (bits of Peer._read_holds)
HOLD_RATE, HOLD_HELLO, HOLD_QUEUE, HOLD_BUDGET, HOLD_TURN, HOLD_TRANSFER = 1, 2, 4, 8, 16, 32
TURN_SLICE = 0.002  # s of a loop turn one connection's requests take before the rest wait
#                    for the next turn (a burst of heavy frames does not hold the loop)


# Why a peer is closed at once, not gracefully (see Peer.fail).
ABORT_AT_ONCE = frozenset({ErrorCode.TOO_SLOW, ErrorCode.RATE_LIMITED,
                           ErrorCode.SHARE_OVER_BUDGET, ErrorCode.NEED_KEY_IGNORED})


@dataclass
class Rates:
    """A peer's rate limits: messages and bytes it may send (``address``: bytes that all the
    connections from its address may send together)."""

    messages: TokenBucket
    bytes: TokenBucket
    flood_timeout: float
    flood_since: float | None = None  # when it was first slowed down, this streak
    rated: frozenset[str] = RATED  # the requests that count as messages
    cost: Callable[[Message], int] | None = None  # how many each takes (None: one)
    address: TokenBucket | None = None
    # told (a non-fatal rate_limited) when first slowed down; a sharer is not: a client may
    # take that error for the answer to its next request, and TCP tells it well enough
    warn: bool = True

    def calm(self, now: float) -> bool:
        """Has it slowed down (every bucket it draws from at least half full)?"""
        return (self.messages.fuller_than(0.5, now) and self.bytes.fuller_than(0.5, now)
                and (self.address is None or self.address.fuller_than(0.5, now)))


class Service(Protocol):
    def handle(self, peer: Peer, msg: Message) -> None:
        """Handle one validated message; may raise RemoteProtocolError (fatal) or
        RequestError (this request is refused, the connection stays)."""

    def on_writable(self, peer: Peer) -> None: ...

    def on_lost(self, peer: Peer) -> None: ...


class PeerRegistry(Protocol):
    def peer_opened(self, peer: Peer) -> None: ...

    def peer_ready(self, peer: Peer) -> None: ...

    def peer_closed(self, peer: Peer) -> None: ...


class SendBuffers:
    """The chat peers' send buffers: one callback at the end of a loop turn in which any of
    them was written to (it flushes what was queued behind a first frame), and a global
    budget.

    ``total`` is the sum of what every chat peer has queued or buffered in its transport,
    kept up to date on every write (O(1)); a transport's own drain is seen at the peer's next
    write or ``resume_writing`` and by :meth:`recount` (housekeeping, every second). When the
    total passes ``budget``, the chat peers furthest behind (at least ``min_cut`` bytes: past
    the high water mark, and paused for at least BUDGET_GRACE: not reading) are cut off as too
    slow, largest first, until the total is back under 7/8 of the budget.

    And over the budget, no chat peer's next request is handled (nor its connection read)
    until the total is back under 3/4 of it: back-pressure on whoever sends, so that a room
    going faster than its readers read cannot grow the buffers past the budget (by more than
    the one request being handled when it was passed). That wait is for readers that are
    behind for a moment (a reply, a burst), not for those falling behind: while it lasts, the
    peers that have been behind for BUDGET_GRACE without catching up once
    (``Peer.behind_since``), however much they took meanwhile, are cut off, largest first,
    until the total is under 3/4 of the budget. So readers that always take a little, never
    enough, cannot pace the room to them, in one long hold or in many short ones: a hold
    lasts about BUDGET_GRACE at most, unless what fills the buffers is taken as fast as it
    comes (paced history catch-ups, which catch up at every frame).
    """

    def __init__(self, budget: int | None, min_cut: int) -> None:
        self.total = 0
        self.budget = budget
        self.min_cut = min_cut
        self.peers: set[Peer] = set()
        self.cuts = 0  # peers cut off because of the budget
        self.peak = 0  # the largest total so far
        # bytes the fan-out of messages taken but not yet delivered will add (ChatService)
        self.upcoming = 0
        self.limit = budget if budget is not None else sys.maxsize  # past it: hold
        self.holding = False  # over budget: requests wait in _held_back
        self._held_back: list[tuple[Peer, Iterator[Message], Message]] = []
        self._poller: asyncio.TimerHandle | None = None  # the next _poll, while holding
        # turns that wrote to chat peers: a peer writes through once per turn (Peer.send_bytes)
        self.turn = 0
        self.end_scheduled = False
        self._due: list[Peer] = []
        self._retry_at = 0.0

    def due(self, peer: Peer) -> None:
        self.end_turn_soon()
        self._due.append(peer)

    def end_turn_soon(self) -> None:
        if not self.end_scheduled:
            self.end_scheduled = True
            asyncio.get_running_loop().call_soon(self._end_turn)

    def _end_turn(self) -> None:
        self.end_scheduled = False
        self.turn += 1
        due, self._due = self._due, []
        for peer in due:
            peer._flush_out()
        if self.holding:
            if self.total + self.upcoming <= self._resume_at():
                self._let_go()
        elif self.total > self.limit:
            self.enforce()

    def _resume_at(self) -> int:
        return self.limit - self.limit // 4

    def hold_back(self, peer: Peer, messages: Iterator[Message], msg: Message) -> None:
        """Over the budget: ``msg`` and what follows it wait, and ``peer`` is not read, until
        the total is back under 3/4 of the budget."""
        peer._hold_reading(HOLD_BUDGET)
        self._held_back.append((peer, messages, msg))
        if not self.holding:
            self.holding = True
            if self._poller is None:
                self._poller = asyncio.get_running_loop().call_later(HOLD_POLL, self._poll)

    def _poll(self) -> None:
        self._poller = None
        if not self.holding:
            return
        resume = self._resume_at()
        if self.recount() + self.upcoming > resume:
            self._cut(asyncio.get_running_loop().time(), resume - self.upcoming)
        if self.total + self.upcoming <= resume:
            self._let_go()
        else:
            self._poller = asyncio.get_running_loop().call_later(HOLD_POLL, self._poll)

    def _let_go(self) -> None:
        self.holding = False
        held, self._held_back = self._held_back, []
        for peer, messages, msg in held:  # in the order they came (one may hold them again)
            peer._go_on(messages, msg)

    def recount(self) -> int:
        """Exact figures from every transport; returns the total."""
        for peer in self.peers:
            peer._recount()
        return self.total

    def enforce(self) -> None:
        budget = self.budget
        if budget is None:
            return
        now = asyncio.get_running_loop().time()
        if now < self._retry_at or self.recount() <= budget:
            return
        self._cut(now, budget - budget // 8)

    def _stalled(self, peer: Peer, since: float) -> bool:
        """Behind since ``since`` or earlier: in a hold, without catching up meanwhile;
        else paused all along."""
        if peer.closing or peer.counted < self.min_cut:
            return False
        start = peer.behind_since if self.holding else peer.paused_since
        return start is not None and start <= since

    def _cut(self, now: float, target: int) -> None:
        """Cut the stalled peers, largest first, until the total is under ``target``."""
        budget = self.limit
        since = now - BUDGET_GRACE
        behind = sorted((p for p in self.peers if self._stalled(p, since)),
                        key=lambda p: p.counted, reverse=True)
        for peer in behind:
            if self.total <= target:
                break
            log.info("%r: cut off, %d bytes behind for %.2f s, send buffers %d > budget %d",
                     peer, peer.counted, now - (peer.behind_since or now), self.total, budget)
            self.cuts += 1
            peer.fail(ErrorCode.TOO_SLOW, "too slow: you are not keeping up with what the "
                      "server sends, and its send buffers are full")
        if self.total > budget:  # the rest keep up: nobody else to cut for now
            self._retry_at = now + BUDGET_RETRY


class Peer(asyncio.Protocol):
    # slots: fan-out touches a few attributes of every recipient, and a slotted instance
    # keeps them in the object itself (about 0.5 us less per delivery with 1000 recipients)
    __slots__ = ("__weakref__", "_buffers", "_drain_waiters", "_flush_due", "_held", "_hidden",
                 "_loop", "_out", "_out_bytes", "_pause_acked", "_pause_bytes", "_read_holds",
                 "_slow_limit", "_sndbuf", "_transport", "_turn", "_write_limits", "addr",
                 "behind_since", "close_code", "closing", "conn", "counted", "deflate_budget",
                 "ip", "kind", "last_drain", "last_rx", "logged_in", "opened_at", "paused_since",
                 "ping_sent", "rates", "refusals", "registry", "service", "session", "writable")

    def __init__(
        self,
        kind: str,
        service: Service,
        registry: PeerRegistry,
        limits: Limits,
        *,
        write_limits: tuple[int, int],
        slow_limit: int | None,
        buffers: SendBuffers | None = None,
        sndbuf: int | None = None,
    ) -> None:
        self.kind = kind
        self.service = service
        self.registry = registry
        self.conn = Connection(Role.SERVER, limits)
        self.session: Session[Peer] | None = None
        self.addr = "?"
        self.ip = "?"
        self.writable = True
        self.closing = False
        self._write_limits = write_limits
        self._slow_limit = slow_limit
        self._buffers = buffers
        self._sndbuf = sndbuf
        self._out: list[bytes | memoryview] = []  # chat: frames not yet handed on
        self._out_bytes = 0
        self._flush_due = False
        self._drain_waiters: list[asyncio.Future[None]] = []  # see drained()
        self._turn = -1  # the SendBuffers turn in which a frame was last written through
        self.counted = 0  # chat: bytes queued + in the transport, as counted in buffers.total
        self._hidden = 0  # TLS_HIDDEN with TLS
        self.paused_since: float | None = None  # when the transport buffer went over high
        # chat: since when it has been behind (paused, or seen with min_cut counted) without
        # catching up once (nothing queued and the transport under its high water mark)
        self.behind_since: float | None = None
        # the last pause: bytes the transport drained meanwhile, and in how many seconds:
        # what the link carries (the screen relay's adapt.py)
        self.last_drain: tuple[int, float] | None = None
        self._pause_bytes = 0  # buffered when paused, plus written since
        self._pause_acked: int | None = None  # TCP bytes acknowledged when paused
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.opened_at = self.last_rx = self._loop.time()
        self.ping_sent = False
        self.close_code: str | None = None  # why we closed it, for the metrics
        self.rates: Rates | None = None  # rate limits, for peers that have them
        self.refusals: TokenBucket | None = None  # invalid requests it may still send
        self.deflate_budget: TokenBucket | None = None  # bytes the relay may deflate for it
        self.logged_in = False
        self._held: Iterator[Message] | None = None  # requests behind a hello not yet answered
        self._read_holds = 0  # HOLD_* bits: why the connection is not read now

    def __repr__(self) -> str:
        who = self.session.name if self.session else "-"
        return f"<{self.kind} peer {who}@{self.addr}>"

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the same methods but do not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.ip = str(peer[0])
            self.addr = f"{peer[0]}:{peer[1]}"
        high, low = self._write_limits
        self._transport.set_write_buffer_limits(high=high, low=low)
        if transport.get_extra_info("sslcontext") is not None:
            self._hidden = TLS_HIDDEN
        sock = transport.get_extra_info("socket")
        if self._sndbuf is not None and sock is not None:
            # A fixed kernel buffer (no autotuning to megabytes) makes a stalled reader show
            # up in our own buffer, and so in pause_writing, within a bounded amount of data.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._sndbuf)
        if self._buffers is not None:
            self._buffers.peers.add(self)
        self.registry.peer_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = self._loop.time()
        self.last_rx = now
        self.ping_sent = False
        messages = self.conn.receive_data(data)
        rates = self.rates
        if rates is not None:
            wait = rates.bytes.spend(len(data), now)
            if rates.address is not None:
                wait = max(wait, rates.address.spend(len(data), now))
            if wait > 0:  # over the byte rate: stop reading for as long as it takes
                self._throttle(wait, lambda: self._process(messages))
                return
            if rates.flood_since is not None and rates.calm(now):
                rates.flood_since = None  # it slowed down
        self._process(messages)

    def _process(self, messages: Iterator[Message], first: Message | None = None) -> None:
        """Handle messages in order. A user over the message rate is slowed down: the rest
        waits (and the socket is not read) until the bucket has a token again."""
        buffers = self._buffers
        start = self._loop.time()
        try:
            for msg in itertools.chain((first,) if first else (), messages):
                if self.closing:
                    return
                if buffers is not None and (buffers.holding or buffers.total + buffers.upcoming
                                            > buffers.limit):
                    buffers.hold_back(self, messages, msg)  # back-pressure: see SendBuffers
                    return
                if self.rates is not None and (msg.type in self.rates.rated or msg.refused):
                    rates = self.rates
                    n = (1 if rates.cost is None or msg.refused is not None
                         else min(rates.cost(msg), rates.messages.burst))
                    wait = rates.messages.take(n, self._loop.time())
                    if wait > 0:
                        self._throttle(wait, functools.partial(self._process, messages, msg))
                        return
                    if self.rates.flood_since is not None and self.rates.calm(
                            self._loop.time()):
                        self.rates.flood_since = None  # the user slowed down
                if msg.refused is not None:
                    self._refuse(msg.type, msg.refused)
                elif msg.type == "ping":
                    self.send("pong", **msg.fields)
                elif msg.type != "pong":
                    self._handle(msg)
                if (msg.type == "hello" and not self.closing
                        and self.conn.state is State.HELLO_RECEIVED):
                    # The service answers this hello later (a password to check off the
                    # loop): hold what came behind it, and stop reading, until it accepts.
                    self._held = messages
                    self._hold_reading(HOLD_HELLO)
                    return
                if self._loop.time() - start > TURN_SLICE and not self.closing:
                    self._hold_reading(HOLD_TURN)  # the rest next turn: others go first
                    self._loop.call_soon(self._next_turn, messages)
                    return
        except RemoteProtocolError as exc:
            log.info("%r: protocol error %s: %s", self, exc.code, exc.message)
            self.fail(exc.code, exc.message)
        except Exception:
            log.exception("%r: internal error", self)
            self.fail(ErrorCode.INTERNAL, "internal server error")

    def _handle(self, msg: Message) -> None:
        try:
            self.service.handle(self, msg)
        except RequestError as exc:  # the service refused this request alone
            self._refuse(exc.request, exc)

    def _refuse(self, request: str, exc: RequestError) -> None:
        """A bad request: an error for it alone (the connection stays), unless the peer
        keeps sending them (REFUSALS_BURST at once, then more than REFUSALS_RATE a second):
        then it is cut off. Refused requests also count against the message rate."""
        log.info("%r: refused %s: %s %s", self, request, exc.code, exc.message)
        now = self._loop.time()
        if self.refusals is None:
            self.refusals = TokenBucket(REFUSALS_RATE, REFUSALS_BURST, now)
        if self.refusals.take(1, now) > 0:
            self.fail(exc.code, f"too many invalid requests; the last one: {exc.message}")
            return
        self.error(exc.code, exc.message, re=request, **exc.ids)

    def _throttle(self, wait: float, resume: Callable[[], None]) -> None:
        assert self._transport is not None and self.rates is not None
        now = self._loop.time()
        rates = self.rates
        if rates.flood_since is None:
            rates.flood_since = now
            if rates.warn:
                self.error(ErrorCode.RATE_LIMITED, "you are sending too fast; slowing you down")
        elif now - rates.flood_since > rates.flood_timeout:
            self.fail(ErrorCode.RATE_LIMITED, "flooding: you kept sending too fast")
            return
        self._hold_reading(HOLD_RATE)

        def go_on() -> None:
            if self.closing or self._transport is None:
                return
            self._unhold_reading(HOLD_RATE)  # no data arrives before resume() returns
            resume()

        self._loop.call_later(wait, go_on)

    def pause_writing(self) -> None:
        self.writable = False
        self.paused_since = self._loop.time()
        if self.behind_since is None:
            self.behind_since = self.paused_since
        if self._buffers is None:  # a screen peer: the relay measures its link (adapt.py)
            self._pause_bytes = self._transport.get_write_buffer_size() if self._transport else 0
            self._pause_acked = self._bytes_acked()

    def resume_writing(self) -> None:
        self.writable = True
        if (self.paused_since is not None and self._transport is not None
                and self._buffers is None):
            # what the peer acknowledged meanwhile (exact: we had data waiting all along),
            # else what left our buffer (the kernel's buffer in between blurs it)
            acked = self._bytes_acked()
            drained = (acked - self._pause_acked if acked is not None
                       and self._pause_acked is not None
                       else self._pause_bytes - self._transport.get_write_buffer_size())
            self.last_drain = (drained, self._loop.time() - self.paused_since)
        self.paused_since = None
        if not self._out:
            self.behind_since = None  # caught up
        if self.closing:
            return
        if self._buffers is None and self._out and self._transport is not None:
            self._write_chunks(self._out, self._transport)  # may pause it again
        if self._buffers is not None and self._out and not self._flush_due:
            self._flush_due = True  # the backlog goes on at the end of this turn
            self._buffers.due(self)
        elif self._drain_waiters:
            self._wake_drained()
        self.service.on_writable(self)

    def pause_drain(self) -> tuple[int, float] | None:
        """While paused: the bytes the peer acknowledged since the pause, and the seconds it
        has lasted (what the link carries so far), or None."""
        if self.paused_since is None or self._pause_acked is None:
            return None
        acked = self._bytes_acked()
        if acked is None:
            return None
        return acked - self._pause_acked, self._loop.time() - self.paused_since

    def limit_backlog(self, nbytes: int) -> None:
        """Hold at most about ``nbytes`` for this peer (our buffer's high water mark and the
        kernel's send buffer), never more than it was given at the start: a viewer on a slow
        link then waits behind less stale data (the screen relay sizes it to its link)."""
        transport = self._transport
        if transport is None or self.closing:
            return
        high = max(1, min(nbytes, self._write_limits[0]))
        transport.set_write_buffer_limits(high=high, low=high // 4)
        sock = transport.get_extra_info("socket")
        if self._sndbuf is not None and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(high, self._sndbuf))

    def _bytes_acked(self) -> int | None:
        """TCP bytes the peer acknowledged so far (Linux ``TCP_INFO``), or None."""
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if sock is None or not hasattr(socket, "TCP_INFO"):
            return None
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
        except OSError:
            return None
        if len(info) < TCP_INFO_LEN:
            return None
        return int.from_bytes(info[TCPI_BYTES_ACKED : TCPI_BYTES_ACKED + 8], sys.byteorder)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._drop_out()
        self._wake_drained()
        if self._buffers is not None:
            self._buffers.peers.discard(self)
        self.conn.close()
        self.registry.peer_closed(self)
        self.service.on_lost(self)
        # Break the cycles (peer <-> transport, peer <-> session) so that the connection's
        # memory, ~40 KB with TLS (OpenSSL state, BIOs, uvloop's buffers), is freed now and
        # not at the cyclic collector's next full pass: that held 1000s of closed
        # connections, RSS growing ~45 MB per 1000 TLS sessions.
        self._transport = None
        self.session = None

    # -- sending -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.conn.state is State.OPEN and not self.closing

    def buffered(self) -> int:
        return self._out_bytes + (self._transport.get_write_buffer_size()
                                  if self._transport else 0)

    def send_bytes(self, data: bytes) -> None:
        """Send an encoded frame. Never blocks. A chat peer writes the first frame due in a
        turn of the event loop at once and any more in one write at the end of the turn (two
        system calls at most, not one per message)."""
        transport = self._transport
        if self.closing or transport is None:
            return
        buffers = self._buffers
        if buffers is None:
            if self._out or len(data) > WRITE_CHUNK:
                # A screen frame: handed on in pieces while the transport takes them, the
                # rest kept as a reference (the relay's encoded frame, shared by its
                # viewers), not as a private (with TLS, encrypted) copy in the transport.
                self._out.append(data)
                self._out_bytes += len(data)
                if self.writable:
                    self._write_chunks(self._out, transport)
                return
            if not self.writable:
                self._pause_bytes += len(data)
            transport.write(data)
            return
        if (self.writable and not self._out and self._turn != buffers.turn
                and len(data) <= WRITE_CHUNK):
            # The usual case, per recipient of a fan-out: straight to the transport. (A long
            # batch goes through the queue, which the transport takes in WRITE_CHUNK pieces
            # only while it keeps up: with TLS each piece it holds is a private encrypted
            # copy, and 1000 recipients of a 100 kB batch would be 100 MB of them.)
            self._turn = buffers.turn
            if not buffers.end_scheduled:
                buffers.end_turn_soon()
            transport.write(data)
            if self.counted or transport.get_write_buffer_size():
                self.behind_since = None  # nothing was waiting: it had caught up
                self._recount()  # the socket did not take it all (or has just drained)
                self.check_slow()
            return
        self._out.append(data)
        n = len(data)
        self._out_bytes += n
        self.counted += n
        buffers.total += n
        if buffers.total > buffers.peak:
            buffers.peak = buffers.total
        if self.writable:
            if not self._flush_due:
                self._flush_due = True
                buffers.due(self)
        else:
            self.check_slow()

    def _flush_out(self) -> None:
        """Hand the queue to the transport: at once if it is short, else in pieces of at most
        WRITE_CHUNK for as long as the transport takes them (it pauses us past high water),
        so that what a transport holds (with TLS, encrypted: a private copy) stays small."""
        self._flush_due = False
        out = self._out
        transport = self._transport
        if not out or self.closing or transport is None:
            return
        if self._out_bytes <= WRITE_CHUNK:  # a few frames, one write
            self._out = []
            self._out_bytes = 0
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        else:
            self._write_chunks(out, transport)
        if self.writable and not self._out:
            self.behind_since = None  # all handed on, under high water: it has caught up
        self._recount()
        self.check_slow()
        if self._drain_waiters and self.writable and not self._out:
            self._wake_drained()

    async def drained(self) -> None:
        """Until everything sent so far has left our buffers for the transport, and the
        transport is under its high water mark (or the peer is closed): for a sender of much
        data (a catch-up of many history pages) that should hold no more than it must."""
        while not self.closing and (self._out or not self.writable):
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _wake_drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def check_slow(self, held: int = 0) -> None:
        """Cut off as too slow past slow_limit: what waits for it here, and ``held`` bytes
        kept for it elsewhere (messages published while it catches up)."""
        if self._slow_limit is not None and self.counted + held > self._slow_limit:
            self.fail(ErrorCode.TOO_SLOW, "too slow: you are not reading what the server sends")

    def _write_chunks(self, out: list[bytes | memoryview], transport: asyncio.Transport) -> None:
        """A long queue: pieces of at most WRITE_CHUNK while the transport takes them."""
        i = 0  # frames handed on whole
        while i < len(out) and self.writable:
            first = out[i]
            if len(first) > WRITE_CHUNK:  # a long run of frames: its first piece
                view = memoryview(first)
                out[i] = view[WRITE_CHUNK:]
                self._out_bytes -= WRITE_CHUNK
                transport.write(view[:WRITE_CHUNK])
                continue
            j, size = i + 1, len(first)
            while j < len(out) and size + len(out[j]) <= WRITE_CHUNK:
                size += len(out[j])
                j += 1
            self._out_bytes -= size
            transport.write(first if j == i + 1 else b"".join(out[i:j]))
            i = j
        del out[:i]

    def _recount(self) -> None:
        buffers = self._buffers
        assert buffers is not None
        n = self._out_bytes
        if self._transport is not None and not self.closing:
            size = self._transport.get_write_buffer_size()
            n += (size + self._hidden) if size else 0
        buffers.total += n - self.counted
        self.counted = n
        if buffers.total > buffers.peak:
            buffers.peak = buffers.total
        if n < buffers.min_cut:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = self._loop.time()

    def _drop_out(self) -> None:
        """Forget the queue (the peer is going away) and take it out of the total."""
        self._out = []
        self._out_bytes = 0
        if self._buffers is not None:
            self._buffers.total -= self.counted
        self.counted = 0

    def send(self, type_: str, **fields: Any) -> None:
        if not self.closing:
            self.send_bytes(self.conn.send(type_, **fields))

    def accept(self, **fields: Any) -> None:
        self.send_bytes(self.conn.accept(**fields))
        self.logged_in = True
        self.registry.peer_ready(self)
        held, self._held = self._held, None
        if held is not None:
            self._loop.call_soon(self._release, held)

    def hold(self) -> None:
        """Read nothing from this connection until :meth:`release` (it waits its turn)."""
        self._hold_reading(HOLD_QUEUE)

    def release(self) -> None:
        self._unhold_reading(HOLD_QUEUE)

    def hold_transfer(self) -> None:
        """An upload's link while the loop is busy (see server/transfergate.py)."""
        self._hold_reading(HOLD_TRANSFER)

    def release_transfer(self) -> None:
        self._unhold_reading(HOLD_TRANSFER)

    def _hold_reading(self, why: int) -> None:
        if not self._read_holds and self._transport is not None and not self.closing:
            self._transport.pause_reading()
        self._read_holds |= why

    def _unhold_reading(self, why: int) -> None:
        held = self._read_holds
        self._read_holds = held & ~why
        if held and not self._read_holds and self._transport is not None and not self.closing:
            self._transport.resume_reading()

    def _release(self, held: Iterator[Message]) -> None:
        """Go on with the requests that came behind a hello the service answered late."""
        if self.closing or self._transport is None:
            return
        self._unhold_reading(HOLD_HELLO)  # no data arrives before _process returns
        self._process(held)

    def _next_turn(self, messages: Iterator[Message]) -> None:
        """Go on with the requests left when a loop turn's slice was spent."""
        if self.closing or self._transport is None:
            return
        self._unhold_reading(HOLD_TURN)  # no data arrives before _process returns
        self._process(messages)

    def _go_on(self, messages: Iterator[Message], msg: Message) -> None:
        """Back under the budget: go on with the requests held back (SendBuffers)."""
        if self.closing or self._transport is None:
            return
        self._unhold_reading(HOLD_BUDGET)  # no data arrives before _process returns
        self._process(messages, msg)

    def error(self, code: ErrorCode | str, message: str, **extra: Any) -> None:
        """A non-fatal error: the request failed (``re``: which, ``cid``: its client id)."""
        self.send_bytes(self.conn.error(code, message, **extra))

    def fail(self, code: ErrorCode | str, message: str) -> None:
        """Tell the peer why, then close. Idempotent."""
        if self.closing or self._transport is None:
            return
        self.closing = True
        self.close_code = str(code)
        transport = self._transport
        out = self._out
        self._drop_out()
        if not transport.is_closing():
            if code in ABORT_AT_ONCE:
                # It does not read: nothing more would get through. Or it floods: a graceful
                # close (the TLS shutdown) would go on reading and decrypting what it sends.
                # The error goes out in case it is read (it may be lost behind what is
                # buffered, or to the reset).
                transport.write(self.conn.error(code, message, fatal=True))
                transport.abort()
            else:
                transport.write(b"".join([*out, self.conn.error(code, message, fatal=True)]))
                transport.close()  # flushes what is buffered, then closes
                self._loop.call_later(CLOSE_GRACE, transport.abort)
        self.conn.close()

    def abort(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.abort()

    def is_closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()
