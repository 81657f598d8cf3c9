"""What a newcomer trips over in the first hour (issue 16, item 10): the terminal client and
the docs agree with what the program does. Real CLI processes against the real server."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chatscreen.client import ThreadedClient
from chatscreen.commands import parse_command
from chatscreen.errors import ChatscreenError
from chatscreen.gui.net import close_loop
from chatscreen.gui.timeline import day_line, grouped, presence_line
from tests.helpers.server import REPO, TIMEOUT, ServerProcess, running_server

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


def test_a_mutes_end_shows_in_local_time_like_the_timeline(tmp_path: Path) -> None:
    """The server writes when a mute ends in UTC ("until 2026-12-07 21:00:00 UTC"), the
    timeline shows local times: the clients show that time in local time too."""
    data = tmp_path / "data"
    with running_server(data) as srv:  # admin acts on a server's data: it must exist
        muted = subprocess.run([sys.executable, "-m", "chatscreen", "admin", "--data-dir",
                                str(data), "mute", "bob", "--for", "1h"], capture_output=True,
                               text=True, timeout=3 * TIMEOUT, cwd=REPO)
        assert muted.returncode == 0, muted.stderr
        assert "UTC" in muted.stdout  # what the server side writes
        out = subprocess.run(
            [sys.executable, "-m", "chatscreen", "chat", "--server",
             f"127.0.0.1:{srv.chat_port}", "--user", "bob"], input="hello\n",
            capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO,
            env={**os.environ, "TZ": "Asia/Kolkata"})  # UTC+05:30: no mistaking it
    assert out.returncode == 1
    shown = out.stdout + out.stderr
    assert re.search(r"! you are muted until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST", shown), shown
    assert "UTC" not in shown
    utc = re.search(r"until (\S+ \S+) UTC", muted.stdout)
    assert utc is not None
    local = datetime.fromisoformat(utc.group(1) + "+00:00").astimezone(
        ZoneInfo("Asia/Kolkata")).strftime("%Y-%m-%d %H:%M")
    assert f"until {local}" in shown


def test_the_timeline_marks_each_new_day_and_collapses_runs_of_comings_and_goings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")  # the days below are local days there
    time.tzset()
    try:
        _timeline_checks()
    finally:
        monkeypatch.undo()
        time.tzset()


def _timeline_checks() -> None:
    def at(ts: str, **fields: object) -> dict[str, object]:
        return {"ts": ts, **fields}

    def presence(ts: str, user: str, event: str) -> dict[str, object]:
        return at(ts, info=f"{user} {event}", presence=(user, event))

    entries = [at("2026-12-06T10:00:00Z", id=1, user="bob", text="sunday"),
               presence("2026-12-06T10:01:00Z", "carol", "join"),
               presence("2026-12-06T10:02:00Z", "dan", "join"),
               presence("2026-12-06T10:03:00Z", "erin", "leave"),
               presence("2026-12-06T10:03:30Z", "erin", "join"),
               at("2026-12-07T10:00:00Z", id=2, user="bob", text="monday")]
    drawn = list(grouped(entries))
    assert [kind for kind, _ in drawn] == ["day", "entry", "presence", "day", "entry"]
    assert day_line(drawn[0][1]).startswith("— Sunday 6 December")
    assert presence_line(drawn[2][1], "general") == (
        "carol, dan joined · erin left and came back #general")
    bot = [presence("2026-12-06T10:00:00Z", "ci-bot", e) for e in ["join", "leave"] * 5]
    assert presence_line(bot, "general") == "ci-bot joined and left 5 times #general"


class Tmux:
    """A terminal as a person has one: a tmux pane on a private tmux server, typed into
    with send-keys and read with capture-pane."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.socket = f"chatscreen-test-{os.getpid()}-{id(self)}"
        line = " ".join(["env", *(f"{k}={v}" for k, v in env.items()), *command])
        self.tmux("new-session", "-d", "-x", "120", "-y", "30", line)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True, timeout=TIMEOUT).stdout

    def screen(self) -> list[str]:
        return [line.rstrip() for line in self.tmux("capture-pane", "-p").splitlines()
                if line.strip()]

    def wait(self, cond: Any, what: str) -> list[str]:
        deadline = time.monotonic() + 3 * TIMEOUT
        while not cond(lines := self.screen()):
            shown = "\n".join(lines)
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{shown}"
        return lines

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.tmux("kill-server")


def test_a_message_arriving_leaves_the_half_typed_line_alone(server: ServerProcess) -> None:
    """`chatscreen chat` on a terminal printed arriving messages over the line being typed."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (apt-get install tmux)", pytrace=False)
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "CHATSCREEN_CONFIG_DIR":
           os.environ["CHATSCREEN_CONFIG_DIR"], "TERM": "tmux-256color"}
    term = Tmux([sys.executable, "-m", "chatscreen", "chat", "--server",
                 f"127.0.0.1:{server.chat_port}", "--user", "alice"], env)
    bob = ThreadedClient("127.0.0.1", "bob", chat_port=server.chat_port,
                         screen_port=server.screen_port, timeout=TIMEOUT)
    try:
        term.wait(lambda lines: lines[-1:] == ["#general>"], "the input line")  # its prompt
        term.tmux("send-keys", "-l", "half typed")
        term.wait(lambda lines: lines[-1:] == ["#general> half typed"], "typed text")
        bob.connect().result(TIMEOUT)
        bob.call(lambda c: c.join("general")).result(TIMEOUT)
        bob.call(lambda c: c.say("general", "hello from bob")).result(TIMEOUT)
        lines = term.wait(lambda lines: any("bob: hello from bob" in line for line in lines)
                          and lines[-1:] == ["#general> half typed"],  # redrawn below it
                          "bob's message above the half typed line")
        said = next(line for line in lines if "bob: hello from bob" in line)
        assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] bob: hello from bob", said), lines
        assert lines[-1] == "#general> half typed", lines  # still there, below the news
        term.tmux("send-keys", "-l", " and the rest")
        term.tmux("send-keys", "Enter")
        deadline = time.monotonic() + 3 * TIMEOUT
        while True:  # bob's events, as they come (the queue's get waits: no sleeping)
            ev = bob.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if ev.type == "message" and ev["user"] == "alice":
                break
        assert ev["text"] == "half typed and the rest"
        # the sent line left the input line, and came back above it as a message
        term.wait(lambda lines: any(line.endswith("] alice: half typed and the rest")
                                    for line in lines) and lines[-1:] == ["#general>"],
                  "the message sent, above an empty input line")
    finally:
        term.close()
        bob.close()
        close_loop(bob)


def test_register_on_a_terminal_asks_for_the_password_as_dots(server: ServerProcess) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (apt-get install tmux)", pytrace=False)
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "CHATSCREEN_CONFIG_DIR":
           os.environ["CHATSCREEN_CONFIG_DIR"], "TERM": "tmux-256color"}
    term = Tmux([sys.executable, "-m", "chatscreen", "chat", "--server",
                 f"127.0.0.1:{server.chat_port}", "--user", "dana"], env)
    try:
        term.wait(lambda lines: lines[-1:] == ["#general>"], "the input line")
        for typed, then in (("/register", "Password to register your name with:"),
                            ("sekrit-Passw0rd", "Again:"), ("sekrit-Passw0rd", None)):
            term.tmux("send-keys", "-l", typed)
            term.tmux("send-keys", "Enter")
            if then is not None:
                term.wait(lambda lines, then=then: lines[-1:] == [then], then)
        lines = term.wait(lambda lines: any(line.startswith("* registered") for line in lines),
                          "the registration")
        assert not any("sekrit" in line for line in lines), lines
    finally:
        term.close()
