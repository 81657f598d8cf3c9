"""Issue 15, item 3: message text cannot forge a chat line or reorder one (bidi controls).

A guest's ``say`` may hold newlines and bidirectional controls (the schema allows both in
text). Every client shows such text through :mod:`chatscreen.text`: continuation lines are
marked, bidi controls and other controls are shown visibly, never obeyed.
"""

from __future__ import annotations

import re
import unicodedata

import pytest

from chatscreen.client import Client
from chatscreen.text import (
    CONTINUATION,
    display_lines,
    display_text,
    one_line,
)
from tests.helpers.server import TIMEOUT, ServerProcess, run
from tests.test_cli import chat

REAL_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+: ")
FORGED = "see below\n[18:40:00] boss: please re-enter your password at https://evil.example"
BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


async def post(srv: ServerProcess, user: str, *texts: str) -> None:
    async with Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                      timeout=TIMEOUT, reconnect=False) as c:
        await c.join("general")
        for text in texts:
            await c.say("general", text)


def test_cli_chat_shows_a_forged_line_as_a_continuation(server: ServerProcess) -> None:
    """The attack as reported: a multi-line say shows, in `chatscreen chat`, a line that
    looks exactly like boss's; and a U+202E say turns what follows it around."""
    run(post(server, "mallory", FORGED, "invoice\u202efdp.exe", "a\u2028[18:41:00] boss: x",
             "\u2067\u05e9\u05dc\u05d5\u05dd: hi\u2069"))
    out = chat(server, "alice", "")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    real = [line for line in lines if REAL_LINE.match(line)]
    # only mallory's own four lines look like chat lines, and all of them say mallory
    assert [line.split("] ", 1)[1].split(":", 1)[0] for line in real] == ["mallory"] * 4, lines
    assert f"{CONTINUATION}[18:40:00] boss: please re-enter" in out.stdout
    assert not BIDI.search(out.stdout.replace("\u2068", "").replace("\u2069", ""))
    assert "<U+202E>" in out.stdout and "<U+2067>" in out.stdout  # shown, never obeyed


# -- the pure function -------------------------------------------------------------------


@pytest.mark.parametrize("control", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                                     "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
                                     "\u200f", "\u061c", "\x1b", "\x07", "\x7f", "\x85",
                                     "\r", "\x0b", "\x0c", "\ud800"])
def test_every_control_is_shown_not_obeyed(control: str) -> None:
    shown = display_text(f"a{control}b")
    assert control not in shown.replace("\n" + CONTINUATION, "")
    assert f"<U+{ord(control):04X}>" in shown or shown.startswith("a\n")
    assert one_line(f"x{control}y") == f"x<U+{ord(control):04X}>y"


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e",
                                 "\x85", "\u2028", "\u2029"])
def test_every_line_break_starts_a_marked_continuation(brk: str) -> None:
    assert display_lines(f"one{brk}[10:00:00] boss: two") == ["one", "[10:00:00] boss: two"]
    assert display_text(f"one{brk}two") == f"one\n{CONTINUATION}two"


def test_plain_text_is_unchanged_and_tabs_and_joiners_stay() -> None:
    for text in ("hello", "a\tb", "family 👨\u200d👩\u200d👧", "café", "fi\u200cle"):
        assert display_text(text) == text
    assert display_lines("") == [""]
    assert display_text("trailing\n") == f"trailing\n{CONTINUATION}"


def test_right_to_left_text_is_isolated_so_it_cannot_reorder_the_prefix() -> None:
    hebrew = "\u05e9\u05dc\u05d5\u05dd"
    assert display_text(hebrew) == f"\u2068{hebrew}\u2069"
    assert one_line(hebrew) == f"\u2068{hebrew}\u2069"
    assert display_text(f"ok\n{hebrew} 1") == f"ok\n{CONTINUATION}\u2068{hebrew} 1\u2069"
    assert display_text(hebrew, isolate=False) == hebrew


def test_names_are_one_line_whatever_a_server_sends() -> None:
    assert one_line("boss\n[10:00:00] root") == "boss<U+000A>[10:00:00] root"
    assert one_line("a\tb") == "a<U+0009>b"
    assert "\n" not in one_line("x\u2028y")


def test_the_shown_text_has_no_format_control_of_its_own() -> None:
    every = "".join(chr(c) for c in range(0x3000) if not 0xD800 <= c <= 0xDFFF)
    shown = display_text(every, isolate=False)
    for ch in shown:
        safe = unicodedata.category(ch) not in ("Cc", "Cs") and not BIDI.match(ch)
        assert ch in "\n\t" or safe, f"U+{ord(ch):04X}"
