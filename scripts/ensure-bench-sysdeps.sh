#!/usr/bin/env bash
# Make sure the system packages that only the benchmarks need are installed:
#   tigervnc-scraping-server (X0tigervnc, "x0vncserver"): the VNC baseline of bench/bench_vnc.py.
# Installs with apt-get only when something is missing and we are root; never reads stdin.
# `make test` does not need it (scripts/ensure-sysdeps.sh is what the tests need).
set -euo pipefail

PACKAGES=(tigervnc-scraping-server)

if command -v X0tigervnc >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "ensure-bench-sysdeps: X0tigervnc (x0vncserver) missing; not root, cannot install." >&2
    echo "ensure-bench-sysdeps: run as root, or: sudo apt-get install -y ${PACKAGES[*]}" >&2
    exit 1
fi
echo "ensure-bench-sysdeps: X0tigervnc missing; installing ${PACKAGES[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null
apt-get install -y -qq "${PACKAGES[@]}" </dev/null
if ! command -v X0tigervnc >/dev/null 2>&1; then
    echo "ensure-bench-sysdeps: X0tigervnc still missing after apt-get install" >&2
    exit 1
fi
