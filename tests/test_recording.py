"""Recording a share (issue 18): who may record, what the sharer is told, and the MP4.

The protocol part with library clients against the real server; the recordings with real
CLI processes (``chatscreen view --record``, ``chatscreen share --record``) on Xvfb, the
typing workload of bench/screen_workloads.py on the screen, decoded back with PyAV.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog

import av
import numpy as np
import pytest
from bench.screen_workloads import read_marker

from chatscreen.client import Client, OutRect, ScreenChannel, ThreadedClient
from chatscreen.errors import ServerError
from chatscreen.gui.net import close_loop
from chatscreen.protocol import Message
from chatscreen.screen.capture import ScreenCapture
from chatscreen.screen.codec import Canvas, psnr
from chatscreen.screen.cursor import composite
from chatscreen.screen.pictures import RGB
from chatscreen.screen.sharing import frame_rects
from tests.helpers.gui import GuiHarness
from tests.helpers.server import REPO, TIMEOUT, ServerProcess, run, wait_for
from tests.test_gui import connected, gui  # noqa: F401


def connect(srv: ServerProcess, user: str) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT)


async def listed(c: Client, check: Callable[[], bool]) -> None:
    """Until ``check`` holds of the client's state (e.g. its share list), event by event."""
    if not check():
        await wait_for(c, lambda _m: check())


class Told:
    """What a sharer's channel was told of who records, each change waking the test."""

    def __init__(self, screen: ScreenChannel) -> None:
        self.lists: list[list[str]] = []
        self.changed = asyncio.Event()
        self.screen = screen
        screen.on_recording = self._on

    def _on(self, users: list[str]) -> None:
        self.lists.append(list(users))
        self.changed.set()

    async def until(self, users: list[str]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.screen.recorders != users:
                self.changed.clear()
                await self.changed.wait()


async def watching(c: Client, sharer: str) -> tuple[ScreenChannel, int]:
    await listed(c, lambda: c.share_of(sharer) is not None)
    share = c.share_of(sharer)
    assert share is not None
    screen = await c.open_screen()
    await screen.watch(share["id"])
    return screen, share["id"]


def test_only_viewers_the_sharer_allows_may_record_and_the_sharer_is_told(
        server: ServerProcess) -> None:
    """A viewer the sharer did not name gets a non-fatal ``forbidden`` (and can still
    watch); a named one records, the sharer gets ``recording`` with its name, every client
    sees ``recording: true`` in the share list; when the recorder stops, disconnects or
    unwatches, the sharer is told (an empty list) and the mark goes."""
    async def scenario() -> None:
        alice, bob, carol = [await connect(server, n).connect()
                             for n in ("alice", "bob", "carol")]
        a_screen = await alice.open_screen()
        told = Told(a_screen)
        try:
            share_id = await a_screen.share(64, 64, may_record=["bob"])
            c_screen, _ = await watching(carol, "alice")
            with pytest.raises(ServerError) as refused:
                await c_screen.record(share_id)
            assert refused.value.code == "forbidden"
            assert refused.value.message == "alice does not allow carol to record this share"
            b_screen, _ = await watching(bob, "alice")
            assert await b_screen.record(share_id) == ["bob"]
            await told.until(["bob"])
            await listed(carol, lambda: (carol.share_of("alice") or {}).get("recording") is True)
            assert await b_screen.record(share_id, active=False) == []
            await told.until([])  # the sharer is told it stopped
            await listed(carol, lambda: "recording" not in (carol.share_of("alice") or {}))
            assert await b_screen.record(share_id) == ["bob"]
            await told.until(["bob"])
            await b_screen.close()  # the recorder's connection goes: the recording ends
            await told.until([])
            assert told.lists == [["bob"], [], ["bob"], []]
            await c_screen.close()
        finally:
            await a_screen.close()
            for c in (alice, bob, carol):
                await c.close()

    run(scenario())


def test_recording_needs_watching_and_everyone_may_when_the_sharer_says_all(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        alice, bob = [await connect(server, n).connect() for n in ("alice", "bob")]
        a_screen = await alice.open_screen()
        told = Told(a_screen)
        try:
            share_id = await a_screen.share(64, 64, may_record="all")
            await listed(bob, lambda: bob.share_of("alice") is not None)
            b_screen = await bob.open_screen()
            with pytest.raises(ServerError) as not_watching:
                await b_screen.record(share_id)
            assert not_watching.value.code == "not_watching"
            with pytest.raises(ServerError) as no_share:
                await b_screen.record(share_id + 100)
            assert no_share.value.code == "no_such_share"
            await b_screen.watch(share_id)
            assert await b_screen.record(share_id) == ["bob"]
            await told.until(["bob"])
            await b_screen.unwatch(share_id)
            await told.until([])  # unwatching ends the recording
            await b_screen.close()
        finally:
            await a_screen.close()
            for c in (alice, bob):
                await c.close()

    run(scenario())


# -- the CLI: recordings --------------------------------------------------------------------

WORKLOAD = REPO / "bench" / "screen_workloads.py"
TICKS = 24  # characters typed (15 a second), then the workload is stopped (SIGSTOP)


class Proc:
    """A child process (a CLI command, the workload), its output read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc, self.name = proc, name
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=REPO, env={**os.environ, **(env or {})}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc, " ".join(args[2:4]))

    async def line(self, pattern: str, timeout: float = 3 * TIMEOUT) -> str:
        """The next line of its output that matches ``pattern`` (a regex)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    err = await self.proc.stderr.read() if self.proc.stderr else b""
                    raise AssertionError(f"{self.name} ended before {pattern!r}: {self.lines} "
                                         f"{err.decode(errors='replace')[-2000:]}")
                text = raw.decode().rstrip("\n")
                self.lines.append(text)
                if re.search(pattern, text):
                    return text

    async def finish(self, sig: int | None = None) -> tuple[int, str, str]:
        """(Signal and) wait for it to end: its status, the rest of stdout, and stderr."""
        if sig is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(3 * TIMEOUT):
            out, err = await self.proc.communicate()
        return self.proc.returncode or 0, out.decode(), err.decode()

    async def kill(self) -> None:
        """End it if it still runs (a test that failed half way), and reap it."""
        if self.proc.returncode is None:
            self.proc.kill()
            async with asyncio.timeout(TIMEOUT):
                await self.proc.communicate()


def cli(srv: ServerProcess, command: str, user: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "chatscreen", command, "--server",
            f"127.0.0.1:{srv.chat_port}", "--screen-port", str(srv.screen_port),
            "--user", user, *args]


def decoded(path: Path) -> list[tuple[float, RGB]]:
    """Every picture of an MP4 (PyAV), with its time in seconds."""
    out: list[tuple[float, RGB]] = []
    with av.open(str(path)) as container:
        for f in container.decode(video=0):
            assert f.pts is not None and f.time_base is not None
            pic = np.asarray(f.to_ndarray(format="rgb24"), np.uint8)
            out.append((float(f.pts * f.time_base), pic))
    return out


def screen_now(cap: ScreenCapture) -> RGB:
    """The screen with the pointer, RGB (what a viewer sees)."""
    return np.ascontiguousarray(cap.grab()[..., 2::-1])


def test_a_recording_of_typing_plays_back_close_to_the_screen(
        server: ServerProcess, xvfb_display: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/screen_workloads.py types on Xvfb (1920x1080) while alice shares it with
    ``--record`` and ``--allow-record bob``, and bob runs ``view --record --no-window``:
    alice's CLI says who records; both files decode (PyAV) at 1920x1080, every picture of
    bob's whose tick marker matches a screen grab taken meanwhile is within 35 dB PSNR of
    it, and the last (the share ended: bob's recording ends with it) of the final screen."""
    monkeypatch.setenv("DISPLAY", xvfb_display)
    mine, bobs = tmp_path / "alice.mp4", tmp_path / "bob.mp4"

    async def scenario() -> tuple[dict[int, RGB], RGB, str, str]:
        work = await Proc.start(sys.executable, str(WORKLOAD), "typing", "--rate", "15",
                                "--seconds", "60", "--max-seconds", "60")
        sharer = viewer = None
        eye = await connect(server, "eye").connect()
        cap = await asyncio.to_thread(ScreenCapture, 1)
        try:
            await work.line("^ready$")
            sharer = await Proc.start(*cli(server, "share", "alice", "--allow-record", "bob",
                                           "--record", str(mine)))
            await sharer.line(r"^Sharing 1920x1080")
            await sharer.line(r"^\N{BLACK CIRCLE} recording: alice$")  # its own recording
            viewer = await Proc.start(*cli(server, "view", "bob", "--from", "alice",
                                           "--record", str(bobs), "--no-window"))
            await viewer.line(r"^Recording alice's share \(1920x1080\) to .*bob\.mp4")
            await sharer.line(r"^\N{BLACK CIRCLE} recording: alice, bob$")
            e_screen, share_id = await watching(eye, "alice")
            canvas = Canvas(1920, 1080)
            assert work.proc.stdin is not None
            work.proc.stdin.write(b"go\n")
            grabs: dict[int, RGB] = {}
            last_tick = asyncio.ensure_future(work.line(rf"^tick {TICKS} "))
            while not last_tick.done():  # a few screens while it types, by tick
                pic = await asyncio.to_thread(screen_now, cap)
                grabs.setdefault(read_marker(pic), pic)
                with contextlib.suppress(TimeoutError):
                    msg = await e_screen.next_frame(timeout=0.05)
                    canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
            await last_tick
            work.proc.send_signal(signal.SIGSTOP)  # the screen stays as it is now
            final = await asyncio.to_thread(screen_now, cap)
            async with asyncio.timeout(3 * TIMEOUT):  # until the viewers have it all
                while not np.array_equal(
                        composite(canvas.pixels, e_screen.cursors.get(share_id)), final):
                    with contextlib.suppress(TimeoutError):
                        msg = await e_screen.next_frame(timeout=0.2)
                        canvas.apply(msg["w"], msg["h"], msg["key"], frame_rects(msg))
            await e_screen.close()
            rc, s_out, s_err = await sharer.finish(signal.SIGINT)
            assert rc == 0, s_err
            rc, v_out, v_err = await viewer.finish()  # the share ended: so does the viewer
            assert rc == 0, v_err
            return grabs, final, s_out, v_out
        finally:
            cap.close()
            await eye.close()
            for p in (work, sharer, viewer):
                if p is not None:
                    await p.kill()

    grabs, final, s_out, v_out = run(scenario())
    assert "alice stopped sharing" in v_out
    summary = re.search(r"Recorded 1920x1080, ([\d.]+) s, (\d+) frames to (.*)", v_out)
    assert summary is not None, v_out
    pictures = decoded(bobs)
    assert len(pictures) == int(summary[2]) and summary[3] == str(bobs)
    assert abs(pictures[-1][0] - float(summary[1])) < 0.1
    assert pictures[0][1].shape == (1080, 1920, 3)
    assert read_marker(final) >= TICKS
    assert psnr(pictures[-1][1], final) >= 35
    assert read_marker(pictures[-1][1]) == read_marker(final)
    matched = [psnr(pic, grabs[read_marker(pic)]) for _, pic in pictures
               if read_marker(pic) in grabs]
    assert len(matched) >= 3 and min(matched) >= 35, matched
    assert [t for t, _ in pictures] == sorted(t for t, _ in pictures)
    mine_pictures = decoded(mine)  # the sharer's own recording: complete and playable too
    assert re.search(r"Recorded 1920x1080, [\d.]+ s, \d+ frames to .*alice\.mp4", s_out)
    assert psnr(mine_pictures[-1][1], final) >= 35


def test_a_viewer_the_sharer_did_not_allow_gets_the_error_and_no_file(
        server: ServerProcess, tmp_path: Path) -> None:
    """``view --record`` by someone the sharer did not name: exit 1 with the server's
    reason, before anything is written; the sharer is told of no recording."""
    out = tmp_path / "carol.mp4"

    async def scenario() -> tuple[int, str, str, list[str]]:
        alice = await connect(server, "alice").connect()
        a_screen = await alice.open_screen()
        try:
            await a_screen.share(64, 64, may_record=["bob"])
            await send_picture(a_screen, 64, 64, 0)
            viewer = await Proc.start(*cli(server, "view", "carol", "--from", "alice",
                                           "--record", str(out), "--no-window"))
            rc, stdout, stderr = await viewer.finish()
            await alice.ping()  # anything the server told alice came before this answer
            return rc, stdout, stderr, a_screen.recorders
        finally:
            await a_screen.close()
            await alice.close()

    rc, stdout, stderr, recorders = run(scenario())
    assert (rc, stdout, stderr.strip()) == (1, "", "alice does not allow carol to record "
                                                    "this share")
    assert not out.exists() and recorders == []


def test_recording_never_overwrites_a_file(server: ServerProcess, tmp_path: Path) -> None:
    """``--record`` to a file that exists: exit 1 saying so, the file untouched (checked
    before connecting)."""
    out = tmp_path / "kept.mp4"
    out.write_bytes(b"precious")
    for extra in (["view", "bob", "--no-window"], ["share", "alice"]):
        done = subprocess.run([*cli(server, extra[0], extra[1], *extra[2:]), "--record",
                               str(out)], capture_output=True, text=True, cwd=REPO,
                              timeout=3 * TIMEOUT)
        assert (done.returncode, done.stderr.strip()) == (
            1, f"{out} exists: record to a new file (nothing was changed)")
    assert out.read_bytes() == b"precious"


async def send_picture(screen: ScreenChannel, w: int, h: int, n: int) -> RGB:
    """A key frame of a w x h picture made from ``n`` (raw RGB): what a viewer shows."""
    pic = np.zeros((h, w, 3), np.uint8)
    pic[..., 0] = np.arange(w) * 3 + n * 20  # smooth: 4:2:0 keeps it (w <= 65)
    pic[..., 1] = np.arange(h)[:, None] * 5
    pic[..., 2] = 200 if n % 2 else 40
    await screen.send_frame(w, h, [OutRect(0, 0, w, h, "raw", pic.tobytes())], key=True)
    return pic


@pytest.mark.parametrize(("window", "sig"), [(False, signal.SIGINT), (False, signal.SIGTERM),
                                           (True, signal.SIGTERM), (True, signal.SIGINT)])
def test_stopping_the_recorder_by_a_signal_leaves_a_playable_file(
        server: ServerProcess, tmp_path: Path, request: pytest.FixtureRequest,
        window: bool, sig: int) -> None:
    """``view --record`` with the window (on Xvfb) or ``--no-window``, stopped by Ctrl+C
    (SIGINT) or SIGTERM: exit 0, the summary printed, the sharer told the recording ended,
    and the MP4 complete: it decodes (odd size: coded one larger), its picture is the one
    shown (the newest: the one before it never reached the viewer), stamped again at the
    stop."""
    out = tmp_path / "rec.mp4"
    w, h = 65, 49
    env = {"DISPLAY": request.getfixturevalue("xvfb_display")} if window else {}

    async def scenario() -> tuple[RGB, RGB, str]:
        alice = await connect(server, "alice").connect()
        a_screen = await alice.open_screen()
        told = Told(a_screen)
        viewer = None
        try:
            await a_screen.share(w, h, may_record="all")
            first = await send_picture(a_screen, w, h, 0)
            last = await send_picture(a_screen, w, h, 1)
            await a_screen.share(w, h, may_record="all")  # answered after the frames came
            viewer = await Proc.start(*cli(server, "view", "bob", "--from", "alice",
                                           "--record", str(out),
                                           *([] if window else ["--no-window"])), env=env)
            await viewer.line(r"^Recording alice's share \(65x49\) to .*rec\.mp4")
            await told.until(["bob"])
            rc, stdout, stderr = await viewer.finish(sig)
            assert rc == 0, stderr
            await told.until([])  # the sharer sees the recording end
            return first, last, stdout
        finally:
            if viewer is not None:
                await viewer.kill()
            await a_screen.close()
            await alice.close()

    first, last, stdout = run(scenario())
    summary = re.search(r"Recorded 65x49, ([\d.]+) s, (\d+) frames to (.*)", stdout)
    assert summary is not None, stdout
    pictures = decoded(out)
    assert len(pictures) == int(summary[2]) == 2  # the picture, and again at the stop
    assert pictures[-1][1].shape == (50, 66, 3)
    for _, pic in pictures:
        assert psnr(pic[:h, :w], last) >= 35
        assert psnr(pic[:h, :w], first) < 30
    assert pictures[-1][0] == pytest.approx(float(summary[1]), abs=0.051)  # (printed .1f)
    assert pictures[-1][0] > pictures[0][0] == 0


# -- the desktop app ------------------------------------------------------------------------


def test_the_app_records_a_share_it_watches_when_the_sharer_allows(
        gui: GuiHarness, server: ServerProcess, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Screen tab's Record button (the file dialog answered by the test): refused while
    the sharer allows nobody (said under the picture, watching goes on, no file); once the
    sharer allows alice, recording starts, the sharer is told, the share list marks the
    share "● recorded"; Stop Recording completes a playable file of the picture."""
    g = gui
    out = tmp_path / "from-the-app.mp4"
    monkeypatch.setattr(filedialog, "asksaveasfilename", lambda **_kw: str(out))
    painter = ThreadedClient("127.0.0.1", "painter", chat_port=server.chat_port,
                             screen_port=server.screen_port, timeout=TIMEOUT)
    screens: list[ScreenChannel] = []
    w, h = 64, 48

    async def share(c: Client) -> RGB:
        screen = await c.open_screen()
        screens.append(screen)
        await screen.share(w, h)
        return await send_picture(screen, w, h, 3)

    try:
        painter.connect().result(TIMEOUT)
        connected(g, server, "alice")
        tab = g.app.screen_tab
        g.select_tab("Screen Share")
        picture = painter.call(share).result(TIMEOUT)
        g.wait_for(lambda: tab.selected_label().startswith("▣ painter"), "the share")
        g.click(tab.watch_button)
        g.wait_for(lambda: tab.composer is not None and tab.composer.complete, "the picture")
        g.click(tab.record_button)
        g.wait_for(lambda: tab.record_status == "painter does not allow alice to record "
                   "this share", "the refusal, said")
        assert str(tab.record_button.cget("text")) == "Record…" and not out.exists()
        g.wait_for(lambda: tab.composer is not None and tab.composer.complete, "watching on")

        painter.run(screens[0].share(w, h, may_record=["alice"])).result(TIMEOUT)
        g.click(tab.record_button)
        g.wait_for(lambda: tab.record_status == f"● Recording to {out}", "recording")
        g.wait_for(lambda: screens[0].recorders == ["alice"], "the sharer told")
        g.wait_for(lambda: tab.selected_label().endswith("64x48  ·  ● recorded"),
                   "the share marked as recorded")
        assert str(tab.record_button.cget("text")) == "Stop Recording"
        g.click(tab.record_button)
        g.wait_for(lambda: tab.record_status.startswith("Recorded 64x48, "), "the file done")
        g.wait_for(lambda: screens[0].recorders == [], "the sharer told it ended")
        assert str(tab.record_button.cget("text")) == "Record…"
    finally:
        for screen in screens:
            painter.run(screen.close()).result(TIMEOUT)
        painter.close()
        close_loop(painter)
    pictures = decoded(out)
    assert pictures and psnr(pictures[-1][1][:h, :w], picture) >= 35


def test_a_viewer_toggling_its_recording_does_not_flood_everyone_with_share_lists(
        server: ServerProcess) -> None:
    """Recording on and off 41 times as fast as the server answers: the sharer is told
    each change, but everyone else's share list (the ``recording`` mark) goes out at most
    every 0.5 s, and ends right."""
    async def scenario() -> tuple[int, float, int]:
        alice, bob, carol = [await connect(server, n).connect()
                             for n in ("alice", "bob", "carol")]
        a_screen = await alice.open_screen()
        told = Told(a_screen)
        try:
            await alice.join("general")
            await carol.join("general")
            share_id = await a_screen.share(64, 64, may_record="all")
            await listed(carol, lambda: carol.share_of("alice") is not None)
            b_screen, _ = await watching(bob, "alice")
            await alice.say("general", "start")  # carol's events so far: read past them
            await wait_for(carol, lambda m: m.type == "message" and m["text"] == "start")
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(41):
                await b_screen.record(share_id, active=i % 2 == 0)
            await alice.say("general", "done")  # handled after every toggle
            lists = 0

            def counted(until: Callable[[Message], bool]) -> Callable[[Message], bool]:
                def check(m: Message) -> bool:
                    nonlocal lists
                    lists += m.type == "shares"
                    return until(m)
                return check

            await wait_for(carol, counted(lambda m: m.type == "message"
                                          and m["text"] == "done"))
            if (carol.share_of("alice") or {}).get("recording") is not True:
                await wait_for(carol, counted(lambda _m: (carol.share_of("alice") or {}
                                                          ).get("recording") is True))
            elapsed = loop.time() - start
            await told.until(["bob"])
            await b_screen.close()
            return lists, elapsed, len(told.lists)
        finally:
            await a_screen.close()
            for c in (alice, bob, carol):
                await c.close()

    lists, elapsed, changes = run(scenario())
    assert changes >= 41  # the sharer: every change
    assert lists <= 2 + elapsed / 0.5, (lists, elapsed)


def test_leave_to_record_given_to_a_guest_is_not_the_next_guests_of_that_name(
        server: ServerProcess) -> None:
    """``may_record: ["bob"]`` while guest bob is online means that guest: once it is gone,
    another guest taking the name may watch (the share is for anyone) but not record."""
    async def scenario() -> None:
        alice, bob = [await connect(server, n).connect() for n in ("alice", "bob")]
        a_screen = await alice.open_screen()
        told = Told(a_screen)
        try:
            share_id = await a_screen.share(64, 64, may_record=["bob"])
            await listed(bob, lambda: bob.share_of("alice") is not None)
            await bob.close()
            new_bob = await connect(server, "bob").connect()  # another guest, same name
            nb_screen, _ = await watching(new_bob, "alice")
            with pytest.raises(ServerError) as refused:
                await nb_screen.record(share_id)
            assert refused.value.code == "forbidden"
            assert told.lists == []
            await nb_screen.close()
            await new_bob.close()
        finally:
            await a_screen.close()
            await alice.close()

    run(scenario())


def test_the_sharers_cli_says_who_records_and_when_it_ends(
        server: ServerProcess, xvfb_display: str) -> None:
    """``chatscreen share --allow-record bob``: a line when bob starts recording, and one
    when nobody records any more."""
    async def scenario() -> None:
        sharer = await Proc.start(*cli(server, "share", "alice", "--allow-record", "bob"),
                                  env={"DISPLAY": xvfb_display})
        bob = await connect(server, "bob").connect()
        try:
            await sharer.line(r"^Sharing ")
            b_screen, share_id = await watching(bob, "alice")
            await b_screen.record(share_id)
            await sharer.line(r"^\N{BLACK CIRCLE} recording: bob$")
            await b_screen.record(share_id, active=False)
            await sharer.line(r"^\N{WHITE CIRCLE} recording stopped: nobody records your "
                              r"share now$")
            await b_screen.close()
            rc, _, err = await sharer.finish(signal.SIGINT)
            assert rc == 0, err
        finally:
            await bob.close()
            await sharer.kill()

    run(scenario())


def test_a_recording_goes_on_into_the_same_file_across_a_server_restart(
        fixed_port_server: ServerProcess, xvfb_display: str, tmp_path: Path) -> None:
    """The server restarts while bob records alice's share: both CLIs come back by
    themselves, bob asks to record again (alice's CLI says so again), and the one file
    holds the pictures from before and after, complete once bob stops."""
    server = fixed_port_server
    out = tmp_path / "across.mp4"
    again: list[ServerProcess] = []

    async def scenario() -> tuple[str, float]:
        sharer = await Proc.start(*cli(server, "share", "alice", "--allow-record", "bob"),
                                  env={"DISPLAY": xvfb_display})
        viewer = None
        try:
            await sharer.line(r"^Sharing ")
            viewer = await Proc.start(*cli(server, "view", "bob", "--from", "alice",
                                           "--record", str(out), "--no-window"))
            await viewer.line(r"^Recording alice's share")
            await sharer.line(r"^\N{BLACK CIRCLE} recording: bob$")
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.to_thread(server.stop)
            again.append(ServerProcess(server.data_dir, chat_port=server.chat_port,
                                       screen_port=server.screen_port))
            await asyncio.to_thread(again[0].start)
            await sharer.line(r"^\N{BLACK CIRCLE} recording: bob$")  # asked again
            lasted = loop.time() - start  # at least, when the signal goes
            rc, stdout, stderr = await viewer.finish(signal.SIGINT)
            assert rc == 0, stderr
            return stdout, lasted
        finally:
            for p in (sharer, viewer):
                if p is not None:
                    await p.kill()

    try:
        stdout, lasted = run(scenario())
    finally:
        for srv in again:
            srv.stop()
    summary = re.search(r"Recorded 1920x1080, ([\d.]+) s, (\d+) frames", stdout)
    assert summary is not None, stdout
    pictures = decoded(out)
    assert len(pictures) == int(summary[2]) >= 2
    assert pictures[-1][0] >= lasted  # from before the restart to the stop


def test_a_share_that_changes_size_is_recorded_at_its_first_size(tmp_path: Path) -> None:
    """An MP4 stream has one size: pictures of a new size (a sharer's screen resized) are
    scaled to the first one; a recorder that got no picture writes no file."""
    from PIL import Image

    from chatscreen.screen.recording import Recorder

    nothing = Recorder(tmp_path / "none.mp4")
    assert nothing.close() is None and not (tmp_path / "none.mp4").exists()
    out = tmp_path / "resized.mp4"
    rec = Recorder(out)
    small = np.zeros((48, 64, 3), np.uint8)
    small[..., 1] = 200
    big = np.zeros((96, 128, 3), np.uint8)
    big[..., 0] = np.arange(128) * 2  # a smooth gradient, then scaled down
    big[..., 2] = 90
    rec.update(small, None, None, at=10.0)
    rec.update(big, None, None, at=10.5)
    stats = rec.close(at=11.0)
    assert stats is not None and (stats.w, stats.h) == (128, 96) and stats.seconds == 1.0
    pictures = decoded(out)
    assert {p.shape for _, p in pictures} == {(48, 64, 3)} and len(pictures) >= 2
    want = np.asarray(Image.fromarray(big).resize((64, 48), Image.Resampling.BILINEAR))
    assert psnr(pictures[-1][1], want) >= 30  # (the small one may be merged into it)
    assert (pictures[0][0], pictures[-1][0]) == (0.0, 1.0)
