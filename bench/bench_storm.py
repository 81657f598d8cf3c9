"""The connection storm alone: N clients connect, log in and join at the same moment.

``python -m bench.bench_storm [RUNS]`` from the repository root: each run on a fresh server
(the tree on ``PYTHONPATH``), with TLS unless ``BENCH_STORM_TLS=0``; ``BENCH_STORM_CLIENTS``
(default 1000), ``BENCH_STORM_MAX_HANDSHAKES`` (the server's, default its own),
``BENCH_LOAD_WORKERS`` (generator processes, default 1). Prints, per run, the
seconds until the last client had its join confirmed, the median, how many the server made
retry and how many never joined, the server's CPU and that of the generator(s). It is
``bench_load``'s storm (the same generator, the same clients), without the rest.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_load import (
    SERVER_ENV,
    WORKERS,
    Sampler,
    Worker,
    connect,
    percentile,
    proc_cpu,
    start_target,
)
from chatscreen.cli import raise_open_files_limit

CLIENTS = int(os.environ.get("BENCH_STORM_CLIENTS", "1000"))
TLS = os.environ.get("BENCH_STORM_TLS", "1") not in ("", "0")
# the server's max_handshakes (default: its own, 256): a smaller one shows what a storm
# larger than it does
MAX_HANDSHAKES = os.environ.get("BENCH_STORM_MAX_HANDSHAKES")
if MAX_HANDSHAKES:
    SERVER_ENV["CHATSCREEN_MAX_HANDSHAKES"] = MAX_HANDSHAKES


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    raise_open_files_limit()
    system = "chatscreen" if TLS else "chatscreen-notls"
    alls: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp_s:
        tmp = Path(tmp_s)
        workers = [Worker(i, tmp) for i in range(WORKERS)]
        try:
            for run_no in range(runs):
                with start_target(system, tmp) as target:
                    sampler = Sampler(target, workers)
                    gen0 = sum(proc_cpu(w.proc.pid) for w in workers)
                    t0 = time.monotonic()
                    times, failed, retries = connect(workers, target, "storm", CLIENTS,
                                                     f"s{run_no}u", sampler)
                    t1 = time.monotonic()
                    gen = sum(proc_cpu(w.proc.pid) for w in workers) - gen0
                    last = max(times) if times and not failed else float("inf")
                    alls.append(last)
                    print(f"run {run_no + 1}: all joined {last:.2f} s, p50 "
                          f"{percentile(times, 0.5):.2f} s, retries {retries}, failed "
                          f"{failed}, server CPU {sampler.cpu_pct(t0, t1):.0f} % ("
                          f"{sampler.cpu_pct(t0, t1) * (t1 - t0) / 100:.2f} s), generator "
                          f"CPU {gen:.2f} s, others {sampler.others_pct(t0, t1):.0f} %",
                          flush=True)
        finally:
            for w in workers:
                w.close()
    print(f"median all joined: {statistics.median(alls):.2f} s ({system}, {CLIENTS} clients)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
