"""What one changed pixel costs on the wire: a real server with TLS, a sharer and a viewer whose
TCP bytes (below TLS) are counted by a loopback proxy (issue 17: at most 60 B a change)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from chatscreen.client import Client, OutRect, ScreenChannel
from chatscreen.errors import ErrorCode, ServerError
from chatscreen.protocol import Message
from chatscreen.protocol import binform as bf
from chatscreen.screen.codec import Canvas, encode_jpeg, encode_zlib
from chatscreen.screen.cursor import Cursor, Shape
from chatscreen.screen.sharing import find_share, frame_rects
from chatscreen.server.screen import DEFLATE_BURST, DEFLATE_RATE
from tests.helpers.server import TIMEOUT, ServerProcess, run

W, H = 1920, 1080
CHANGES = 7
MAX_BYTES_PER_CHANGE = 60  # VNC needs ~30


@dataclass
class CountingProxy:
    """Forwards loopback TCP to ``target`` and counts the bytes each way, as TCP carries them
    (TLS records included)."""

    target: int
    port: int = 0
    down: int = 0  # server -> client
    up: int = 0  # client -> server
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += (writer, up_writer)
        for task in (self._pipe(reader, up_writer, down=False),
                     self._pipe(up_reader, writer, down=True)):
            self._tasks.add(asyncio.create_task(task))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    down: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if down:
                    self.down += len(data)
                else:
                    self.up += len(data)
                self.moved.set()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in self._tasks:
            t.cancel()


async def _next_picture(screen: ScreenChannel, canvas: Canvas) -> None:
    msg = await screen.next_frame(TIMEOUT)
    assert msg.type == "frame", msg
    canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))


async def _until_up(proxy: CountingProxy, at_least: int) -> None:
    """Until the sharer's proxy has carried ``at_least`` bytes upstream (its frame left)."""
    async with asyncio.timeout(TIMEOUT):
        while proxy.up < at_least:
            proxy.moved.clear()
            await proxy.moved.wait()


def _pixel(i: int) -> tuple[int, int, OutRect]:
    """The i-th 1-pixel change: each at another place, in another colour."""
    x, y = 100 + 37 * i, 200 + 11 * i
    return x, y, OutRect(x, y, 1, 1, "raw", bytes((i + 1, 2 * i, 255)))


GLYPHS = [np.where(np.random.default_rng(n).random((18, 9, 1)) < 0.3, 255, 40)
          .astype(np.uint8).repeat(3, axis=2) for n in range(3)]


def _glyph(i: int) -> tuple[int, int, OutRect]:
    """The i-th typed character: one of 3 9x18 glyphs (two colours, raw), each next to the
    one before, as a line of text is typed."""
    x, y = 100 + 9 * i, 200
    return x, y, OutRect(x, y, 9, 18, "raw", GLYPHS[i % 3].tobytes())


async def one_pixel_changes(server: ServerProcess, binary: bool, *, deflate: bool = True,
                            change: Callable[[int], tuple[int, int, OutRect]] = _pixel
                            ) -> tuple[list[int], list[int]]:
    """The bytes each 1-pixel change (a 1x1 ``raw`` rect on a still 1920x1080 screen, or
    what ``change`` says) costs on the wire from the sharer to the server, and from the server
    to the viewer (``deflate``: which asked for deflated frames)."""
    sharer_proxy = await CountingProxy(server.screen_port).start()
    viewer_proxy = await CountingProxy(server.screen_port).start()
    sharer = await Client("127.0.0.1", "sharer", chat_port=server.chat_port,
                          screen_port=sharer_proxy.port, timeout=TIMEOUT).connect()
    viewer = await Client("127.0.0.1", "viewer", chat_port=server.chat_port,
                          screen_port=viewer_proxy.port, timeout=TIMEOUT).connect()
    try:
        out = await sharer.open_screen(binary=binary, deflate=deflate)
        await out.share(W, H)
        black = np.zeros((H, W, 4), np.uint8)
        await out.send_frame(W, H, [OutRect(0, 0, W, H, "zlib", encode_zlib(black))], key=True)
        screen = await viewer.open_screen(binary=binary, deflate=deflate)
        assert screen.link.conn.binary == binary
        assert screen.link.conn.deflate == (binary and deflate)
        await screen.watch((await find_share(viewer, "sharer", TIMEOUT))["id"])
        canvas = Canvas(W, H)
        await _next_picture(screen, canvas)
        assert canvas.complete
        ups, downs = [], []
        drawn = np.zeros((H, W), bool)
        for i in range(CHANGES):
            x, y, rect = change(i)
            up, down = sharer_proxy.up, viewer_proxy.down
            await out.send_frame(W, H, [rect], key=False)
            await _next_picture(screen, canvas)
            await _until_up(sharer_proxy, up + 1)
            ups.append(sharer_proxy.up - up)
            downs.append(viewer_proxy.down - down)
            box = canvas.pixels[y : y + rect.h, x : x + rect.w, :3]
            assert box.tobytes() == rect.data  # pixel-exact
            drawn[y : y + rect.h, x : x + rect.w] = True
        assert (canvas.pixels.any(axis=2) == drawn).all()  # and nothing else changed
        return ups, downs
    finally:
        await sharer.close()
        await viewer.close()
        await sharer_proxy.close()
        await viewer_proxy.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_one_pixel_change_costs_at_most_60_bytes_on_the_wire_with_tls(
        server: ServerProcess, binary: bool) -> None:
    ups, downs = run(one_pixel_changes(server, binary))
    up, down = statistics.median(ups), statistics.median(downs)
    print(f"\n1-pixel change, TLS, {'binary' if binary else 'JSON'} form: "
          f"sharer->server {up:.0f} B, server->viewer {down:.0f} B (per change: {ups}, {downs})")
    if binary:
        assert up <= MAX_BYTES_PER_CHANGE
        assert down <= MAX_BYTES_PER_CHANGE
    else:  # the JSON form is still understood, at its old price
        assert down > MAX_BYTES_PER_CHANGE


def test_a_glyph_typed_again_costs_few_bytes_with_deflate(server: ServerProcess) -> None:
    """Typing: the same few glyphs drawn again and again, each a 9x18 raw rect (486 B). A
    viewer with deflated frames gets each glyph seen before as a back-reference, and a sharer
    with them sends it so; without, the whole rect goes every time."""
    plain_up, plain = run(one_pixel_changes(server, True, deflate=False, change=_glyph))
    deflated_up, deflated = run(one_pixel_changes(server, True, deflate=True, change=_glyph))
    print(f"\n9x18 raw glyph, TLS, binary form: server->viewer {statistics.median(plain):.0f} B, "
          f"deflated {statistics.median(deflated):.0f} B (per glyph: {plain}, {deflated}); "
          f"sharer->server {plain_up}, deflated {deflated_up}")
    assert min(plain[3:]) > 486 and min(plain_up[3:]) > 486
    assert max(deflated[3:]) <= 80  # the glyphs seen before: a sixth of it, TLS included
    assert max(deflated_up[3:]) <= 80  # and from the sharer


def test_a_one_pixel_change_costs_no_more_deflated(server: ServerProcess) -> None:
    _, plain = run(one_pixel_changes(server, True, deflate=False))
    _, deflated = run(one_pixel_changes(server, True, deflate=True))
    print(f"\n1-pixel change, TLS, binary form: server->viewer {statistics.median(plain):.0f} B,"
          f" deflated {statistics.median(deflated):.0f} B (per change: {plain}, {deflated})")
    assert statistics.median(deflated) <= statistics.median(plain) + 2


def _binary(body: bytes) -> bytes:
    return struct.pack(">II", 4 + len(body), 0) + body


async def bad_binary_frames(server: ServerProcess) -> None:
    sharer = await Client("127.0.0.1", "sharer", chat_port=server.chat_port,
                          screen_port=server.screen_port, timeout=TIMEOUT).connect()
    viewer = await Client("127.0.0.1", "viewer", chat_port=server.chat_port,
                          screen_port=server.screen_port, timeout=TIMEOUT).connect()
    try:
        out = await sharer.open_screen()
        assert out.link.conn.binary
        await out.share(4, 4)
        await out.send_frame(4, 4, [OutRect(0, 0, 4, 4, "raw", bytes(48))], key=True)
        screen = await viewer.open_screen()
        await screen.watch((await find_share(viewer, "sharer", TIMEOUT))["id"])
        canvas = Canvas(4, 4)
        await _next_picture(screen, canvas)
        # an encoding code nobody knows: refused, as JSON's unknown "enc", not fatal
        v = bf.uvarint
        out.link.writer.write(_binary(b"\x01" + v(9) + b"\x00" + v(1) + v(1) + v(2) + v(1)
                                      + v(1) + b"\x3f" + v(3) + b"abc"))
        with pytest.raises(ServerError) as refused:
            await out._reply("none")
        assert refused.value.code == ErrorCode.BAD_MESSAGE
        assert "unknown encoding 63" in refused.value.message
        await out.send_frame(4, 4, [OutRect(1, 2, 1, 1, "raw", b"xyz")], key=False)
        await _next_picture(screen, canvas)
        assert bytes(canvas.pixels[2, 1]) == b"xyz"
        # a varint cut short: the stream is broken, the sharer is closed with bad_frame
        out.link.writer.write(_binary(b"\x01\x80"))
        await asyncio.wait_for(out.link.closed.wait(), TIMEOUT)
        assert isinstance(out.link.close_reason, ServerError)
        assert out.link.close_reason.code == ErrorCode.BAD_FRAME
        assert (await screen.next_frame(TIMEOUT)).type == "unshared"  # the viewer goes on
        await viewer.ping()
    finally:
        await sharer.close()
        await viewer.close()


def test_a_binary_sharers_bad_frames_get_the_errors_json_would(server: ServerProcess) -> None:
    run(bad_binary_frames(server))


async def deflate_bomb(server: ServerProcess) -> None:
    sharer, viewer = [await Client("127.0.0.1", name, chat_port=server.chat_port,
                                   screen_port=server.screen_port, timeout=TIMEOUT).connect()
                      for name in ("sharer", "viewer")]
    try:
        out = await sharer.open_screen()
        assert out.link.conn.deflate
        await out.share(64, 64)
        await out.send_frame(64, 64, [OutRect(0, 0, 64, 64, "raw", bytes(64 * 64 * 3))],
                             key=True)  # (12 kB: over 8 KiB, not deflated)
        screen = await viewer.open_screen()
        await screen.watch((await find_share(viewer, "sharer", TIMEOUT))["id"])
        canvas = Canvas(64, 64)
        await _next_picture(screen, canvas)
        await out.send_frame(64, 64, [OutRect(1, 2, 1, 1, "raw", b"xyz")], key=False)
        await _next_picture(screen, canvas)  # deflated, taken
        assert bytes(canvas.pixels[2, 1]) == b"xyz"
        # 9 kB of a raw rect in a few bytes: over what the server inflates from a client
        bomb = bf.frame_bytes(9, False, None, [bf.rect_head(0, 0, 64, 48, "raw", 9216)],
                              [bytes(9216)])
        out.link.writer.write(out.link.conn.deflated(bomb))
        await asyncio.wait_for(out.link.closed.wait(), TIMEOUT)
        assert isinstance(out.link.close_reason, ServerError)
        assert out.link.close_reason.code == ErrorCode.BAD_FRAME
        assert "inflates to more than 8192" in out.link.close_reason.message
        assert (await screen.next_frame(TIMEOUT)).type == "unshared"  # the viewer goes on
        await viewer.ping()
    finally:
        await sharer.close()
        await viewer.close()


def test_a_sharers_deflate_bomb_closes_it_with_bad_frame(server: ServerProcess) -> None:
    run(deflate_bomb(server))


async def two_viewers(server: ServerProcess) -> None:
    sharer, json_viewer, bin_viewer, deflate_viewer = [
        await Client("127.0.0.1", name, chat_port=server.chat_port,
                     screen_port=server.screen_port, timeout=TIMEOUT).connect()
        for name in ("sharer", "old", "new", "newer")]
    try:
        out = await sharer.open_screen()
        await out.share(4, 4)
        await out.send_frame(4, 4, [OutRect(0, 0, 4, 4, "raw", bytes(range(48)))], key=True)
        share = (await find_share(json_viewer, "sharer", TIMEOUT))["id"]
        screens = [await json_viewer.open_screen(binary=False),
                   await bin_viewer.open_screen(binary=True, deflate=False),
                   await deflate_viewer.open_screen(binary=True, deflate=True)]
        assert [s.link.conn.binary for s in screens] == [False, True, True]
        assert [s.link.conn.deflate for s in screens] == [False, False, True]
        for screen in screens:
            await screen.watch(share)
        got: list[list[Message]] = [[], [], []]

        async def both() -> None:
            for screen, into in zip(screens, got, strict=True):
                into.append(await screen.next_frame(TIMEOUT))

        await both()
        updates = [(4, 4, [OutRect(1, 1, 2, 1, "raw", b"abcdef")], False),
                   (4, 4, [OutRect(1, 1, 2, 1, "raw", b"abcdef")], False),  # deflated again
                   (4, 4, [OutRect(0, 0, 4, 4, "jpeg", encode_jpeg(np.zeros((4, 4, 4),
                                                                           np.uint8)))], False),
                   (4, 4, [OutRect(0, 0, 2, 2, "palette", bytes(1 + 3) + zlib.compress(
                       bytes(4))), OutRect(2, 2, 1, 1, "raw", b"abc")], False),
                   (8, 6, [OutRect(0, 0, 8, 6, "zlib", encode_zlib(np.zeros((6, 8, 4),
                                                                           np.uint8)))], True),
                   (8, 6, [OutRect(7, 5, 1, 1, "raw", b"xyz")], False),
                   (64, 48, [OutRect(0, 0, 64, 48, "raw", bytes(range(256)) * 36)], True),
                   (64, 48, [OutRect(5, 5, 1, 1, "raw", b"xyz")], False)]
        for w, h, rects, key in updates:
            if (w, h) != (4, 4) and key:
                await out.share(w, h)
            await out.send_frame(w, h, rects, key=key)
            await both()
        await out.send_cursor(Cursor(3, -2, Shape(1, 1, bytes(4))), with_shape=True)
        await out.send_cursor(Cursor(-5, 7, Shape(1, 1, bytes(4))), with_shape=False)
        for screen in screens:
            async with asyncio.timeout(TIMEOUT):
                while (at := screen.cursors.get(share)) is None or (at.x, at.y) != (-5, 7):
                    screen.cursor_changed.clear()
                    await screen.cursor_changed.wait()
        assert got[0] == got[1] == got[2]  # the same messages, whatever the form
        assert [(m["w"], m["h"], m["key"]) for m in got[1]] == [
            (4, 4, True), *[(4, 4, False)] * 4, (8, 6, True), (8, 6, False), (64, 48, True),
            (64, 48, False)]
        pictures = [Canvas(64, 48) for _ in screens]
        for canvas, msgs in zip(pictures, got, strict=True):
            for msg in msgs:
                canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
        assert (pictures[0].pixels == pictures[2].pixels).all()
        # deflated: the small lossless frames (raw, palette), not the jpeg nor the zlib one,
        # nor the raw one over DEFLATE_MAX (9 kB)
        assert [s.link.conn.inflated for s in screens] == [0, 0, 6]
    finally:
        for c in (sharer, json_viewer, bin_viewer, deflate_viewer):
            await c.close()


def test_json_binary_and_deflate_viewers_get_the_same_frames_and_pointer(server: ServerProcess
                                                                  ) -> None:
    run(two_viewers(server))


async def deflate_budget(server: ServerProcess) -> None:
    sharer, viewer = [await Client("127.0.0.1", name, chat_port=server.chat_port,
                                   screen_port=server.screen_port, timeout=TIMEOUT).connect()
                      for name in ("noisy", "watcher")]
    try:
        out = await sharer.open_screen(binary=True, deflate=False)
        await out.share(64, 48)
        await out.send_frame(64, 48, [OutRect(0, 0, 64, 48, "raw", bytes(9216))], key=True)
        screen = await viewer.open_screen(binary=True, deflate=True)
        await screen.watch((await find_share(viewer, "noisy", TIMEOUT))["id"])
        await screen.next_frame(TIMEOUT)
        canvas = Canvas(64, 48)
        rng = np.random.default_rng(7)
        start = asyncio.get_running_loop().time()
        frames = 40
        for _ in range(frames):  # 7 kB of noise each: deflatable, and costly to deflate
            noise = rng.integers(0, 256, (42, 56, 3), np.uint8)
            await out.send_frame(64, 48, [OutRect(0, 0, 56, 42, "raw", noise.tobytes())],
                                 key=False)
            msg = await screen.next_frame(TIMEOUT)  # each one delivered on its own
            canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
            assert (canvas.pixels[:42, :56] == noise).all()
        elapsed = asyncio.get_running_loop().time() - start
        deflated = screen.link.conn.inflated
        # what the budget allows: its burst, its rate over the time taken, one frame over
        allowed = (DEFLATE_BURST + DEFLATE_RATE * elapsed) / (42 * 56 * 3) + 1
        assert 1 <= deflated <= allowed < frames, (deflated, allowed)
    finally:
        await sharer.close()
        await viewer.close()


def test_the_relay_deflates_a_bounded_number_of_bytes_a_second_per_viewer(
        server: ServerProcess) -> None:
    """A sharer sending small noisy lossless frames (each one costs the relay ~0.3 ms to
    deflate, for every viewer) gets past its viewers' deflate budget: the rest goes as it
    is, pictures unchanged."""
    run(deflate_budget(server))
