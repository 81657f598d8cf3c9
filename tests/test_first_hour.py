"""What a newcomer trips over in the first hour (issue 16, item 10): the terminal client and
the docs agree with what the program does. Real CLI processes against the real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatscreen.commands import parse_command
from chatscreen.errors import ChatscreenError
from tests.helpers.server import REPO, TIMEOUT, ServerProcess

README = Path(REPO) / "README.md"


def chat(srv: ServerProcess, user: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatscreen", "chat", "--server", f"127.0.0.1:{srv.chat_port}",
         "--user", user], input=stdin, capture_output=True, text=True, timeout=3 * TIMEOUT,
        cwd=REPO)


def test_help_and_the_readme_write_every_command_alike(server: ServerProcess) -> None:
    """`/help` said `/mute USER DURATION [REASON]`, the README `/mute USER [DURATION]
    [REASON]` (and the parser wanted a duration before any reason)."""
    out = chat(server, "newbie", "/help\n")
    assert out.returncode == 0, out.stderr
    help_line = next(line for line in out.stdout.splitlines() if "commands:" in line)
    usages = re.findall(r"`(/[a-z]+(?: [^`]*)?)`", README.read_text())
    assert "/mute USER [DURATION] [REASON]" in usages
    for usage in usages:
        assert usage in help_line, f"README's {usage!r} is not what /help says: {help_line}"


def test_mute_and_ban_take_a_reason_without_a_duration_but_not_a_mistyped_duration() -> None:
    assert parse_command("/mute bob being rude", "general").args == {
        "action": "mute", "target": "bob", "reason": "being rude"}
    assert parse_command("/mute bob 10m being rude", "general").args == {
        "action": "mute", "target": "bob", "duration": 600, "reason": "being rude"}
    assert parse_command("/ban bob spam", "general").args == {
        "action": "ban", "target": "bob", "reason": "spam"}
    for line in ("/mute bob 10x rude", "/ban bob 7dd"):  # not a reason, and for ever
        with pytest.raises(ChatscreenError, match="not a duration"):
            parse_command(line, "general")


def test_protocol_doc_says_what_the_transport_is() -> None:
    text = (Path(REPO) / "docs" / "protocol.md").read_text()
    assert "Plain TCP for now" not in text
    assert "TLS" in text.split("## Frames")[0]
