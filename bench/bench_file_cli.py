"""Files as a user moves them: ``chatscreen send-file`` then ``chatscreen get-file`` of a file
of ``BENCH_FILES_MB`` (default 1000) MB, real processes, a real server (TLS) on loopback.

Reports each command's wall time and rate (send-file's includes hashing the file first,
get-file's the SHA-256 check and the rename) and the CPU the command used (its process);
bench_files.py measures the server side with a bare transfer link.

``python -m bench.bench_file_cli``
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.server import ServerProcess  # noqa: E402

MB = int(os.environ.get("BENCH_FILES_MB", "1000"))


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for i in range(0, size, 1 << 20):
            f.write(os.urandom(min(1 << 20, size - i)))


def timed(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run ``chatscreen COMMAND``: wall seconds, CPU seconds of the process, its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "chatscreen", *command], cwd=cwd,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> None:
    size = MB * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["CHATSCREEN_CONFIG_DIR"] = str(root / "config")
        path = root / "big.bin"
        make_file(path, size)
        limits = {"CHATSCREEN_MAX_FILE_SIZE": str(size), "CHATSCREEN_FILE_QUOTA": str(4 * size)}
        srv = ServerProcess(root / "data", env=limits).start()
        try:
            where = ["--server", f"127.0.0.1:{srv.chat_port}", "--screen-port",
                     str(srv.screen_port)]
            up, up_cpu, out = timed(["send-file", str(path), *where, "--user", "alice"], root)
            file_id = out.splitlines()[-1]
            copy = root / "copy.bin"
            down, down_cpu, _ = timed(["get-file", file_id, "--output", str(copy), *where,
                                       "--user", "bob"], root)
        finally:
            srv.stop()
        assert copy.stat().st_size == size
    print(f"{MB} MB, TLS, loopback ({os.cpu_count()} CPUs)")
    print("| command | wall s | MB/s | its CPU s |\n|---|---|---|---|")
    print(f"| send-file (hash + upload) | {up:.2f} | {MB / up:.0f} | {up_cpu:.2f} |")
    print(f"| get-file (download + check) | {down:.2f} | {MB / down:.0f} | {down_cpu:.2f} |")


if __name__ == "__main__":
    main()
