"""A logged-in user: one chat connection and any number of screen connections."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# A connection of the user's (the server's Peer). The session only holds them: it needs
# nothing of them, so this module need not know the peer's (which holds its Session).
C = TypeVar("C")


@dataclass(eq=False)
class Guest:
    """A guest, as opposed to its name: its sessions share this object while it comes back
    with its resume secret, and a different guest taking the name gets a new one. What is
    granted to a guest is granted to this, never to the name."""

    invited: set[str] = field(default_factory=set)  # private rooms it was invited to
    marks: dict[str, int] = field(default_factory=dict)  # read markers, as Session.marks
    registered: bool = False  # it registered its name: that account is this guest


@dataclass(eq=False)
class Session(Generic[C]):
    name: str
    chat: C
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    resume: str | None = None  # the client's own secret; a new connection with it may take over
    rooms: set[str] = field(default_factory=set)
    screens: set[C] = field(default_factory=set)
    registering: bool = False
    role: str | None = None  # admin, moderator or member (a registered account); None: a guest
    # Private messages of ids above this are this user's: a guest's are those of its own
    # session (and of the earlier ones it resumed), an account's those since it was made.
    since: int = 0
    skeleton: str = ""  # what the name looks like (protocol.lookalike.name_skeleton)
    guest: Guest | None = None  # who this guest is (kept if it registers); None: an account
    # An account's rooms, stored (joined and not left, whether joined on this connection
    # or not); empty for a guest, whose rooms are only those of its connection.
    member_of: set[str] = field(default_factory=set)
    # read markers: "#room" or "@peer" (casefolded) -> the last message id read there; an
    # account's are stored, a guest's are its Guest's (kept while it resumes)
    marks: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.name.casefold()
