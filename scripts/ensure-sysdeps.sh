#!/usr/bin/env bash
# Make sure the system packages the tests and benchmarks need are installed:
#   Xvfb (virtual X server), xdotool (input injection), x11-utils (xdpyinfo, xwininfo),
#   xclip (the desktop app pastes pictures from the clipboard with it; its test puts one there),
#   tmux (the terminal client is tested in a real terminal),
# and that the Python used for the venv can import tkinter (the tests show pictures with Tk).
# Installs with apt-get only when something is missing and we are root; never reads stdin.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
PACKAGES=(xvfb xdotool x11-utils xclip tmux)

missing=()
command -v Xvfb >/dev/null 2>&1 || missing+=(Xvfb)
command -v xdotool >/dev/null 2>&1 || missing+=(xdotool)
command -v xdpyinfo >/dev/null 2>&1 || missing+=(xdpyinfo)
command -v xclip >/dev/null 2>&1 || missing+=(xclip)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq "$@" </dev/null
}

if ((${#missing[@]})); then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "ensure-sysdeps: missing ${missing[*]}; not root, cannot install." >&2
        echo "ensure-sysdeps: run as root, or: sudo apt-get install -y ${PACKAGES[*]}" >&2
        exit 1
    fi
    echo "ensure-sysdeps: missing ${missing[*]}; installing ${PACKAGES[*]} with apt-get" >&2
    apt_install "${PACKAGES[@]}"
    for cmd in Xvfb xdotool xdpyinfo xclip tmux; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            echo "ensure-sysdeps: $cmd still missing after apt-get install" >&2
            exit 1
        fi
    done
fi

# tkinter is part of the Python build (pyenv builds it against Debian's libtk8.6);
# python3-tk would only serve Debian's own /usr/bin/python3, so it is not installed.
if ! "$PYTHON" -c 'import tkinter' >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-sysdeps: '$PYTHON' cannot import tkinter; installing Tk runtime libraries" >&2
        apt_install libtk8.6 libtcl8.6 || true
    fi
    if ! "$PYTHON" -c 'import tkinter' >/dev/null 2>&1; then
        echo "ensure-sysdeps: '$PYTHON' ($(command -v "$PYTHON")) cannot import tkinter." >&2
        echo "ensure-sysdeps: the tests need a Python built with Tk support (_tkinter)." >&2
        "$PYTHON" -c 'import tkinter' || true
        exit 1
    fi
fi
