"""Files on the command line: ``send-file``, ``get-file``, and ``/send``, ``/get`` in chat.

The transfers themselves are :mod:`chatscreen.client.files`; this is what the user sees: a
progress bar on a terminal, the file id alone on standard output's last line, one clear line
for each refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any

from chatscreen.client.files import (
    FileError,
    FileInfo,
    download,
    format_size,
    local_size,
    picture_name,
    upload,
    upload_picture,
)
from chatscreen.errors import ChatscreenError, InvalidInput, ServerError
from chatscreen.text import one_line

REDRAW = 0.1  # s between redraws of the progress bar
CHAT_PROGRESS = 2.0  # s between progress lines in `chatscreen chat`
BAR_CELLS = 20

PHASES = {"hashing": "hashing", "uploading": "sending", "downloading": "receiving",
          "reconnecting": "reconnecting"}


def rate_text(rate: float | None) -> str:
    return f"{format_size(int(rate))}/s" if rate is not None else ""


def bar_line(phase: str, label: str, done: int, total: int, rate: float | None,
             width: int = 80) -> str:
    """One line of progress, at most ``width`` characters:
    ``sending report.pdf [########------------]  40%  1.2 MB / 3.0 MB  5.1 MB/s``."""
    frac = min(1.0, done / total) if total > 0 else 1.0
    filled = int(frac * BAR_CELLS)
    tail = (f" [{'#' * filled}{'-' * (BAR_CELLS - filled)}] {int(frac * 100):3d}%  "
            f"{format_size(done)} / {format_size(total)}")
    if rate is not None and phase != "reconnecting":
        tail += f"  {rate_text(rate)}"
    head = PHASES.get(phase, phase)
    room = width - len(head) - len(tail) - 2
    if room < 4:
        return (head + tail)[:width]
    if len(label) > room:
        label = label[: room - 1] + "…"
    return f"{head} {label}{tail}"


class Rate:
    """Bytes a second since a phase began (what it started with does not count)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.phase = ""
        self.start_time = 0.0
        self.start_done = 0

    def update(self, phase: str, done: int) -> float | None:
        now = self.clock()
        if phase != self.phase or done < self.start_done:
            self.phase, self.start_time, self.start_done = phase, now, done
        elapsed = now - self.start_time
        return (done - self.start_done) / elapsed if elapsed >= 0.2 else None


class ProgressBar:
    """A progress bar redrawn in place (``\\r``) on a terminal, at most every REDRAW s."""

    def __init__(self, label: str, stream: IO[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = one_line(label)
        self.stream = stream
        self.clock = clock
        self.rate = Rate(clock)
        self.last = float("-inf")
        self.last_phase = ""
        self.drawn = 0  # characters of the line now shown

    def __call__(self, phase: str, done: int, total: int) -> None:
        rate = self.rate.update(phase, done)
        now = self.clock()
        if now - self.last < REDRAW and phase == self.last_phase and done < total:
            return
        self.last, self.last_phase = now, phase
        width = max(20, shutil.get_terminal_size().columns - 1)
        line = bar_line(phase, self.label, done, total, rate, width)
        self.stream.write("\r" + line + " " * max(0, self.drawn - len(line)))
        self.stream.flush()
        self.drawn = len(line)

    def named(self, info: FileInfo) -> None:
        """The file's name, once known (get-file starts with its id)."""
        self.label = one_line(info.name)

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = 0


def progress_bar(label: str) -> ProgressBar | None:
    """A bar on stderr when it is a terminal; None (nothing shown) otherwise."""
    return ProgressBar(label, sys.stderr) if sys.stderr.isatty() else None


def file_text(f: dict[str, Any]) -> str:
    """A file message as a chat line's text: ``[file ID] NAME (SIZE)``, nothing obeyed;
    ``(SIZE, expired)`` once the server no longer keeps it."""
    expired = ", expired" if f.get("expired") else ""
    return (f"[file {one_line(str(f['id']))}] {one_line(str(f['name']))} "
            f"({format_size(f['size'])}{expired})")


def _refused(what: str, exc: ServerError | InvalidInput | FileError) -> ChatscreenError:
    message = exc.message if isinstance(exc, ServerError) else str(exc)
    return ChatscreenError(f"{what}: {message}")


# -- send-file and get-file ------------------------------------------------------------------


def where_to(output: Path | None) -> tuple[Path, Path | None]:
    """The folder a download goes to and its path there (None: the file's own name): an
    existing directory given as the output is the folder."""
    if output is None:
        return Path("."), None
    return (output, None) if output.is_dir() else (Path("."), output)


async def run_send_file(args: argparse.Namespace, connect: Any) -> int:
    """``chatscreen send-file PATH [--room ROOM | --to USER]``: the file id on stdout."""
    path: Path = args.path
    local_size(path)  # missing or unreadable: said before connecting
    client = await connect(args)
    what = f"cannot send {path.name}"
    bar = progress_bar(path.name)
    try:
        room: str | None = None
        if args.to is None:
            room = args.room or client.default_room
            if room not in client.rooms:
                try:
                    await client.join(room)
                except ServerError as exc:
                    raise _refused(what, exc) from None
        try:
            info = await upload(client, path, room=room, to=args.to, progress=bar)
        except (ServerError, InvalidInput, FileError) as exc:
            raise _refused(what, exc) from None
        finally:
            if bar is not None:
                bar.finish()
    finally:
        await client.close()
    where = f"#{room}" if room is not None else args.to
    print(f"sent {one_line(info.name)} ({format_size(info.size)}) to {one_line(where)}",
          file=sys.stderr, flush=True)
    print(info.id, flush=True)
    return 0


async def run_get_file(args: argparse.Namespace, connect: Any) -> int:
    """``chatscreen get-file ID [--output PATH]``: the path saved to on stdout."""
    folder, output = where_to(args.output)
    client = await connect(args)
    bar = progress_bar(args.id)
    try:
        try:
            got = await download(client, args.id, output, folder=folder, progress=bar,
                                 thumb=args.preview, on_info=bar.named if bar else None)
        except ServerError as exc:
            if exc.code == "no_such_file":
                raise ChatscreenError(f"no such file: {one_line(args.id)} (no file has this "
                                      "id, or it is not yours to see)") from None
            raise _refused(f"cannot get {one_line(args.id)}", exc) from None
        except FileError as exc:
            raise _refused(f"cannot get {one_line(args.id)}", exc) from None
        finally:
            if bar is not None:
                bar.finish()
    finally:
        await client.close()
    name = one_line(got.info.name)
    # the path can differ from the name: made safe, or "NAME (1)" beside an existing file
    print(f"saved {name} ({format_size(got.size)}) to {one_line(str(got.path))}",
          file=sys.stderr, flush=True)
    print(got.path, flush=True)
    return 0


# -- /send and /get in `chatscreen chat` --------------------------------------------------------


class ChatProgress:
    """Progress of a transfer in chat (on a terminal only: from a script, just the result):
    a line when the bytes start to go, then one at most every CHAT_PROGRESS s."""

    def __init__(self, label: str, out: Callable[..., None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = one_line(label)
        self.out = out
        self.clock = clock
        self.rate = Rate(clock)
        self.last = clock()
        self.started: set[str] = set()

    def named(self, info: FileInfo) -> None:
        self.label = one_line(info.name)

    def __call__(self, phase: str, done: int, total: int) -> None:
        rate = self.rate.update(phase, done)
        now = self.clock()
        if phase in ("uploading", "downloading") and phase not in self.started:
            self.started.add(phase)  # its start, at once (the rest every CHAT_PROGRESS s)
            verb = "sending" if phase == "uploading" else "getting"
            self.out(f"* {verb} {self.label} ({format_size(total)})", flush=True)
            self.last = now
            return
        if now - self.last < CHAT_PROGRESS:
            return
        self.last = now
        pct = int(100 * done / total) if total else 100
        speed = f", {rate_text(rate)}" if rate is not None and phase != "reconnecting" else ""
        self.out(f"* {self.label}: {PHASES.get(phase, phase)} {pct}% of "
                 f"{format_size(total)}{speed}", flush=True)


def clean_path(text: str) -> Path:
    """A path typed after /send or /get: surrounding quotes dropped (a file dragged onto a
    terminal comes quoted), ``~`` expanded."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return Path(text).expanduser()


class ChatFiles:
    """``/send`` and ``/get`` in `chatscreen chat`. On a terminal a transfer runs beside the
    chat (refusals said as ``! ...``), and leaving stops those still under way (an upload
    sent again later goes on from where it stopped). From a script each is waited for, and
    a refusal stops the script."""

    def __init__(self, client: Any, out: Callable[..., None], err_out: Any, *,
                 terminal: bool) -> None:
        self.client = client
        self.out = out
        self.err_out = err_out
        self.terminal = terminal
        self.shown = ShownMessages()  # the ids of the messages the chat printed
        self.running: dict[asyncio.Task[Any], str] = {}  # (terminal) transfer -> what

    def _start(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        if self.terminal:
            self.running[task] = what
            task.add_done_callback(lambda t: self.running.pop(t, None))
        return task

    def send(self, path: Path, room: str) -> asyncio.Task[Any]:
        return self._start(chat_send(self.client, path, room, self.out,
                                     terminal=self.terminal, err_out=self.err_out,
                                     shown=self.shown), f"sending {path.name}")

    def get(self, file_id: str, path: Path | None) -> asyncio.Task[Any]:
        return self._start(chat_get(self.client, file_id, path, self.out,
                                    terminal=self.terminal, err_out=self.err_out),
                           f"getting {file_id}")

    async def stop(self) -> None:
        """Leaving: the transfers still under way stop, each said."""
        running, self.running = self.running, {}
        for task, what in running.items():
            task.cancel()
            self.out(f"! stopped {one_line(what)} (run it again to go on from where it "
                     "stopped)", file=self.err_out, flush=True)
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def chat_send(client: Any, path: Path, room: str, out: Callable[..., None], *,
                    terminal: bool, err_out: Any,
                    shown: ShownMessages | None = None) -> FileInfo | None:
    """``/send PATH`` in chat: post the file to ``room`` beside the chat. On a terminal a
    refusal is said as ``! ...`` and None returned; from a script it is raised (the caller
    stops there)."""
    try:
        info = await upload(client, path, room=room,
                            progress=ChatProgress(path.name, out) if terminal else None)
    except (ServerError, InvalidInput, FileError) as exc:
        error = _refused(f"cannot send {path.name}", exc)
        if not terminal:
            raise error from None
        out(f"! {one_line(str(error))}", file=err_out, flush=True)
        return None
    out(f"* sent {one_line(info.name)} ({format_size(info.size)}): file {info.id}", flush=True)
    if shown is not None and not terminal:  # a script: its line shows before it goes on
        await shown.wait(info.message_id, client.timeout)
    return info


class ShownMessages:
    """The ids of the messages `chatscreen chat` printed lately: from a script, ``/send``
    waits for its file's line (the server answers the upload once the message is stored,
    and sends the message to the room at the same time, on the chat connection)."""

    KEEP = 1000

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.order: list[int] = []
        self._changed = asyncio.Event()

    def add(self, msg_id: int) -> None:
        self.ids.add(msg_id)
        self.order.append(msg_id)
        if len(self.order) > 2 * self.KEEP:
            self.order = self.order[-self.KEEP :]
            self.ids = set(self.order)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, msg_id: int | None, timeout: float) -> bool:
        """True once ``msg_id`` was printed; False if not within ``timeout`` s."""
        if msg_id is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while msg_id not in self.ids:
                    await self._changed.wait()
                return True
        return False


async def chat_get(client: Any, file_id: str, path: Path | None, out: Callable[..., None], *,
                   terminal: bool, err_out: Any) -> Path | None:
    """``/get ID [PATH]`` in chat: save a file (as for ``get-file``) beside the chat."""
    what = f"cannot get {one_line(file_id)}"
    try:
        folder, path = where_to(path)
        show = ChatProgress(file_id, out) if terminal else None
        got = await download(client, file_id, path, folder=folder, progress=show,
                             on_info=show.named if show else None)
    except (ServerError, FileError) as exc:
        error = _refused(what, exc)
        if not terminal:
            raise error from None
        out(f"! {one_line(str(error))}", file=err_out, flush=True)
        return None
    out(f"* saved {one_line(got.info.name)} ({format_size(got.size)}) to "
        f"{one_line(str(got.path))}", flush=True)
    return got.path


# -- `chatscreen view --snapshot-to-chat` ------------------------------------------------------


async def post_snapshot(client: Any, share: dict[str, Any], pixels: Any,
                        room: str | None) -> int:
    """Post a share's picture (RGB pixels) into ``room``, else the share's room (a share
    for a room's members, when the server says which), else the server's first room, as
    a lossless PNG; the file id alone on the last line of stdout."""
    from PIL import Image

    room = room or share.get("room") or client.default_room
    name = picture_name(str(share["user"]))
    what = f"cannot post the picture to #{room}"
    if room not in client.rooms:
        try:
            await client.join(room)
        except ServerError as exc:
            raise _refused(what, exc) from None
    bar = progress_bar(name)
    try:
        info = await upload_picture(client, Image.fromarray(pixels, "RGB"), name, room=room,
                                    progress=bar)
    except (ServerError, InvalidInput, FileError) as exc:
        raise _refused(what, exc) from None
    finally:
        if bar is not None:
            bar.finish()
    print(f"posted {one_line(info.name)} ({info.w}x{info.h}, {format_size(info.size)}) to "
          f"#{one_line(room)}", file=sys.stderr, flush=True)
    print(info.id, flush=True)
    return 0
