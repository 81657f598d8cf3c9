"""A fan-out past the server's ceiling: does the send budget bound the send buffers?

``python -m bench.bench_overload [RUNS]`` from the repository root: each run on a fresh server
(the tree on ``PYTHONPATH``, TLS unless ``BENCH_OVERLOAD_TLS=0``), ``BENCH_OVERLOAD_CLIENTS``
(default 1000) clients in one room, every client sending in turn at ``BENCH_OVERLOAD_RATE``
messages/s in all (default 4000: 4 M deliveries/s, about twice what the server delivers with
TLS on 2 cores) for ``BENCH_OVERLOAD_SECONDS`` (default 5). The generator's clients are the
slow readers: they read what they can. Prints, per run, the send buffers' peak
(``chatscreen_send_buffered_peak_bytes``, exact) and the largest total sampled every 0.25 s
(``chatscreen_send_buffer_bytes{stat="total"}``) against the budget (32 MiB unless
``CHATSCREEN_SEND_BUDGET`` is set), the clients cut, deliveries/s, latency and server RSS.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.bench_load import (
    SERVER_ENV,
    WORKERS,
    Sampler,
    Worker,
    close_all,
    connect,
    metrics,
    proc_mem_kb,
    run,
    start_target,
    window,
)
from chatscreen.cli import raise_open_files_limit

CLIENTS = int(os.environ.get("BENCH_OVERLOAD_CLIENTS", "1000"))
RATE = float(os.environ.get("BENCH_OVERLOAD_RATE", "4000"))
SECONDS = float(os.environ.get("BENCH_OVERLOAD_SECONDS", "5"))
TLS = os.environ.get("BENCH_OVERLOAD_TLS", "1") not in ("", "0")
if os.environ.get("CHATSCREEN_SEND_BUDGET"):
    SERVER_ENV["CHATSCREEN_SEND_BUDGET"] = os.environ["CHATSCREEN_SEND_BUDGET"]
MB = 1e6
TOO_SLOW = 'chatscreen_disconnects_total{reason="too_slow"}'


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    raise_open_files_limit()
    system = "chatscreen" if TLS else "chatscreen-notls"
    peaks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp_s:
        tmp = Path(tmp_s)
        workers = [Worker(i, tmp) for i in range(WORKERS)]
        try:
            for run_no in range(runs):
                with start_target(system, tmp) as target:
                    assert target.metrics_port is not None
                    sampler = Sampler(target, workers, with_metrics=True)
                    times, failed, _ = connect(workers, target, "over", CLIENTS,
                                               f"o{run_no}u", sampler)
                    r = run(workers, sampler, RATE, SECONDS, CLIENTS, drain=5.0)
                    w = window(r, sampler, 1.0, SECONDS, RATE, CLIENTS)
                    m = metrics(target.metrics_port)
                    sampled = max((s.get('chatscreen_send_buffer_bytes{stat="total"}', 0.0)
                                   for _, s in sampler.metric_samples), default=0.0)
                    peak = m["chatscreen_send_buffered_peak_bytes"]
                    slow = m.get(TOO_SLOW, 0.0)
                    peaks.append(peak)
                    print(f"run {run_no + 1}: peak {peak / MB:.1f} MB (sampled max "
                          f"{sampled / MB:.1f} MB), budget "
                          f"{m['chatscreen_send_budget_bytes'] / MB:.1f} MB, budget cuts "
                          f"{m['chatscreen_send_budget_cuts_total']:.0f}, too_slow "
                          f"{slow:.0f},"
                          f" lost connections {w.lost_conns}, deliveries/s "
                          f"{w.deliveries / 1e6:.2f} M, p99 {w.p99:.0f} ms, complete "
                          f"{w.complete:.3f}, server RSS max {sampler.rss_max / 1e3:.0f} MB, "
                          f"HWM {proc_mem_kb(target.pid)[1] / 1e3:.0f} MB, server CPU "
                          f"{w.server_cpu:.0f} %, generator CPU {w.gen_cpu:.0f} %, other processes "
                          f"{w.others_cpu:.0f} %, not joined {failed} of {len(times) + failed}",
                          flush=True)
                    close_all(workers)
        finally:
            for wk in workers:
                wk.close()
    print(f"median peak: {statistics.median(peaks) / MB:.1f} MB ({system}, {CLIENTS} clients, "
          f"{RATE:g} messages/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
