"""Chat-line commands (``/join``, ``/msg``, ``/kick`` ...), parsed the same for every client.

:func:`parse_command` is pure: a line typed in a chat box in, a :class:`Command` out (or a
:class:`~chatscreen.errors.ChatscreenError` saying how to write it). The terminal client
(``chatscreen chat``) and the desktop app each carry commands out with their own I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from chatscreen.durations import parse_duration
from chatscreen.errors import ChatscreenError

HELP = ("commands: /join ROOM, /msg USER TEXT, /who [ROOM], /rooms, /register, "
        "/kick USER [REASON], /mute USER [DURATION] [REASON], /unmute USER, "
        "/ban USER|IP [DURATION] [REASON], /unban USER|IP, /role USER admin|moderator|member, "
        "/private ROOM, /invite USER [ROOM], /send PATH, /get ID [PATH], /quit (start a "
        "message with // to send a literal /)")

MODERATION = {"/kick": "kick", "/mute": "mute", "/unmute": "unmute", "/ban": "ban",
              "/unban": "unban", "/role": "role"}


@dataclass(frozen=True)
class Command:
    """What a chat line asks for.

    ``kind`` is one of: ``say`` (text), ``join`` (room), ``msg`` (to, text), ``who`` (room),
    ``rooms``, ``register``, ``private`` (room), ``invite`` (user, room), ``moderate``
    (action and the fields of a ``moderate`` request), ``send`` (path: a local file to post
    to the current room), ``get`` (file: an id, path: where to save it, or None), ``quit``,
    ``help``.
    """

    kind: str
    args: dict[str, Any] = field(default_factory=dict)


def parse_command(line: str, room: str) -> Command:
    """The command in a chat line typed while ``room`` is the current room."""
    if not line.startswith("/") or line.startswith("//"):
        return Command("say", {"text": line[1:] if line.startswith("//") else line})
    cmd, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    if cmd == "/join" and rest:
        return Command("join", {"room": rest.lstrip("#")})
    if cmd == "/msg" and " " in rest:
        to, _, text = rest.partition(" ")
        return Command("msg", {"to": to, "text": text.strip()})
    if cmd == "/who":
        return Command("who", {"room": rest.lstrip("#") or room})
    if cmd == "/rooms" and not rest:
        return Command("rooms")
    if cmd == "/register":
        if rest:  # never sent, never used: it was typed where others could see it
            raise ChatscreenError("type /register alone: the password is asked for, never "
                                  "typed in the chat line")
        return Command("register")
    if cmd == "/private" and rest:
        return Command("private", {"room": rest.lstrip("#")})
    if cmd == "/invite" and rest:
        user, _, where = rest.partition(" ")
        return Command("invite", {"user": user, "room": where.strip().lstrip("#") or room})
    if cmd == "/send":
        if not rest:
            raise ChatscreenError("/send PATH: posts that file to this room")
        return Command("send", {"path": rest})
    if cmd == "/get":
        if not rest:
            raise ChatscreenError("/get ID [PATH]: saves the file with that id (its [file ID] "
                                  "in the chat), in PATH or under its own name here")
        file_id, _, path = rest.partition(" ")
        return Command("get", {"file": file_id, "path": path.strip() or None})
    if cmd in MODERATION and rest:
        return Command("moderate", _moderation(MODERATION[cmd], rest))
    if cmd == "/quit" and not rest:
        return Command("quit")
    if cmd == "/help":
        return Command("help")
    raise ChatscreenError(HELP)


def _moderation(action: str, rest: str) -> dict[str, Any]:
    """The fields of a ``moderate`` request: ``/ban 10.0.0.7 2h flooding`` and the like."""
    target, _, more = rest.partition(" ")
    more = more.strip()
    fields: dict[str, Any] = {"action": action}
    try:
        fields["address"] = str(ipaddress.ip_address(target))
    except ValueError:
        fields["target"] = target
    if action in ("mute", "ban") and more:
        # [DURATION] [REASON]: a first word that starts with a digit is meant as a
        # duration (a typo in it is an error, not a reason and a mute for ever)
        first, _, reason = more.partition(" ")
        if first[:1].isdigit():
            try:
                fields["duration"] = parse_duration(first)
            except ValueError as exc:
                raise ChatscreenError(str(exc)) from None
            more = reason.strip()
    if action == "role":
        if not more:
            raise ChatscreenError("/role USER ROLE (admin, moderator or member)")
        fields["role"] = more
    elif action in ("kick", "mute", "ban") and more:
        fields["reason"] = more
    return fields
