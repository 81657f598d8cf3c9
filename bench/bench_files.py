"""Files in chat: upload and download throughput on loopback, the server's memory meanwhile,
and the chat round trips of a 50-user room while two uploads run.

A real server (TLS, its defaults but for the size and quota limits) in a temporary
directory, a room of 50 users; one user's say -> echo round trips (every 50 ms) for 10 s
idle, then while two users each upload a file of ``BENCH_FILES_MB`` (default 1000) MB on
their transfer links (tests/helpers/filelink.py: 1 MiB chunks within the server's window);
then both download them (each uploader in a process of its own). The server's RSS is read
before, and its peak (VmHWM) after.
The clients are Python with TLS too: on a small machine they, not the server, may be what
limits the rates; and the disk's write-back does (uploads are written to it).

``python -m bench.bench_files``
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.attack import rss_kib  # noqa: E402
from tests.helpers.filelink import FileLink, sha256_file  # noqa: E402
from tests.helpers.server import ServerProcess  # noqa: E402

from chatscreen.client import Client  # noqa: E402

MB = int(os.environ.get("BENCH_FILES_MB", "1000"))
ROOM_USERS = 50  # the room's users, the measuring one included
PACE = 0.05  # s between round trips
IDLE_S = 10.0


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for i in range(0, size, len(block)):
            f.write((i.to_bytes(8, "big") + block[8:])[: size - i])


async def login(srv: ServerProcess, name: str) -> Client:
    c = await Client("127.0.0.1", name, chat_port=srv.chat_port, screen_port=srv.screen_port,
                     timeout=30).connect()
    await c.join("general")
    return c


async def round_trips(c: Client, until: Callable[[], bool]) -> list[float]:
    """say -> echo round trips every PACE s until ``until()`` (at least 20)."""
    loop = asyncio.get_running_loop()
    out: list[float] = []
    while not until() or len(out) < 20:
        start = loop.time()
        await c.say("general", "ping")
        out.append(loop.time() - start)
        await asyncio.sleep(PACE)
    return out


def p99(xs: list[float]) -> float:
    return 1e3 * sorted(xs)[min(len(xs) - 1, int(0.99 * len(xs)))]


async def download(link: FileLink, file_id: str) -> int:
    link.send("download", file=file_id)
    got = 0
    while True:
        m = await link.next(lambda m: m.type in ("file_data", "downloaded", "error"), 600)
        if m.type != "file_data":
            assert m.type == "downloaded", m.fields
            return got
        got += len(m.payload)


async def upload(chat_port: int, screen_port: int, name: str, path: Path, sha: str) -> int:
    """One user's upload (in a process of its own: see main), then its download; prints
    the seconds each took."""
    c = await Client("127.0.0.1", name, chat_port=chat_port, screen_port=screen_port,
                     timeout=30).connect()
    await c.join("general")
    link = await FileLink.open(c)
    t0 = time.perf_counter()
    done = await link.send_file(path, f"{name}.bin", sha256=sha, room="general")
    up_s = time.perf_counter() - t0
    assert done.type == "uploaded", done.fields
    t0 = time.perf_counter()
    got = await download(link, done["file"]["id"])
    down_s = time.perf_counter() - t0
    assert got == done["file"]["size"]
    print(up_s, down_s, flush=True)
    await link.close()
    await c.close()
    return 0


async def scenario(srv: ServerProcess, path: Path, size: int, sha: str) -> dict[str, float]:
    room = [await login(srv, f"u{i}") for i in range(ROOM_USERS)]
    loop = asyncio.get_running_loop()
    idle_until = loop.time() + IDLE_S
    idle = await round_trips(room[0], lambda: loop.time() > idle_until)
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_files", "upload", str(srv.chat_port),
        str(srv.screen_port), name, str(path), sha, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE) for name in ("alice", "carol")]
    outs = [asyncio.create_task(p.communicate()) for p in procs]
    busy = await round_trips(room[0], lambda: all(o.done() for o in outs))
    times = [tuple(map(float, (await o)[0].split())) for o in outs]
    assert all(len(t) == 2 for t in times), times
    for c in room:
        await c.close()
    up_s, down_s = max(t[0] for t in times), max(t[1] for t in times)
    return {"up": 2 * size / up_s / 1e6, "down": 2 * size / down_s / 1e6,
            "idle_p99": p99(idle), "busy_p99": p99(busy), "idle_n": len(idle),
            "busy_n": len(busy)}


def main() -> int:
    if sys.argv[1:2] == ["upload"]:
        chat, screen, name, file, sha = sys.argv[2:7]
        return asyncio.run(upload(int(chat), int(screen), name, Path(file), sha))
    size = MB * 1000 * 1000
    with tempfile.TemporaryDirectory(prefix="bench-files-", dir=Path.cwd()) as tmp:
        path = Path(tmp) / "big.bin"
        make_file(path, size)
        sha = sha256_file(path)  # (and the page cache warm)
        srv = ServerProcess(Path(tmp) / "data", "--max-file-size", str(size),
                            "--file-quota", str(2 * size),
                            env={"CHATSCREEN_MAX_CONNECTIONS_PER_ADDRESS": "200"}).start()
        try:
            assert srv.proc is not None
            before = rss_kib(srv.proc.pid)
            r = asyncio.run(scenario(srv, path, size, sha))
            peak = rss_kib(srv.proc.pid, "VmHWM")
        finally:
            srv.stop()
    print(f"{MB} MB files on loopback with TLS, Python clients (tests/helpers/filelink.py)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| two uploads at once, together | {r['up']:.0f} MB/s |")
    print(f"| then two downloads at once, together | {r['down']:.0f} MB/s |")
    print(f"| server RSS before / peak | {before / 1024:.0f} / {peak / 1024:.0f} MiB "
          f"(+{(peak - before) / 1024:.0f}) |")
    print(f"| chat round trip p99, {ROOM_USERS}-user room, idle ({r['idle_n']:.0f}) | "
          f"{r['idle_p99']:.1f} ms |")
    print(f"| ... while the two uploads run ({r['busy_n']:.0f}) | {r['busy_p99']:.1f} ms "
          f"({r['busy_p99'] / r['idle_p99']:.1f}x) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
