"""Files in chat: upload and download throughput on loopback, the server's memory meanwhile,
and a chat user's round trips during the upload.

A real server (TLS, its defaults but for the size and quota limits) in a temporary
directory; one user uploads a file of ``BENCH_FILES_MB`` (default 1000) MB on a transfer
link (tests/helpers/filelink.py: 1 MiB chunks within the server's window), then downloads
it; another user's say -> echo round trips run all through the upload. The server's RSS is
read before, and its peak (VmHWM) after. The client is Python with TLS too: on a small
machine it, not the server, may be what limits the rate.

``python -m bench.bench_files``
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.attack import rss_kib  # noqa: E402
from tests.helpers.filelink import FileLink, sha256_file  # noqa: E402
from tests.helpers.server import ServerProcess  # noqa: E402

from chatscreen.client import Client  # noqa: E402

MB = int(os.environ.get("BENCH_FILES_MB", "1000"))


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


async def scenario(srv: ServerProcess, path: Path, size: int, sha: str) -> dict[str, float]:
    alice, bob = await login(srv, "alice"), await login(srv, "bob")
    link = await FileLink.open(alice)
    loop = asyncio.get_running_loop()
    rtts: list[float] = []
    t0 = time.perf_counter()
    upload = asyncio.create_task(link.send_file(path, "big.bin", sha256=sha,
                                                  room="general"))
    while not upload.done():
        start = loop.time()
        await bob.say("general", "ping")
        rtts.append(loop.time() - start)
        await asyncio.sleep(0.05)
    done = await upload
    up_s = time.perf_counter() - t0
    assert done.type == "uploaded", done.fields
    t0 = time.perf_counter()
    link.send("download", file=done["file"]["id"])
    got = 0
    while True:
        m = await link.next(lambda m: m.type in ("file_data", "downloaded", "error"), 600)
        if m.type != "file_data":
            break
        got += len(m.payload)
    down_s = time.perf_counter() - t0
    assert m.type == "downloaded" and got == size, m.fields
    await link.close()
    for c in (alice, bob):
        await c.close()
    rtts.sort()
    return {"up": size / up_s / 1e6, "down": size / down_s / 1e6,
            "rtt_p50": 1e3 * rtts[len(rtts) // 2], "rtt_max": 1e3 * rtts[-1],
            "rtts": len(rtts)}


def main() -> int:
    size = MB * 1000 * 1000
    with tempfile.TemporaryDirectory(prefix="bench-files-", dir=Path.cwd()) as tmp:
        path = Path(tmp) / "big.bin"
        make_file(path, size)
        sha = sha256_file(path)  # (and the page cache warm)
        srv = ServerProcess(Path(tmp) / "data", "--max-file-size", str(size),
                            "--file-quota", str(2 * size)).start()
        try:
            assert srv.proc is not None
            before = rss_kib(srv.proc.pid)
            r = asyncio.run(scenario(srv, path, size, sha))
            peak = rss_kib(srv.proc.pid, "VmHWM")
        finally:
            srv.stop()
    print(f"{MB} MB file on loopback with TLS, Python client (tests/helpers/filelink.py)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| upload | {r['up']:.0f} MB/s |")
    print(f"| download | {r['down']:.0f} MB/s |")
    print(f"| server RSS before / peak | {before / 1024:.0f} / {peak / 1024:.0f} MiB "
          f"(+{(peak - before) / 1024:.0f}) |")
    print(f"| another user's chat round trip during the upload, p50 / max "
          f"({r['rtts']:.0f}) | {r['rtt_p50']:.1f} / {r['rtt_max']:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
