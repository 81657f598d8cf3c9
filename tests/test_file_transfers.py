"""Files through the client library and the command line, against the real server: real
files, real CLI processes (``python -m chatscreen send-file / get-file / chat``), a real
proxy that cuts the transfer link half way."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatscreen.client import Client
from chatscreen.client.files import FileError, FileInfo, Progress, download, upload
from chatscreen.errors import RemoteProtocolError
from chatscreen.protocol import Connection, Limits, Role
from tests.helpers.proxy import CuttableProxy
from tests.helpers.server import REPO, TIMEOUT, ServerProcess, run, running_server

STAMP = r"\[\d\d:\d\d:\d\d\]"
FILE_ID = r"[A-Za-z0-9_-]{16,32}"


def cli(srv: ServerProcess, *args: str, user: str = "alice", stdin: str = "",
        cwd: Path = REPO, screen_port: int | None = None) -> subprocess.CompletedProcess[str]:
    """``chatscreen COMMAND --server ... --user USER ARGS``, as a user runs it."""
    command, *rest = args
    return subprocess.run(
        [sys.executable, "-m", "chatscreen", command, "--server",
         f"127.0.0.1:{srv.chat_port}", "--screen-port", str(screen_port or srv.screen_port),
         "--user", user, *rest],
        input=stdin, capture_output=True, text=True, timeout=6 * TIMEOUT, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


async def login(srv: ServerProcess, name: str, *, screen_port: int | None = None,
                room: str | None = "general") -> Client:
    c = await Client("127.0.0.1", name, chat_port=srv.chat_port,
                     screen_port=screen_port or srv.screen_port, timeout=TIMEOUT).connect()
    if room is not None:
        await c.join(room)
    return c


@pytest.fixture
def small_files_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path / "data", "--max-file-size", "100000") as srv:
        yield srv


# -- the command line ----------------------------------------------------------------------


def test_send_file_then_get_file_round_trip(server: ServerProcess, tmp_path: Path) -> None:
    src = random_file(tmp_path / "report.bin", 3 * (1 << 20) + 4321)
    sent = cli(server, "send-file", str(src), "--room", "general")
    assert sent.returncode == 0, sent.stderr
    file_id = sent.stdout.splitlines()[-1]
    assert re.fullmatch(FILE_ID, file_id), sent.stdout  # the id alone on the last line
    assert "sent report.bin (3.2 MB) to #general" in sent.stderr
    out = tmp_path / "got" / "copy.bin"
    out.parent.mkdir()
    got = cli(server, "get-file", file_id, "--output", str(out), user="bob")
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[-1] == str(out)
    assert sha256(out) == sha256(src)
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.bin"]  # no .part left


def test_send_file_privately_and_refusals_are_one_clear_line(server: ServerProcess,
                                                             tmp_path: Path) -> None:
    src = random_file(tmp_path / "note.txt", 100)
    nobody = cli(server, "send-file", str(src), "--to", "nobody")
    assert nobody.returncode == 1 and nobody.stdout == ""
    assert nobody.stderr.strip().splitlines()[-1] == (
        "cannot send note.txt: 'nobody' is not connected")
    missing = cli(server, "send-file", str(tmp_path / "absent.txt"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"cannot read {tmp_path / 'absent.txt'}: No such file or directory")
    folder = cli(server, "send-file", str(tmp_path))
    assert folder.returncode == 1 and folder.stderr.strip() == (
        f"{tmp_path} is not a regular file")
    unknown = cli(server, "get-file", "A" * 22, cwd=tmp_path)
    assert unknown.returncode == 1
    assert not list(tmp_path.glob("*.part")), "a refused download leaves nothing behind"
    assert unknown.stderr.strip().splitlines()[-1] == (
        f"no such file: {'A' * 22} (no file has this id, or it is not yours to see)")


def test_send_file_over_the_limit_fails_before_uploading(small_files_server: ServerProcess,
                                                         tmp_path: Path) -> None:
    srv = small_files_server
    src = random_file(tmp_path / "big.iso", 150_000)
    out = cli(srv, "send-file", str(src))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines()[-1] == (  # said by the client: nothing sent
        "cannot send big.iso: file too large: 150.0 kB (150000 bytes); the server takes at "
        "most 100.0 kB (100000 bytes)")
    partial = srv.data_dir / "files" / "partial"
    assert not partial.exists() or not list(partial.iterdir())  # not a byte was stored
    fits = cli(srv, "send-file", str(random_file(tmp_path / "ok.bin", 100_000)))
    assert fits.returncode == 0, fits.stderr


class CountingProxy(CuttableProxy):
    """Counts what the server sends through it."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.down = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    downstream: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                if downstream:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass


def test_get_file_resumes_a_partial_file(server: ServerProcess, tmp_path: Path) -> None:
    src = random_file(tmp_path / "video.bin", 4 << 20)
    sent = cli(server, "send-file", str(src))
    assert sent.returncode == 0, sent.stderr
    file_id = sent.stdout.splitlines()[-1]
    out = tmp_path / "video-copy.bin"
    # what an interrupted download leaves: the first 3 MiB of the file, in OUT.part
    (tmp_path / "video-copy.bin.part").write_bytes(src.read_bytes()[: 3 << 20])

    async def fetch() -> tuple[subprocess.CompletedProcess[bytes], int]:
        proxy = CountingProxy(server.screen_port)
        await proxy.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "chatscreen", "get-file", file_id, "--output", str(out),
                "--server", f"127.0.0.1:{server.chat_port}", "--screen-port", str(proxy.port),
                "--user", "bob", cwd=REPO, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 6 * TIMEOUT)
            assert proc.returncode is not None
            return subprocess.CompletedProcess([], proc.returncode, stdout, stderr), proxy.down
        finally:
            await proxy.close()

    got, received = run(fetch())
    assert got.returncode == 0, got.stderr
    assert sha256(out) == sha256(src) and not (tmp_path / "video-copy.bin.part").exists()
    assert (1 << 20) < received < (1 << 20) + 200_000  # only the last MiB came (and TLS)


def test_get_file_saves_hostile_names_safely(server: ServerProcess, tmp_path: Path) -> None:
    names = {"../../escape.txt": "escape.txt", "/etc/passwd": "passwd", "CON": "_CON",
             ".bashrc": "bashrc", "a\u202eexe.txt": "aexe.txt", "..": None}
    ids = {}

    async def post() -> None:
        alice = await login(server, "alice")
        src = random_file(tmp_path / "content.txt", 1000)
        for name in names:
            ids[name] = (await upload(alice, src, room="general", name=name)).id
        await alice.close()

    run(post())
    here = tmp_path / "downloads" / "deep"
    here.mkdir(parents=True)
    for name, safe in names.items():
        got = cli(server, "get-file", ids[name], user="bob", cwd=here)
        assert got.returncode == 0, got.stderr
        saved = Path(got.stdout.splitlines()[-1])
        assert saved.parent == Path(".")
        assert saved.name == (safe or ids[name]), name
    assert sorted(p.name for p in here.iterdir()) == sorted(
        safe or ids[name] for name, safe in names.items())
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["deep"]
    # the same name again: never over the first
    again = cli(server, "get-file", ids["CON"], user="bob", cwd=here)
    assert again.stdout.splitlines()[-1] == "_CON (1)"
    assert again.stderr.splitlines()[-1].endswith(" to _CON (1)"), again.stderr  # where it went


# -- chat ------------------------------------------------------------------------------------


def test_chat_shows_files_and_sends_them_with_slash_send(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    src = random_file(tmp_path / "slides.pdf", 1234)
    first = cli(server, "chat", stdin=f"before\n/send {src}\nafter\n")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    file_line = re.compile(rf"{STAMP} alice: \[file ({FILE_ID})\] slides\.pdf \(1\.2 kB\)")
    shown = [m for line in lines if (m := file_line.fullmatch(line))]
    assert len(shown) == 1, first.stdout
    file_id = shown[0].group(1)
    assert f"* sent slides.pdf (1.2 kB): file {file_id}" in lines
    said = [line.partition(" ")[2] for line in lines if re.match(STAMP, line)]
    assert said == ["alice: before", f"alice: [file {file_id}] slides.pdf (1.2 kB)",
                    "alice: after"]
    # someone else sees it in the room's history, and fetches it with /get
    second = cli(server, "chat", user="bob", stdin=f"/get {file_id} {tmp_path / 'b.pdf'}\n")
    assert second.returncode == 0, second.stderr
    assert any(file_line.fullmatch(line) for line in second.stdout.splitlines())
    assert f"* saved slides.pdf (1.2 kB) to {tmp_path / 'b.pdf'}" in second.stdout.splitlines()
    assert sha256(tmp_path / "b.pdf") == sha256(src)


def test_slash_send_refused_stops_a_script(small_files_server: ServerProcess,
                                           tmp_path: Path) -> None:
    src = random_file(tmp_path / "big.bin", 200_000)
    out = cli(small_files_server, "chat", stdin=f"/send {src}\nnever sent\n")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("! cannot send big.bin: ")
    assert "never sent" not in out.stdout


# -- the library -----------------------------------------------------------------------------


def test_a_cut_transfer_link_resumes_where_the_server_stopped(server: ServerProcess,
                                                              tmp_path: Path) -> None:
    """Upload and download through a proxy that drops every connection once 8 MiB went
    through: each carries on from the bytes already there, not from the start."""
    size = 24 << 20
    src = random_file(tmp_path / "big.bin", size)

    async def scenario() -> tuple[FileInfo, list[tuple[str, int]], list[tuple[str, int]]]:
        proxy = await CuttableProxy(server.screen_port).start()
        alice = await login(server, "alice", screen_port=proxy.port)
        ups: list[tuple[str, int]] = []
        downs: list[tuple[str, int]] = []

        def watch(seen: list[tuple[str, int]], phase: str) -> Progress:
            cut: list[bool] = []

            def progress(kind: str, done: int, total: int) -> None:
                seen.append((kind, done))
                if kind == phase and done >= 8 << 20 and not cut:
                    cut.append(True)
                    proxy.cut()
            return progress

        try:
            info = await upload(alice, src, room="general", progress=watch(ups, "uploading"))
            before = proxy.connections
            await download(alice, info.id, tmp_path / "copy.bin",
                           progress=watch(downs, "downloading"))
            assert proxy.connections >= before + 2  # a cut, and a new link
        finally:
            await alice.close()
            await proxy.close()
        return info, ups, downs

    info, ups, downs = run(scenario())
    assert info.sha256 == sha256(src) and info.size == size
    assert sha256(tmp_path / "copy.bin") == info.sha256
    for seen, phase in ((ups, "uploading"), (downs, "downloading")):
        kinds = [k for k, _ in seen]
        assert "reconnecting" in kinds, kinds
        after = kinds.index("reconnecting")
        resumed = next(done for kind, done in seen[after:] if kind == phase)
        assert resumed >= 8 << 20, seen[after:]  # from where it was cut, not from 0


def test_empty_file_round_trip(server: ServerProcess, tmp_path: Path) -> None:
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    sent = cli(server, "send-file", str(src))
    assert sent.returncode == 0, sent.stderr
    out = tmp_path / "copy.txt"
    got = cli(server, "get-file", sent.stdout.splitlines()[-1], "--output", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == b""


def test_a_damaged_download_is_not_kept(server: ServerProcess, tmp_path: Path) -> None:
    """The server's copy rotted on its disk: the SHA-256 at the end differs, nothing is
    saved (no OUT, no OUT.part), exit 1; a stale partial longer than the file is no
    trouble either."""
    src = random_file(tmp_path / "data.bin", 300_000)
    sent = cli(server, "send-file", str(src))
    assert sent.returncode == 0, sent.stderr
    file_id = sent.stdout.splitlines()[-1]
    stale = tmp_path / "stale.bin"
    (tmp_path / "stale.bin.part").write_bytes(os.urandom(400_000))  # longer than the file
    got = cli(server, "get-file", file_id, "--output", str(stale))
    assert got.returncode == 0, got.stderr
    assert sha256(stale) == sha256(src)
    [obj] = [p for p in (server.data_dir / "files" / "objects").rglob("*") if p.is_file()]
    damaged = bytearray(obj.read_bytes())
    damaged[1000] ^= 0xFF
    obj.chmod(0o600)
    obj.write_bytes(bytes(damaged))
    out = tmp_path / "damaged.bin"
    bad = cli(server, "get-file", file_id, "--output", str(out))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        f"cannot get {file_id}: the download of {file_id} arrived damaged (SHA-256 differs); "
        "nothing was kept: try again")
    assert not out.exists() and not (tmp_path / "damaged.bin.part").exists()


def test_a_partial_that_is_a_link_is_not_followed(server: ServerProcess,
                                                  tmp_path: Path) -> None:
    """OUT.part planted as a symbolic link to another file: the download refuses to write
    through it, and that file is untouched."""
    src = random_file(tmp_path / "data.bin", 1000)
    sent = cli(server, "send-file", str(src))
    file_id = sent.stdout.splitlines()[-1]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / "out.bin.part")
    got = cli(server, "get-file", file_id, "--output", str(tmp_path / "out.bin"))
    assert got.returncode == 1
    assert got.stderr.strip().splitlines()[-1] == (
        f"cannot get {file_id}: cannot write {tmp_path / 'out.bin.part'}: it is a symbolic "
        "link (not followed)")
    assert victim.read_text() == "precious" and not (tmp_path / "out.bin").exists()


def with_terminal_stderr(args: list[str]) -> tuple[int, str, list[str]]:
    """Run ``chatscreen ARGS`` with stderr on a pty and stdout a pipe: its exit status,
    stdout, and what the terminal got, cut at each carriage return."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "chatscreen", *args],
                                stdout=subprocess.PIPE, stderr=follower, text=True, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        os.close(follower)
        terminal = b""
        with contextlib.suppress(OSError):  # EIO once the process is gone
            while chunk := os.read(leader, 65536):
                terminal += chunk
        stdout, _ = proc.communicate(timeout=6 * TIMEOUT)
    finally:
        os.close(leader)
    return proc.returncode, stdout, terminal.decode().replace("\r\n", "\n").split("\r")


def test_send_file_and_get_file_draw_a_progress_bar_on_a_terminal(
        server: ServerProcess, tmp_path: Path) -> None:
    """stderr a terminal (a pty), stdout a pipe: the bar is redrawn in place on the
    terminal, the id (the path) alone goes to stdout."""
    src = random_file(tmp_path / "big.bin", 20_000_000)
    where = ["--server", f"127.0.0.1:{server.chat_port}", "--screen-port",
             str(server.screen_port), "--user", "alice"]
    code, stdout, frames = with_terminal_stderr(["send-file", str(src), *where])
    assert code == 0, frames
    assert re.fullmatch(FILE_ID, stdout.strip())
    assert any(f.startswith("hashing big.bin [") for f in frames), frames
    last = [f for f in frames if f.startswith("sending big.bin [")][-1].split("\n")[0]
    assert "] 100%  20.0 MB / 20.0 MB" in last  # (then the rate, if it took 0.2 s or more)
    assert "sent big.bin (20.0 MB) to #general" in frames[-1]
    out = tmp_path / "copy.bin"
    code, stdout, frames = with_terminal_stderr(["get-file", stdout.strip(), "--output",
                                                 str(out), *where])
    assert code == 0, frames
    assert stdout.strip() == str(out)
    last = [f for f in frames if f.startswith("receiving big.bin [")][-1].split("\n")[0]
    assert "] 100%  20.0 MB / 20.0 MB" in last
    assert sha256(out) == sha256(src)


def test_an_upload_given_up_goes_on_from_the_servers_partial_next_time(
        server: ServerProcess, tmp_path: Path) -> None:
    """An upload stopped half way (Ctrl+C: the task cancelled, the link closed) and started
    again later by a new session of the same user: the server's offset is where the first
    stopped, and only the rest is sent."""
    size = 16 << 20
    src = random_file(tmp_path / "big.bin", size)

    async def scenario() -> tuple[int, FileInfo]:
        first = await login(server, "alice")
        half = asyncio.Event()

        def progress(kind: str, done: int, total: int) -> None:
            if kind == "uploading" and done >= 6 << 20:
                half.set()

        task = asyncio.ensure_future(upload(first, src, room="general", progress=progress))
        await asyncio.wait_for(half.wait(), TIMEOUT)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await first.close()
        second = await login(server, "alice")
        starts: list[int] = []
        info = await upload(second, src, room="general",
                            progress=lambda kind, done, total: starts.append(done)
                            if kind == "uploading" else None)
        await second.close()
        return starts[0], info

    start, info = run(scenario())
    assert start >= 6 << 20  # not from 0
    assert info.size == size and info.sha256 == sha256(src)


def peak_rss_since_reset() -> int:
    """VmHWM (bytes): the most this process held since reset_peak_rss()."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_transfers_hold_little_memory_whatever_the_file_size(server: ServerProcess,
                                                             tmp_path: Path) -> None:
    """A 90 MiB file up and down: this process's peak memory grows by a few MiB (the
    transport's buffer, a piece read ahead; messages read ahead), never by the file."""
    size = 90 << 20
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))

    async def scenario() -> tuple[int, int, FileInfo]:
        alice = await login(server, "alice", room="general")
        reset_peak_rss()
        base = peak_rss_since_reset()
        info = await upload(alice, src, room="general")
        up = peak_rss_since_reset() - base
        reset_peak_rss()
        base = peak_rss_since_reset()
        await download(alice, info.id, tmp_path / "copy.bin")
        down = peak_rss_since_reset() - base
        await alice.close()
        return up, down, info

    up, down, info = run(scenario())
    assert info.size == size
    print(f"peak memory growth: upload {up >> 20} MiB, download {down >> 20} MiB")
    assert up < 32 << 20, up
    assert down < 32 << 20, down


class Terminal:
    """A process on a pseudo-terminal: what it prints, what is typed to it."""

    def __init__(self, args: list[str]) -> None:
        self.leader, follower = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower,
                                     cwd=REPO, env={**os.environ, "TERM": "xterm",
                                                    "PYTHONPATH": str(REPO / "src")})
        os.close(follower)
        self.screen = ""

    def type(self, text: str) -> None:
        os.write(self.leader, text.encode())

    def wait_for(self, pattern: str, timeout: float = 3 * TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.screen)) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.screen!r}"
            ready, _, _ = select.select([self.leader], [], [], left)
            if ready:
                try:
                    self.screen += os.read(self.leader, 65536).decode(errors="replace")
                except OSError:  # the process is gone
                    raise AssertionError(f"no {pattern!r} in {self.screen!r}") from None
        return found.group()

    def close(self, timeout: float = 3 * TIMEOUT) -> int:
        """Its exit status, reading what it prints meanwhile (a full pty would block it)."""
        deadline = time.monotonic() + timeout
        try:
            while self.proc.poll() is None and time.monotonic() < deadline:
                ready, _, _ = select.select([self.leader], [], [], 0.1)
                if ready:
                    try:
                        self.screen += os.read(self.leader, 65536).decode(errors="replace")
                    except OSError:
                        break
            return self.proc.wait(max(0.0, deadline - time.monotonic()))
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.leader)


def test_on_a_terminal_chat_goes_on_during_slash_send_and_quit_stops_it(
        tmp_path: Path) -> None:
    """Uploads slowed to 100 kB/s (the server's budget): /send says it started (then a
    progress line every 2 s) while messages still go through; /quit stops the upload and
    says so."""
    src = random_file(tmp_path / "big.bin", 20_000_000)
    with running_server(tmp_path / "data", "--upload-rate-bytes", "100000") as srv:
        term = Terminal([sys.executable, "-m", "chatscreen", "chat", "--server",
                         f"127.0.0.1:{srv.chat_port}", "--screen-port", str(srv.screen_port),
                         "--user", "alice"])
        try:
            term.wait_for(r"#general>")
            term.type(f"/send {src}\r")
            term.wait_for(r"\* sending big\.bin \(20\.0 MB\)")
            term.type("still here\r")
            term.wait_for(rf"{STAMP} alice: still here")
            term.type("/quit\r")
            term.wait_for(r"! stopped sending big\.bin \(run it again to go on from where "
                          r"it stopped\)")
        finally:
            code = term.close()
        assert code == 0, term.screen


def test_get_file_preview_of_a_picture(server: ServerProcess, tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "photo.png"
    Image.new("RGB", (800, 600), (200, 30, 90)).save(picture)
    sent = cli(server, "send-file", str(picture))
    assert sent.returncode == 0, sent.stderr
    file_id = sent.stdout.splitlines()[-1]
    got = cli(server, "get-file", file_id, "--preview", user="bob", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[-1] == "photo.thumb.png"
    with Image.open(tmp_path / "photo.thumb.png") as thumb:
        assert thumb.format == "PNG" and max(thumb.size) <= 320 and thumb.size[0] > 0
    text = random_file(tmp_path / "notes.bin", 100)
    plain = cli(server, "send-file", str(text)).stdout.splitlines()[-1]
    none = cli(server, "get-file", plain, "--preview", cwd=tmp_path)
    assert none.returncode == 1
    assert none.stderr.strip().splitlines()[-1] == (
        f"cannot get {plain}: notes.bin has no preview (only pictures do)")
    assert not list(tmp_path.glob("*.part"))


class HostileScreenPort:
    """A screen port not to be trusted: it logs anyone in, says a file has ``size`` bytes,
    then answers a download with one file_data of ``data`` at ``offset``."""

    def __init__(self, size: int, data: bytes, offset: int = 0) -> None:
        self.port = 0
        self.server: asyncio.Server | None = None
        self.size, self.data, self.offset = size, data, offset

    async def start(self) -> HostileScreenPort:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(Role.SERVER, Limits())
        with contextlib.suppress(OSError, RemoteProtocolError):
            while data := await reader.read(65536):
                for msg in conn.receive_data(data):
                    if msg.type == "hello":
                        writer.write(conn.accept(user="alice", token="t", room="general"))
                    elif msg.type == "file_info":
                        writer.write(conn.send("file_info", rid=msg["rid"], file={
                            "id": msg["file"], "name": "x.bin", "size": self.size,
                            "mime": "application/octet-stream", "sha256": "0" * 64}))
                    elif msg.type == "download":
                        writer.write(conn.send("file_data", self.data, file=msg["file"],
                                               offset=self.offset, rid=msg["rid"]))
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.parametrize(("hostile", "error"), [
    # one frame of 32 MiB: transfer links take frames of one chunk at most
    (HostileScreenPort(64 << 20, b"x" * (32 << 20)),
     "transfer failed: the server broke the protocol: frame of "),
    # bytes that do not follow the partial
    (HostileScreenPort(1000, b"x" * 10, offset=500), "the server sent bytes from 500, "
     "expected 0"),
    # more bytes than the file has
    (HostileScreenPort(10, b"x" * 20), "the server sent more than the file's 10 bytes"),
])
def test_a_server_sending_nonsense_is_refused(hostile: HostileScreenPort, error: str,
                                              tmp_path: Path) -> None:
    """The download fails at once with one clear error (nonsense is not retried), holding
    no more than one chunk of it, and leaves no empty partial and no file."""
    with running_server(tmp_path / "data", tls=False) as srv:

        async def scenario() -> str:
            await hostile.start()
            c = await Client("127.0.0.1", "alice", chat_port=srv.chat_port,
                             screen_port=hostile.port, tls=False, timeout=TIMEOUT).connect()
            try:
                with pytest.raises(FileError) as refused:
                    await download(c, "A" * 22, tmp_path / "x.bin")
            finally:
                await c.close()
                await hostile.close()
            return str(refused.value)

        message = run(scenario())
    assert message.startswith(error), message
    assert not (tmp_path / "x.bin.part").exists() and not (tmp_path / "x.bin").exists()


def test_an_upload_goes_on_after_the_server_restarts(fixed_port_server: ServerProcess,
                                                     tmp_path: Path) -> None:
    """The server stops half way through an upload and starts again: the client's chat
    session comes back, the transfer link with it, and the upload goes on from the partial
    the server kept on disk."""
    srv = fixed_port_server
    size = 24 << 20
    src = random_file(tmp_path / "big.bin", size)

    async def scenario() -> tuple[FileInfo, list[tuple[str, int]]]:
        alice = await login(srv, "alice")
        seen: list[tuple[str, int]] = []
        half = asyncio.Event()

        def progress(kind: str, done: int, total: int) -> None:
            seen.append((kind, done))
            if kind == "uploading" and done >= 8 << 20:
                half.set()

        task = asyncio.ensure_future(upload(alice, src, room="general", progress=progress))
        try:
            await asyncio.wait_for(half.wait(), TIMEOUT)
            await asyncio.to_thread(srv.stop)
            await asyncio.to_thread(srv.start)
            info = await asyncio.wait_for(task, 6 * TIMEOUT)
        finally:
            task.cancel()
            await alice.close()
        return info, seen

    info, seen = run(scenario())
    assert info.sha256 == sha256(src) and info.size == size
    kinds = [k for k, _ in seen]
    assert "reconnecting" in kinds, kinds
    resumed = next(done for kind, done in seen[kinds.index("reconnecting"):]
                   if kind == "uploading")
    assert resumed >= 8 << 20, seen  # from the partial, not from 0
