"""What a client shows of text that came over the network: never more than it says.

Message text may hold line breaks, and a server (or a guest, through it) may send
bidirectional controls, terminal escapes and other control characters. Shown as they are, a
line break starts what looks like another person's line (``[18:40:00] boss: ...``) and
U+202E turns the rest of a line around. Every client (the ``chat`` command, the desktop
app) therefore shows such text through this module:

* :func:`display_lines` cuts text at every line break (``str.splitlines``: ``\\n``, ``\\r``,
  U+2028, ...); clients mark each line after the first as a continuation of the message
  (the terminal with :data:`CONTINUATION`, the app with an indented, marked line), so it
  can never look like a line of its own;
* control characters other than tab, lone surrogates, and the bidirectional controls
  (embeddings, overrides, isolates, marks) are shown as ``<U+202E>``: visible, not obeyed;
* a line holding right-to-left letters is wrapped in an isolate (FSI ... PDI), so that it
  cannot reorder the time and the name printed before it.

:func:`one_line` does the same for what must stay on one line: names, room names, notices.
Plain text (no breaks, controls or right-to-left letters) comes back unchanged.
"""

from __future__ import annotations

import re
import unicodedata

CONTINUATION = "  | "  # starts each further line of a message in the terminal
FSI, PDI = "\u2068", "\u2069"  # first strong isolate ... pop directional isolate

# C0 and C1 controls (but tab: kept in message text), DEL, lone surrogates, the line and
# paragraph separators, and every bidirectional control: ALM U+061C, LRM/RLM U+200E-200F,
# LRE..RLO U+202A-202E, LRI..PDI U+2066-2069.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff"
                     "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_RTL_CLASSES = frozenset({"R", "AL"})


def _visible(match: re.Match[str]) -> str:
    return f"<U+{ord(match.group()):04X}>"


def _has_rtl(line: str) -> bool:
    return not line.isascii() and any(unicodedata.bidirectional(ch) in _RTL_CLASSES
                                      for ch in line)


def _safe(line: str, *, isolate: bool) -> str:
    line = _UNSAFE.sub(_visible, line)  # a tab stays: it cannot break or reorder a line
    return f"{FSI}{line}{PDI}" if isolate and _has_rtl(line) else line


def display_lines(text: str, *, isolate: bool = True) -> list[str]:
    """The lines of a message as they may be shown (at least one, maybe empty)."""
    lines = text.splitlines() or [""]
    if text and text[-1] in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029":
        lines.append("")  # a trailing break is shown too: nothing hides after it
    return [_safe(line, isolate=isolate) for line in lines]


def display_text(text: str, *, isolate: bool = True, continuation: str = CONTINUATION) -> str:
    """A message's text for a terminal: every line after the first starts with
    ``continuation``, so that no line of it can pass for a chat line."""
    return ("\n" + continuation).join(display_lines(text, isolate=isolate))


def one_line(text: str, *, isolate: bool = True) -> str:
    """A name, room name or notice: one line, every control shown (tab and breaks too)."""
    return _safe(text.replace("\t", "<U+0009>"), isolate=isolate)


_UTC_TIME = re.compile(r"\b(\d{4}-\d\d-\d\d) (\d\d:\d\d(?::\d\d)?) UTC\b")


def local_time(ts: str) -> str:
    """An ISO timestamp (``...Z``) as local ``HH:MM:SS``."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return "??:??:??"


def local_times(text: str) -> str:
    """Server text with its times (``2026-12-07 21:00:00 UTC``: when a mute or ban ends) in
    local time, as the timeline shows every time: ``2026-12-07 22:00:00 CET``."""
    from datetime import datetime

    def local(m: re.Match[str]) -> str:
        try:
            when = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}+00:00").astimezone()
        except ValueError:
            return m.group(0)
        return when.strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()

    return _UTC_TIME.sub(local, text) if "UTC" in text else text
