"""Where the bytes of a workload go: per update, which rects, which encodings, how big.

Runs ``bench/screen_workloads.py`` on a private 1920x1080 Xvfb, captures it ~30 times a
second in this process and feeds the captures to :class:`~chatscreen.screen.encoders.ScreenEncoder`
(full comparison, no X DAMAGE hint: the tile diff decides what is sent, as with the hint).
Prints bytes/s, bytes per update and, per encoding, rects, bytes and mean rect area.

    python -m bench.bench_rects typing [seconds]
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.xvfb import run_xvfb  # noqa: E402

from chatscreen.screen.capture import ScreenCapture  # noqa: E402
from chatscreen.screen.encoders import ScreenEncoder  # noqa: E402

SCRIPT = Path(__file__).with_name("screen_workloads.py")
RATE = 30.0
SHOW = os.environ.get("BENCH_RECTS_SHOW") == "1"  # print every rect of a tile or more
MARKER = (1536, 1056)  # the tick marker's top left (bench/screen_workloads.py), counted apart


def run(workload: str, seconds: float) -> None:
    with run_xvfb() as display:
        env = dict(os.environ, DISPLAY=display)
        proc = subprocess.Popen([sys.executable, str(SCRIPT), workload, "--seconds",
                                 str(seconds + 2)], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdin is not None
            while proc.stdout.readline().strip() != "ready":
                pass
            os.environ["DISPLAY"] = display
            cap = ScreenCapture(with_cursor=False)
            enc = ScreenEncoder(encoding="auto")
            enc.encode(cap.grab(), key=True)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            per_enc: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
            sizes: list[int] = []
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < seconds:
                n += 1
                due = start + n / RATE
                time.sleep(max(0.0, due - time.monotonic()))
                up = enc.encode(cap.grab())
                if up is None:
                    continue
                sizes.append(up.size)
                for r in up.regions:
                    marker = r.x >= MARKER[0] and r.y >= MARKER[1]
                    s = per_enc[r.enc + ("/marker" if marker else "")]
                    if SHOW and r.w * r.h >= 4096:
                        print(f"  {r.enc} {r.x},{r.y} {r.w}x{r.h} {len(r.data)} B")
                    s[0] += 1
                    s[1] += len(r.data)
                    s[2] += r.w * r.h
            elapsed = time.monotonic() - start
            cap.close()
            enc.close()
        finally:
            proc.kill()
            proc.wait()
    total = sum(sizes)
    print(f"{workload}: {len(sizes)} updates in {elapsed:.1f} s, {total / elapsed / 1000:.1f} "
          f"kB/s, {total / max(1, len(sizes)):.0f} B/update")
    for name, (count, size, area) in sorted(per_enc.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:8s} {count:6d} rects {size / 1000:9.1f} kB  {size / count:7.0f} B/rect"
              f"  {area / count:8.0f} px/rect")


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "typing",
        float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)
