"""Attacks with a guest login against the real server, and what they cost everyone else.

Run ``python -m bench.bench_attack`` from the repository root (or ``make attack``). Output is
Markdown.

One function per scenario (``SCENARIOS``; add yours there). Each gets a fresh server process
(TLS, default settings), and runs its attacker in a thread until told to stop, returning what
it did. Around it, the same for every scenario, in the same run: a chat user in ``general``
measures its say -> echo round trip (``Client.say``: the echo comes once the message is
stored), one every 1/``PACE`` s, first with the server idle (the baseline), then while the
attacker attacks; the server's RSS is read before the attack, every 50 ms during it (the
peak, with ``VmHWM``) and ``AFTER_S`` s after it stopped (after the server's housekeeping).

* ``sharer_flood`` (issue 15, item 1): share 16384x16384 (or, if refused, the largest the
  server takes: 7680x4320), one key frame, then delta frames of 1024 (MAX_RECTS) 1x1
  ``raw`` rects at pixels no rect covered before, each claiming 2 KiB (2 MiB a frame), as
  fast as the server reads them, never answering ``need_key``; when cut off, log in again as
  another guest and go on, until ``ATTACK_MIB`` MiB are sent or ``ATTACK_S`` s have passed.
* ``sharer_flood_spread``: the same, each frame's pixels spread over all the tiles, one on
  each (no tile piles up rects: only the memory bound stops it).

Environment: ``BENCH_ATTACK_SECONDS`` (``ATTACK_S``, default 30), ``BENCH_ATTACK_MIB``
(default 480, as in the issue), ``BENCH_ATTACK_SCENARIOS`` (a comma list; default all).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.attack import (  # noqa: E402
    RawSharer,
    fresh_pixels,
    median_ms,
    p95_ms,
    rss_kib,
    spread_pixels,
)
from tests.helpers.server import ServerProcess  # noqa: E402

from chatscreen.client import Client  # noqa: E402
from chatscreen.protocol.schema import MAX_RECTS  # noqa: E402

ATTACK_S = float(os.environ.get("BENCH_ATTACK_SECONDS", "30"))
ATTACK_MIB = int(os.environ.get("BENCH_ATTACK_MIB", "480"))
PACE = 10.0  # chat round trips a second (the default rate limit is 20 messages a second)
IDLE_S = 10.0  # the baseline: this long idle, same server, before the attack
AFTER_S = 3.0  # RSS "after": this long after the attack stopped
RSS_EVERY = 0.05
MiB = 1 << 20


@dataclass
class Attack:
    """What an attacker did, and how the server answered."""

    sent: int = 0  # bytes handed to the socket
    logins: int = 0
    cut_off: Counter[str] = field(default_factory=Counter)  # error codes it was closed with
    notes: list[str] = field(default_factory=list)


Scenario = Callable[[ServerProcess, threading.Event], Attack]


# -- scenarios ---------------------------------------------------------------------------

def sharer_flood(srv: ServerProcess, stop: threading.Event) -> Attack:
    """Issue 15, item 1: a sharer growing the relay's memory (see the module docstring):
    MAX_RECTS fresh pixels a frame, in screen order (64 on each tile of a row)."""
    return _flood(srv, stop, lambda w, h, seq: fresh_pixels(w, h, seq, (seq - 2) * MAX_RECTS,
                                                             MAX_RECTS, 2048))


def sharer_flood_spread(srv: ServerProcess, stop: threading.Event) -> Attack:
    """The same, each frame's MAX_RECTS pixels spread over all the tiles (at most one on each,
    8160 tiles at 8K): no tile piles up, so only the memory bound stops it."""
    return _flood(srv, stop, lambda w, h, seq: spread_pixels(w, h, seq, (seq - 2) * MAX_RECTS,
                                                              MAX_RECTS, 2048))


def _flood(srv: ServerProcess, stop: threading.Event,
           delta: Callable[[int, int, int], bytes]) -> Attack:
    attack = Attack()
    while not stop.is_set() and attack.sent < ATTACK_MIB * MiB:
        attack.logins += 1
        sharer = RawSharer(srv, f"mallory{attack.logins}")
        try:
            w = h = 16384
            answer = sharer.share(w, h)
            if answer["type"] == "error":
                if attack.logins == 1:
                    attack.notes.append(f"share {w}x{h}: refused, {answer['code']}")
                w, h = 7680, 4320
                answer = sharer.share(w, h)
            if attack.logins == 1:
                attack.notes.append(f"share {w}x{h}: {answer['type']}")
            data = sharer.key_frame(w, h)
            seq = 1
            while sharer.send(data):
                attack.sent += len(data)
                if stop.is_set() or attack.sent >= ATTACK_MIB * MiB:
                    break
                seq += 1
                data = delta(w, h, seq)
            else:  # the server closed the connection: why?
                errors = [m for m in sharer.outcome() if m["type"] == "error"]
                attack.cut_off[str(errors[-1]["code"]) if errors else "closed"] += 1
        finally:
            sharer.close()
    return attack


SCENARIOS: dict[str, Scenario] = {"sharer_flood": sharer_flood,
                                  "sharer_flood_spread": sharer_flood_spread}


# -- measuring ---------------------------------------------------------------------------

@dataclass
class Result:
    scenario: str
    idle: list[float]
    during: list[float]
    rss_before: int  # KiB
    rss_peak: int
    rss_after: int
    attack: Attack
    seconds: float


async def paced_round_trips(c: Client, until: Callable[[], bool]) -> list[float]:
    """say -> echo round trips, one every 1/PACE s, until ``until()``."""
    out: list[float] = []
    next_at = time.perf_counter()
    n = 0
    while not until():
        t0 = time.perf_counter()
        echo = await c.say("general", f"rt {n}")
        out.append(time.perf_counter() - t0)
        assert echo["text"] == f"rt {n}"
        n += 1
        next_at += 1 / PACE
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))  # the pace, not a wait
    return out


def sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.wait(RSS_EVERY):
        with contextlib.suppress(OSError, AssertionError):
            peak[0] = max(peak[0], rss_kib(pid))


async def measure(srv: ServerProcess, name: str, scenario: Scenario) -> Result:
    assert srv.proc is not None
    pid = srv.proc.pid
    async with Client("127.0.0.1", "calm", chat_port=srv.chat_port,
                      screen_port=srv.screen_port, timeout=30) as calm:
        await calm.join("general")
        idle_until = time.monotonic() + IDLE_S
        idle = await paced_round_trips(calm, lambda: time.monotonic() > idle_until)
        before = rss_kib(pid)
        stop, sampling = threading.Event(), threading.Event()
        peak = [before]
        sampler = threading.Thread(target=sample_rss, args=(pid, sampling, peak), daemon=True)
        sampler.start()
        start = time.monotonic()
        task = asyncio.ensure_future(asyncio.to_thread(scenario, srv, stop))
        stopper = asyncio.get_running_loop().call_later(ATTACK_S, stop.set)
        during = await paced_round_trips(calm, task.done)
        attack = await task
        stopper.cancel()
        seconds = time.monotonic() - start
        sampling.set()
        sampler.join()
        peak[0] = max(peak[0], rss_kib(pid, "VmHWM"))
        settle_until = time.monotonic() + AFTER_S
        await paced_round_trips(calm, lambda: time.monotonic() > settle_until)
        return Result(name, idle, during, before, peak[0], rss_kib(pid), attack, seconds)


def run_scenario(name: str, scenario: Scenario) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-attack-") as tmp:
        srv = ServerProcess(Path(tmp) / "data").start()
        try:
            return asyncio.run(measure(srv, name, scenario))
        finally:
            srv.stop()


def render(results: list[Result]) -> str:
    lines = ["| scenario | chat say->echo idle p50 / p95 | during the attack p50 / p95 | "
             "p50 ratio | server RSS before / peak / after | attacker sent | cut off |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        cut = ", ".join(f"{n}x {code}" for code, n in r.attack.cut_off.most_common()) or "-"
        lines.append(
            f"| {r.scenario} | {median_ms(r.idle):.1f} / {p95_ms(r.idle):.1f} ms "
            f"| {median_ms(r.during):.1f} / {p95_ms(r.during):.1f} ms "
            f"| {median_ms(r.during) / median_ms(r.idle):.2f} "
            f"| {r.rss_before // 1024} / {r.rss_peak // 1024} / {r.rss_after // 1024} MB "
            f"| {r.attack.sent / MiB:.0f} MiB in {r.seconds:.1f} s, {r.attack.logins} logins "
            f"| {cut} |")
    return "\n".join(lines)


def main() -> int:
    wanted = [s.strip() for s in os.environ.get("BENCH_ATTACK_SCENARIOS", "").split(",")
              if s.strip()] or list(SCENARIOS)
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    print("# bench_attack\n")
    print(f"Loopback, TLS, default settings, {os.cpu_count()} CPUs. Chat round trips paced at "
          f"{PACE:g}/s: {IDLE_S:g} s idle (baseline, same server), then during the attack "
          f"(at most {ATTACK_S:g} s or {ATTACK_MIB} MiB). RSS after: {AFTER_S:g} s after the "
          "attack stopped.\n")
    results = []
    for name in wanted:
        result = run_scenario(name, SCENARIOS[name])
        results.append(result)
        for note in result.attack.notes:
            print(f"- {name}: {note}")
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
