"""Run every benchmark module ``bench/bench_*.py`` in sorted order: ``python -m bench``.

Each runs as ``python -m bench.bench_xxx`` from the repository root; the first failure stops
the run and becomes the exit status.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def main() -> int:
    modules = sorted(path.stem for path in BENCH_DIR.glob("bench_*.py"))
    if not modules:
        print(f"no bench_*.py modules in {BENCH_DIR}", file=sys.stderr)
        return 1
    for module in modules:
        print(f"\n## {module}\n", flush=True)
        result = subprocess.run([sys.executable, "-m", f"bench.{module}"], cwd=REPO_ROOT)
        if result.returncode != 0:
            print(f"bench.{module} failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode if result.returncode > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
