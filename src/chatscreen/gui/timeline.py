"""How the Chat tab's timeline reads: runs of join/leave notices as one short line, and a
line for each new day.

Pure functions over the conversation's entries (messages and local notes), so that the
drawing code stays a loop and these rules can be read in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any


def local_day(ts: str) -> date | None:
    """The local calendar day of a server timestamp (ISO 8601, UTC: ``...Z``)."""
    return _local_day(ts[:16]) if ts.endswith("Z") else None


@functools.lru_cache(maxsize=4096)
def _local_day(minute: str) -> date | None:
    """By the minute (UTC offsets are whole minutes): the timeline is redrawn whole."""
    try:
        return datetime.fromisoformat(f"{minute}+00:00").astimezone().date()
    except ValueError:
        return None


def day_line(day: date) -> str:
    """``— Monday 7 December —`` (the year too when it is not this year's)."""
    text = f"{day:%A} {day.day} {day:%B}"
    if day.year != date.today().year:
        text += f" {day.year}"
    return f"— {text} —"


def _what(events: list[str]) -> str:
    """One person's joins and leaves in a row, in a few words."""
    joins, leaves = events.count("join"), events.count("leave")
    if not leaves:
        return "joined"
    if not joins:
        return "left"
    if events[0] == "join" and events[-1] == "leave":
        return "joined and left" + (f" {joins} times" if joins > 1 else "")
    if events[0] == "leave" and events[-1] == "join":
        return "left and came back" + (f" {joins} times" if joins > 1 else "")
    here = "is here" if events[-1] == "join" else "is gone"
    return f"came and went {max(joins, leaves)} times, now {here}"


def presence_line(run: list[dict[str, Any]], room: str) -> str:
    """A run of join/leave notes as one line: ``bob, carol joined #general``; ``ci-bot
    joined and left 5 times #general``; several kinds of comings and goings joined by
    `` · ``."""
    events: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for note in run:
        user, event = note["presence"]
        events.setdefault(user.casefold(), []).append(event)
        names.setdefault(user.casefold(), user)
    by_what: dict[str, list[str]] = {}
    for key, evs in events.items():
        by_what.setdefault(_what(evs), []).append(names[key])
    parts = [f"{', '.join(users)} {what}" for what, users in by_what.items()]
    return f"{' · '.join(parts)} #{room}"


def grouped(entries: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """The entries as drawn, in order: ``("day", date)`` before the first entry of each
    local day, ``("presence", [notes])`` for each run of join/leave notes with nothing
    between them, and ``("entry", entry)`` for everything else."""
    last_day: date | None = None
    run: list[dict[str, Any]] = []
    for entry in entries:
        day = local_day(entry["ts"])
        if day is not None and day != last_day:
            if run:
                yield "presence", run
                run = []
            yield "day", day
            last_day = day
        if "presence" in entry:
            run.append(entry)
            continue
        if run:
            yield "presence", run
            run = []
        yield "entry", entry
    if run:
        yield "presence", run
