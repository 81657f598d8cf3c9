"""One connection to a server, seen from the Tk thread.

:class:`NetSession` wraps a :class:`ThreadedClient`: the client library's event loop runs on
its own thread; every call from the GUI is scheduled on that loop and returns at once (a
``concurrent.futures.Future``). Everything the GUI must learn (server events, ``status``,
and the local ``gui_*`` events this module adds) arrives in one thread-safe queue,
``events``, which the Tk thread polls. Nothing here touches a widget.

Screen frames take another road (they are big): the watch task decodes and composes them on
a render worker thread (:mod:`chatscreen.gui.render`) and leaves the result in a
:class:`FrameMailbox` that the Tk thread empties.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from chatscreen.client import Client, ScreenChannel, ThreadedClient
from chatscreen.client.files import (
    FileError,
    FileInfo,
    Progress,
    download,
    upload,
    upload_picture,
)
from chatscreen.errors import ChatscreenError, ServerError
from chatscreen.gui.files import PictureError, decode_fitted, decode_preview
from chatscreen.gui.render import Composer, Patch, Redraw, patch_of
from chatscreen.protocol import Message
from chatscreen.screen.codec import Canvas, DecodeError
from chatscreen.screen.cursor import Cursor
from chatscreen.screen.resume import RecordRefused, keep_sharing, keep_watching
from chatscreen.screen.scroll import Move
from chatscreen.screen.sharing import DEFAULT_FPS, ShareStats, frame_rects

T = TypeVar("T")
MAILBOX_DEPTH = 2  # redraws waiting for the Tk thread before the watcher waits too
PROGRESS_EVERY = 0.1  # s between a transfer's progress events
PREVIEWS_AT_ONCE = 2  # previews downloaded at the same time (each on its own link)


class FrameMailbox:
    """Redraws on their way to the Tk thread; a full redraw replaces everything older."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Redraw] = []
        self._room: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def put(self, redraw: Redraw | None) -> None:
        if redraw is None:
            return
        with self._lock:
            if redraw.full:
                self._items.clear()
            self._items.append(redraw)

    def take(self) -> list[Redraw]:
        with self._lock:
            items, self._items = self._items, []
            room = self._room
        if items and room is not None:
            room[0].call_soon_threadsafe(room[1].set)
        return items

    async def wait_for_room(self) -> None:
        """On the network loop: wait while the Tk thread is behind (newest wins upstream)."""
        with self._lock:
            if len(self._items) < MAILBOX_DEPTH:
                return
            event = asyncio.Event()
            self._room = (asyncio.get_running_loop(), event)
        try:
            await event.wait()
        finally:
            self._room = None


class RateMeter:
    """Frames and bytes counted on one thread, read as rates on another."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames = 0
        self.bytes = 0
        self._mark = (time.monotonic(), 0, 0)

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.frames += 1
            self.bytes += nbytes

    def rates(self) -> tuple[float, float]:
        """Frames per second and bits per second since the previous call."""
        with self._lock:
            now, frames, nbytes = time.monotonic(), self.frames, self.bytes
            then, frames0, bytes0 = self._mark
            self._mark = (now, frames, nbytes)
        secs = max(now - then, 1e-6)
        return (frames - frames0) / secs, (nbytes - bytes0) * 8 / secs


def compose_frame(composer: Composer, msg: Message,
                  pointer: Cursor | None = None) -> Redraw | None:
    """Decode a frame's rectangles and apply them, or draw the sharer's ``pointer`` after a
    ``cursor`` message (render worker thread)."""
    if msg.type == "cursor":
        return composer.set_cursor(pointer)
    try:
        size = (msg["w"], msg["h"])
        patches: list[Patch | Move] = []
        for x, y, w, h, enc, data in frame_rects(msg):
            if enc == "h264":  # stateful: each stream has its decoder
                pic = composer.decode_h264(x, y, w, h, bytes(data))
                if pic is not None:
                    patches.append(Patch(x, y, pic))
            else:
                patches.append(patch_of(x, y, w, h, enc, bytes(data), size))
    except DecodeError:
        return None  # a bad frame is skipped; the next key frame repairs the picture
    return composer.apply(msg["w"], msg["h"], msg["key"], patches)


def gui_event(kind: str, **fields: Any) -> Message:
    return Message(f"gui_{kind}", fields)


class NetSession:
    def __init__(self, host: str, user: str, *, chat_port: int, screen_port: int,
                 render_pool: ThreadPoolExecutor, password: str | None = None,
                 server_password: str | None = None, fingerprint: str | None = None) -> None:
        self.host = host
        self.chat_port = chat_port
        self.tc = ThreadedClient(host, user, chat_port=chat_port, screen_port=screen_port,
                                 timeout=10.0, password=password,
                                 server_password=server_password, fingerprint=fingerprint)
        self.events = self.tc.events
        self.user = user
        self.render_pool = render_pool
        self.rtt: float | None = None
        self._ping: Future[float] | None = None
        self._watch: Future[None] | None = None
        self._share: Future[None] | None = None
        self._share_stop: asyncio.Event | None = None
        self.share_stats: ShareStats | None = None
        self.watch_meter = RateMeter()
        self.transfers: set[Future[Any]] = set()  # uploads and downloads under way
        self._previews: asyncio.Semaphore | None = None  # (made on the network loop)
        self.closed = False
        self.close_done = threading.Event()  # set once logged out and the loop has stopped
        self.connecting: Future[Client] = self.tc.connect()

    @property
    def client(self) -> Client:
        return self.tc.client

    def call(self, fn: Callable[[Client], Coroutine[Any, Any, T]],
             what: str = "") -> Future[T]:
        """Run fn(client) on the network loop; a failure becomes a ``gui_error`` event."""
        fut = self.tc.call(fn)

        def done(f: Future[T]) -> None:
            if not f.cancelled() and f.exception() is not None:
                text = str(f.exception()) or type(f.exception()).__name__
                self.events.put(gui_event("error", text=f"{what}: {text}" if what else text))

        fut.add_done_callback(done)
        return fut

    # -- chat --------------------------------------------------------------------------

    def say(self, room: str, text: str, token: int) -> None:
        async def go(c: Client) -> Message:
            return await c.say_nowait(room, text)

        self._post(go, token)

    def pm(self, to: str, text: str, token: int) -> None:
        async def go(c: Client) -> Message:
            return await c.pm(to, text)

        self._post(go, token)

    def _post(self, fn: Callable[[Client], Coroutine[Any, Any, Message]], token: int) -> None:
        fut = self.tc.call(fn)

        def done(f: Future[Message]) -> None:
            error = None if f.cancelled() or f.exception() is None else str(f.exception())
            self.events.put(gui_event("sent", token=token, error=error))

        fut.add_done_callback(done)

    def older(self, key: str, before: int, limit: int) -> None:
        """Ask for the messages of conversation key ("#room" or "@user") before id ``before``;
        the answer comes back as a ``gui_older`` event."""
        async def go(c: Client) -> Message:
            if key.startswith("#"):
                return await c.history(room=key[1:], before=before, limit=limit)
            return await c.history(peer=key[1:], before=before, limit=limit)

        fut = self.tc.call(go)

        def done(f: Future[Message]) -> None:
            if f.cancelled() or f.exception() is not None:
                error = "cancelled" if f.cancelled() else str(f.exception())
                self.events.put(gui_event("older", key=key, messages=[], more=True,
                                          error=error))
            else:
                msg = f.result()
                self.events.put(gui_event("older", key=key, messages=msg["messages"],
                                          more=bool(msg.get("more")), error=None))

        fut.add_done_callback(done)

    def typing(self, active: bool, *, room: str | None = None, to: str | None = None) -> None:
        async def go(c: Client) -> None:
            with contextlib.suppress(ConnectionResetError):
                await c.typing(active, room=room, to=to)

        self.tc.call(go)

    def maybe_ping(self) -> None:
        """Measure the round trip now and then (call it from a timer)."""
        if self._ping is not None and not self._ping.done():
            return
        if self._ping is not None and self._ping.exception() is None:
            self.rtt = self._ping.result()
        if self.client.connected:
            self._ping = self.tc.call(lambda c: c.ping())
            self._ping.add_done_callback(self._ping_done)

    def _ping_done(self, fut: Future[float]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.rtt = fut.result()
            self.events.put(gui_event("rtt", rtt=self.rtt))

    # -- screen ------------------------------------------------------------------------

    def watch(self, share: dict[str, Any], composer: Composer, mailbox: FrameMailbox,
              record: Path | None = None) -> None:
        """Watch ``share`` (anew: a watch starts from a whole picture); with ``record``,
        record it to that MP4 file too, if its sharer allows (events ``recording``:
        started, refused or ended)."""
        self.unwatch()
        self._watch = self.tc.run(self._watch_loop(share, composer, mailbox, record))

    async def _watch_loop(self, share: dict[str, Any], composer: Composer,
                          mailbox: FrameMailbox, record: Path | None = None) -> None:
        """Watch until the share ends or the user stops; after a reconnect the same user's
        share is watched again by itself (resume.keep_watching)."""
        loop = asyncio.get_running_loop()
        feed: Any = None  # recording.ShareRecording: PyAV loads only when recording
        # what is recorded (the composer's picture is its own, scaled)
        canvas = Canvas(share["w"], share["h"]) if record is not None else None

        async def show(msg: Message, screen: ScreenChannel) -> None:
            self.watch_meter.add(len(msg.payload))
            if feed is not None and canvas is not None:
                if msg.type == "frame":
                    with contextlib.suppress(DecodeError):
                        canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
                feed.frame_applied(msg, canvas, screen.cursors.get(msg["share"]))
            await mailbox.wait_for_room()
            mailbox.put(await loop.run_in_executor(self.render_pool, compose_frame, composer,
                                                   msg, screen.cursors.get(msg["share"])))

        reason = "stopped"
        try:
            if record is not None:
                from chatscreen.screen.recording import Recorder, ShareRecording

                feed = ShareRecording(Recorder(record), lambda w, h: self.events.put(
                    gui_event("recording", state="started", path=str(record))))
            try:
                # cursor messages too: the pointer is drawn by the composer
                reason = await keep_watching(self.client, share, show, cursor_messages=True,
                                             record=feed is not None)
            except RecordRefused as exc:  # watch on, without recording
                self.events.put(gui_event("recording", state="refused", text=str(exc)))
                feed = None
                reason = await keep_watching(self.client, share, show, cursor_messages=True)
        except Exception as exc:  # ConnectError, OSError, ...: said in the window
            reason = str(exc) or type(exc).__name__
        finally:
            if feed is not None:
                await self._end_recording(feed.recorder)
            self.events.put(gui_event("watch_ended", user=share["user"], reason=reason))

    async def _end_recording(self, recorder: Any) -> None:
        """Complete the file (off the loop), and say what was recorded."""
        try:
            stats = await asyncio.to_thread(recorder.close)
            text = stats.summary() if stats is not None else "Nothing recorded"
        except ChatscreenError as exc:
            text = str(exc)
        self.events.put(gui_event("recording", state="ended", text=text))

    def unwatch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    @property
    def watching(self) -> bool:
        return self._watch is not None and not self._watch.done()

    def start_share(self, monitor: int, preset: str, *, viewers: list[str] | None = None,
                    room: str | None = None, may_record: bool = False) -> None:
        """Share a monitor with one of the encoder's presets, at the same rate and quality
        as ``chatscreen share --preset``; only ``viewers``, or the members of ``room``, may
        watch (else anyone); ``may_record``: those who watch may record it too."""
        if self._share is not None and not self._share.done():
            return
        self.share_stats = ShareStats()
        self._share = self.tc.run(self._share_loop(monitor, preset, self.share_stats,
                                                   viewers, room, may_record))

    async def _share_loop(self, monitor: int, preset: str, stats: ShareStats,
                          viewers: list[str] | None, room: str | None,
                          may_record: bool = False) -> None:
        stop = self._share_stop = asyncio.Event()

        def started(w: int, h: int) -> None:
            self.events.put(gui_event("share_started", w=w, h=h))

        reason = "stopped"
        try:
            await keep_sharing(self.client, stop, monitor=monitor, fps=DEFAULT_FPS,
                               preset=preset, stats=stats, on_started=started,
                               viewers=viewers, room=room,
                               may_record="all" if may_record else None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # CaptureError, ConnectError, ConnectionResetError, ...
            reason = str(exc) or type(exc).__name__
        finally:
            self.events.put(gui_event("share_ended", reason=reason))

    def stop_share(self) -> None:
        stop = self._share_stop
        if stop is not None:
            self.tc.run(_set(stop))

    @property
    def sharing(self) -> bool:
        return self._share is not None and not self._share.done()

    # -- files -------------------------------------------------------------------------

    def _progress(self, tid: int) -> Progress:
        """A transfer's progress as ``gui_transfer`` events: at most every PROGRESS_EVERY s
        (network loop), and each change of phase."""
        when, what = [0.0], [""]

        def report(phase: str, done: int, total: int) -> None:
            now = time.monotonic()
            if phase != what[0] or now - when[0] >= PROGRESS_EVERY or done == total:
                when[0], what[0] = now, phase
                self.events.put(gui_event("transfer", tid=tid, phase=phase, done=done,
                                          total=total))

        return report

    def _transfer(self, tid: int, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run a transfer on the network loop; its end comes back as ``gui_transfer_done``
        {tid, result (what it returned), error (text or None), cancelled}."""
        fut = self.tc.run(coro)
        self.transfers.add(fut)

        def done(f: Future[Any]) -> None:
            self.transfers.discard(fut)
            if f.cancelled():
                self.events.put(gui_event("transfer_done", tid=tid, result=None, error=None,
                                          cancelled=True))
                return
            exc = f.exception()
            text = None if exc is None else (
                exc.message if isinstance(exc, ServerError) else str(exc)
                or type(exc).__name__)
            self.events.put(gui_event("transfer_done", tid=tid, cancelled=False, error=text,
                                      result=None if exc is not None else f.result()))

        fut.add_done_callback(done)
        return fut

    def upload(self, tid: int, path: Path, *, room: str | None = None, to: str | None = None,
               name: str | None = None) -> Future[Any]:
        """Post a file to ``room`` or ``to``; the result is its FileInfo."""
        return self._transfer(tid, upload(self.client, path, room=room, to=to, name=name,
                                          progress=self._progress(tid),
                                          drop_if_cancelled=True))

    def upload_picture(self, tid: int, take: Callable[[], Image.Image | None], name: str, *,
                       room: str | None = None, to: str | None = None) -> Future[Any]:
        """Post the picture ``take()`` gives (called on the render thread: a screen's
        composer) as a lossless PNG."""
        async def go() -> FileInfo:
            loop = asyncio.get_running_loop()
            picture = await loop.run_in_executor(self.render_pool, take)
            if picture is None:
                raise FileError("no complete picture yet")
            return await upload_picture(self.client, picture, name, room=room, to=to,
                                        progress=self._progress(tid))

        return self._transfer(tid, go())

    def download(self, tid: int, file_id: str, output: Path) -> Future[Any]:
        """Save a file as ``output``; the result is a Downloaded."""
        return self._transfer(tid, download(self.client, file_id, output,
                                            progress=self._progress(tid)))

    def open_picture(self, tid: int, file_id: str, folder: Path,
                     box: tuple[int, int]) -> Future[Any]:
        """Download a picture into ``folder`` and decode it scaled to fit ``box`` (off the
        Tk thread); the result is the PIL image. The file is removed once decoded."""
        async def go() -> Image.Image:
            try:
                got = await download(self.client, file_id, folder / "picture",
                                     progress=self._progress(tid))
                return await asyncio.to_thread(decode_fitted, got.path, box)
            finally:
                await asyncio.to_thread(shutil.rmtree, folder, True)

        return self._transfer(tid, go())

    def preview(self, file_id: str, folder: Path) -> None:
        """Fetch a file's preview (the server's thumbnail) and decode it off the Tk thread;
        ``gui_preview`` {file, image (PIL) or None, error} comes back."""
        async def go() -> None:
            if self._previews is None:
                self._previews = asyncio.Semaphore(PREVIEWS_AT_ONCE)
            image, error = None, None
            try:
                async with self._previews:  # a room full of pictures: a few links at once
                    got = await download(self.client, file_id, folder / f"{file_id}.png",
                                         thumb=True)
                image = await asyncio.to_thread(decode_preview, got.path)
                with contextlib.suppress(OSError):
                    got.path.unlink()
            except (ChatscreenError, PictureError, OSError) as exc:
                error = str(exc) or type(exc).__name__
            self.events.put(gui_event("preview", file=file_id, image=image, error=error))

        self.tc.run(go())

    # -- the end -----------------------------------------------------------------------

    def close(self) -> None:
        """Log out and stop the network thread, without blocking the Tk thread."""
        if self.closed:
            return
        self.closed = True
        tasks = [f for f in (self._watch, self._share) if f is not None]
        for transfer in list(self.transfers):
            transfer.cancel()
        self.unwatch()
        self.stop_share()
        threading.Thread(target=self._close, args=(tasks,), name="chatscreen-close",
                         daemon=True).start()

    def _close(self, tasks: list[Future[None]]) -> None:
        # Let the screen tasks close their connections before the loop stops.
        try:
            wait(tasks, timeout=3.0)
            with contextlib.suppress(Exception):
                self.tc.close(timeout=5.0)
            close_loop(self.tc)
        finally:
            self.close_done.set()


def close_loop(tc: ThreadedClient) -> None:
    """Close the stopped event loop of a ThreadedClient (``ThreadedClient.close`` stops it but
    does not close it; left to the garbage collector, its ``__del__`` may find its self-pipe
    already closed and raise). To go once the library closes it itself."""
    loop: asyncio.AbstractEventLoop = tc._loop
    thread: threading.Thread = tc._thread
    if not thread.is_alive() and not loop.is_running() and not loop.is_closed():
        loop.close()


async def _set(event: asyncio.Event) -> None:
    event.set()
