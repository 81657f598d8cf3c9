"""Durations as people type them (``10m``, ``2h``, ``7d``): for the chat line's ``/mute`` and
``/ban``, ``chatscreen admin --for`` and the server's notices. Client and server alike use
it, so it imports nothing of either."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = 10 * 365 * 86400


def parse_duration(text: str) -> int:
    """``90``, ``30s``, ``10m``, ``2h``, ``7d``, ``2w`` -> seconds. Raises ValueError."""
    m = _DURATION.match(text.lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30s, 10m, 2h or 7d")
    seconds = round(float(m.group(1)) * _UNITS[m.group(2)])
    if not 1 <= seconds <= MAX_DURATION:
        raise ValueError(f"duration {text!r} out of range (1 s to 10 years)")
    return seconds


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
