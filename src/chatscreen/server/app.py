"""The server process: listeners, housekeeping (handshake and heartbeat deadlines), shutdown."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import ctypes
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable

from chatscreen.config import ServerSettings
from chatscreen.errors import ErrorCode
from chatscreen.protocol import Limits, State
from chatscreen.server.accounts import SQLiteAccounts
from chatscreen.server.chat import ChatService
from chatscreen.server.datadir import hold_running_lock, prepare, warn_loose_modes
from chatscreen.server.fanout import LocalFanout
from chatscreen.server.files import FileService
from chatscreen.server.limits import SCREEN_RATED, TokenBucket, screen_cost
from chatscreen.server.login import LoginPolicy
from chatscreen.server.metrics import Counters, serve_http
from chatscreen.server.peer import Peer, Rates, SendBuffers
from chatscreen.server.rooms import RoomPolicy
from chatscreen.server.screen import ScreenRelay
from chatscreen.server.storage import SQLiteStore
from chatscreen.tls import cert_fingerprint, ensure_self_signed, server_context

log = logging.getLogger("chatscreen.server")

# asyncio gives every TLS connection a 256 KiB read buffer, allocated up front: 256 MB for
# 1000 clients, and after they leave, a fragmented heap that keeps growing. Chat frames are
# small and TLS records at most 16 KiB, so 32 KiB is plenty.
asyncio.sslproto.SSLProtocol.max_size = 32 << 10

# A chat transport takes this much before the peer keeps the rest as references to the shared
# frames (peer.py): with TLS this bounds the encrypted copy, and OpenSSL's memory BIO, which
# keeps the largest size it ever had, per connection. The kernel's buffer (below) does the
# real buffering; ours fill only when a reader is ~0.5 MB behind.
CHAT_WRITE_LIMITS = (16 << 10, 4 << 10)
SCREEN_WRITE_LIMITS = (512 << 10, 128 << 10)
CHAT_SNDBUF = 256 << 10  # kernel send buffer of a chat connection
# ... and of a screen connection: fixed (no autotuning to 4 MiB), so that a slow viewer's
# backlog shows up at once as pause_writing and the relay sends it only the newest pictures
SCREEN_SNDBUF = 256 << 10
SHUTDOWN_GRACE = 2.0
# connections the kernel keeps for us to accept (capped by net.core.somaxconn): a storm of
# thousands reconnecting after a restart waits there rather than being refused by it
LISTEN_BACKLOG = 4096
# glibc keeps freed memory; with TLS, where every connection allocates and frees buffers of
# 16-256 KiB, the heap fragments and RSS grows with every 1000 sessions without the memory
# ever being reused (measured, three rounds of 1000 TLS clients joining and leaving: RSS after
# they left 76 -> 103 -> 125 MB; with malloc_trim 48, 48, 48 MB). malloc_trim(0) hands the
# free pages back (~1 ms); housekeeping runs it after this many connections closed, or after
# the send buffers shrank by TRIM_AFTER_BYTES.
TRIM_AFTER_CLOSED = 100
TRIM_AFTER_BYTES = 8 << 20


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


MALLOC_TRIM = _malloc_trim()


class Server:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.heartbeat = settings.heartbeat
        self.peers: set[Peer] = set()
        self._per_address: dict[str, int] = {}
        self._screen_rates: dict[str, TokenBucket] = {}  # per address, while it has peers
        # connections holding a login slot (max_handshakes of them): since when, oldest first
        self._handshaking: dict[Peer, float] = {}
        # connections waiting for a slot, not read meanwhile (login_queue of them), oldest
        # first (a dict as an ordered set)
        self._waiting: dict[Peer, None] = {}
        self.buffers = SendBuffers(settings.send_budget if settings.send_budget > 0 else None,
                                   min_cut=CHAT_WRITE_LIMITS[0])
        self._closed_since_trim = 0
        self._buffered_peak = 0  # the send buffers' largest total since the last trim
        self.store = SQLiteStore(settings.data_dir / "chatscreen.db",
                                 durability=settings.durability, check=settings.storage_check)
        self.fanout = LocalFanout()
        self.accounts = SQLiteAccounts(self.store)
        self.chat = ChatService(self.store, self.fanout, history=settings.history,
                                heartbeat=settings.heartbeat, accounts=self.accounts,
                                policy=login_policy(settings), limits=room_policy(settings))
        self.chat.send_buffers = self.buffers
        self.screen = ScreenRelay(self.chat, max_pixels=settings.max_share_pixels,
                                  max_memory=settings.max_screen_memory)
        self.files = FileService(settings, self.chat, self.store)
        self.screen.files = self.files
        self.chat.files = self.files
        self.chat.file_limits = {"max_file_size": settings.max_file_size}
        self.chat_limits = Limits(max_frame=1 << 20, max_header=1 << 20,
                                  max_text=settings.max_text)
        self.screen_limits = Limits(max_frame=settings.max_screen_frame, max_header=1 << 20,
                                    max_text=settings.max_text)
        self.counters = Counters()
        self.chat.counters = self.counters
        self.screen.counters = self.counters
        self.files.counters = self.counters
        self._servers: list[asyncio.Server] = []
        self.metrics_port: int | None = None
        self.fingerprint: str | None = None
        self._tls: ssl.SSLContext | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self.chat_port = settings.chat_port
        self.screen_port = settings.screen_port
        self._all_closed = asyncio.Event()
        self._running_lock: int | None = None  # see datadir.hold_running_lock

    # -- PeerRegistry ------------------------------------------------------------------

    def peer_opened(self, peer: Peer) -> None:
        s = self.settings
        self.peers.add(peer)
        ip = peer.ip
        self._per_address[ip] = self._per_address.get(ip, 0) + 1
        if self._per_address[ip] > s.max_connections_per_address:
            peer.fail(ErrorCode.TOO_MANY_CONNECTIONS,
                      f"too many connections from {ip} (at most {s.max_connections_per_address})")
            return
        if not self._waiting and self._slot_free():
            self._handshaking[peer] = peer.opened_at
        elif len(self._waiting) < s.login_queue:
            # A storm of logins (every client after a restart): wait for a slot, unread,
            # rather than be refused and pay for another TLS handshake after a backoff.
            self._waiting[peer] = None
            peer.hold()
            self._admit()
        else:
            peer.fail(ErrorCode.TOO_MANY_CONNECTIONS, "too many logins in progress; try again")
            return
        if peer.kind == "chat":
            now = asyncio.get_running_loop().time()
            peer.rates = Rates(TokenBucket(s.rate_messages, s.rate_burst, now),
                               TokenBucket(s.rate_bytes, 4 * s.rate_bytes, now),
                               s.flood_timeout)
        elif peer.kind == "screen":
            now = asyncio.get_running_loop().time()
            address = self._screen_rates.get(ip)
            if address is None:
                rate = s.screen_rate_bytes_per_address
                address = self._screen_rates[ip] = TokenBucket(rate, rate, now)
            peer.rates = Rates(TokenBucket(s.screen_rate_frames, 2 * s.screen_rate_frames, now),
                               TokenBucket(s.screen_rate_bytes, s.screen_rate_bytes, now),
                               s.flood_timeout, rated=SCREEN_RATED, cost=screen_cost,
                               address=address, warn=False)

    @property
    def logins_in_progress(self) -> int:
        return len(self._handshaking)

    @property
    def logins_waiting(self) -> int:
        return len(self._waiting)

    def _slot_free(self) -> bool:
        return len(self._handshaking) < self.settings.max_handshakes or self._make_room()

    def _make_room(self) -> bool:
        """Every login slot is taken. If the connection holding one longest has held it a
        quarter of the handshake timeout (a login takes milliseconds: that one is slow on
        purpose, slowloris from any number of addresses), close it to free its slot; else
        (a storm of real logins) the others wait for a slot."""
        oldest = next(iter(self._handshaking), None)
        if oldest is None:
            return False
        age = asyncio.get_running_loop().time() - self._handshaking[oldest]
        if age < self.settings.handshake_timeout / 4:
            return False
        del self._handshaking[oldest]
        oldest.fail(ErrorCode.HANDSHAKE_TIMEOUT, "too slow to log in while others were waiting")
        return True

    def _admit(self) -> None:
        """Give free login slots to the connections waiting longest; their handshake
        timeout starts now."""
        while self._waiting and self._slot_free():
            peer = next(iter(self._waiting))
            del self._waiting[peer]
            if peer.closing:
                continue
            peer.opened_at = asyncio.get_running_loop().time()
            self._handshaking[peer] = peer.opened_at
            peer.release()

    def peer_ready(self, peer: Peer) -> None:
        if self._handshaking.pop(peer, None) is not None and self._waiting:
            self._admit()

    def peer_closed(self, peer: Peer) -> None:
        self.peers.discard(peer)
        self._waiting.pop(peer, None)
        if self._handshaking.pop(peer, None) is not None and self._waiting:
            self._admit()
        left = self._per_address.get(peer.ip, 1) - 1
        if left > 0:
            self._per_address[peer.ip] = left
        else:
            self._per_address.pop(peer.ip, None)
            self._screen_rates.pop(peer.ip, None)
        self.counters.disconnects[peer.close_code or "closed"] += 1
        self._closed_since_trim += 1
        if not self.peers:
            self._all_closed.set()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        await asyncio.to_thread(self._prepare_data_dir)
        self._tls = await asyncio.to_thread(self._tls_context)
        await self.store.open()
        await self.accounts.open()
        await self.chat.start()
        await self.files.start()
        chat = await self._listen(s.chat_port, lambda: Peer(
            "chat", self.chat, self, self.chat_limits,
            write_limits=CHAT_WRITE_LIMITS, slow_limit=s.slow_limit if s.slow_limit > 0 else None,
            buffers=self.buffers, sndbuf=CHAT_SNDBUF))
        screen = await self._listen(s.screen_port, lambda: Peer(
            "screen", self.screen, self, self.screen_limits,
            write_limits=SCREEN_WRITE_LIMITS, slow_limit=None, sndbuf=SCREEN_SNDBUF))
        self.chat_port = chat.sockets[0].getsockname()[1]
        self.screen_port = screen.sockets[0].getsockname()[1]
        if s.metrics_port >= 0:
            http = await serve_http(self, s.metrics_host, s.metrics_port)
            self._servers.append(http)
            self.metrics_port = http.sockets[0].getsockname()[1]
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="housekeeping")

    def _prepare_data_dir(self) -> None:
        """Before anything is written in it: there (0700), writable, and private."""
        prepare(self.settings.data_dir)
        warn_loose_modes(self.settings.data_dir)
        self._running_lock = hold_running_lock(self.settings.data_dir)

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.tls:
            return None
        if s.tls_cert is not None and s.tls_key is not None:
            cert, key = s.tls_cert, s.tls_key
        else:
            cert, key = ensure_self_signed(s.data_dir)
        self.fingerprint = cert_fingerprint(cert)
        return server_context(cert, key)

    async def _listen(self, port: int, factory: Callable[[], Peer]) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        # asyncio sets TCP_NODELAY on every accepted connection.
        server = await loop.create_server(
            factory, self.settings.host, port, reuse_address=True, backlog=LISTEN_BACKLOG,
            ssl=self._tls, ssl_handshake_timeout=self.settings.handshake_timeout
            if self._tls else None)
        self._servers.append(server)
        return server

    def banner(self) -> str:
        host = self.settings.host
        return (
            "🚀 Server started!\n"
            f"📱 Chat server: {host}:{self.chat_port}\n"
            f"🖥️  Screen server: {host}:{self.screen_port}\n"
            + (f"🔒 TLS certificate: {self.fingerprint}\n" if self.fingerprint else
               "⚠️  TLS is off (--no-tls): anyone on the network can read and change the "
               "traffic\n")
            + (f"📈 Metrics: http://{self.settings.metrics_host}:{self.metrics_port}/metrics\n"
               if self.metrics_port is not None else "")
            + "Press Ctrl+C to stop the server"
        )

    async def _housekeeping(self) -> None:
        s = self.settings
        tick = min(1.0, s.heartbeat / 3, s.handshake_timeout / 3)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for peer in list(self.peers):
                if peer.closing:
                    continue
                if peer.conn.state is not State.OPEN:
                    if now - peer.opened_at <= s.handshake_timeout:
                        pass
                    elif peer in self._waiting:
                        peer.fail(ErrorCode.TOO_MANY_CONNECTIONS,
                                  "too many logins in progress; try again")
                    else:
                        peer.fail(ErrorCode.HANDSHAKE_TIMEOUT, "no handshake in time")
                elif (peer.kind == "chat" and peer.paused_since is not None
                      and now - peer.paused_since > s.slow_timeout):
                    peer.fail(ErrorCode.TOO_SLOW,
                              f"too slow: nothing read for {s.slow_timeout:g} s")
                elif now - peer.last_rx > 3 * s.heartbeat:
                    peer.fail(ErrorCode.HEARTBEAT_TIMEOUT, "no sign of life")
                elif now - peer.last_rx > s.heartbeat and not peer.ping_sent:
                    peer.ping_sent = True
                    peer.send("ping")
            self._admit()  # slow ones holding every slot make room for those waiting
            total = self.buffers.recount()
            self.buffers.enforce()
            self._buffered_peak = max(self._buffered_peak, total)
            if (self._closed_since_trim >= TRIM_AFTER_CLOSED
                    or self._buffered_peak - total >= TRIM_AFTER_BYTES
                    or self.screen.released >= TRIM_AFTER_BYTES):
                self.trim_memory()

    def trim_memory(self) -> None:
        """Give the heap's free pages back to the system (glibc only)."""
        self._closed_since_trim = 0
        self._buffered_peak = self.buffers.total
        self.screen.released = 0
        if MALLOC_TRIM is not None:
            t0 = time.perf_counter()
            MALLOC_TRIM(0)
            log.debug("malloc_trim: %.1f ms", 1e3 * (time.perf_counter() - t0))

    async def stop(self, reason: str = "the server is shutting down") -> None:
        """Stop listening, store what was received, tell every client why, close."""
        for server in self._servers:
            server.close()
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        await self.chat.stop()  # everything received is stored and delivered first
        self.files.stop()
        for peer in list(self.peers):
            peer.fail(ErrorCode.SHUTDOWN, reason)
        if self.peers:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), SHUTDOWN_GRACE)
        for peer in list(self.peers):
            peer.abort()
        await self.store.close()
        if self._running_lock is not None:
            os.close(self._running_lock)
            self._running_lock = None



def login_policy(s: ServerSettings) -> LoginPolicy:
    roles = frozenset(r.strip() for r in s.share_roles.split(",") if r.strip())
    return LoginPolicy(server_password=s.server_password, require_accounts=s.require_accounts,
                       share_roles=None if roles == {"everyone"} else roles,
                       login_delay=s.login_delay, login_delay_max=s.login_delay_max,
                       handshake_timeout=s.handshake_timeout)


def room_policy(s: ServerSettings) -> RoomPolicy:
    return RoomPolicy(create_rate=s.create_rate, create_burst=s.create_burst,
                      max_rooms=s.max_rooms, max_rooms_per_guest=s.max_rooms_per_guest,
                      max_rooms_per_member=s.max_rooms_per_member, room_expiry=s.room_expiry,
                      max_joined=s.max_joined, max_invitations=s.max_invitations)


async def run_server(settings: ServerSettings, on_started: Callable[[Server], None]) -> None:
    """Start, call ``on_started`` (the banner), serve until SIGINT or SIGTERM, shut down.

    The signal handlers are in place before the server starts, so a signal sent as soon as
    the banner appears still shuts down gracefully; a second Ctrl+C exits at once.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = Server(settings)
    try:
        await server.start()
    except BaseException:
        await server.store.close()
        raise
    on_started(server)
    await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    log.info("shutting down")
    await server.stop()
