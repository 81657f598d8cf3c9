"""Watching a screen: every way it can fail or end says which it is (issue 16, item 8).

``chatscreen view --snapshot`` as a user types it (a real CLI process) against the real
server, with the other people as library clients on their own threads.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatscreen.client import Client, ScreenChannel, ThreadedClient
from chatscreen.gui.net import close_loop
from tests.helpers.server import REPO, TIMEOUT, ServerProcess


def view(srv: ServerProcess, tmp_path: Path, *extra: str,
         wait: float = 1.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatscreen", "view", "--server", f"127.0.0.1:{srv.chat_port}",
         "--screen-port", str(srv.screen_port), "--user", "viewer", "--snapshot",
         str(tmp_path / "x.png"), "--timeout", f"{wait:g}", *extra],
        capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO)


class Person:
    """Another user: a library client on its own thread, in #general."""

    def __init__(self, srv: ServerProcess, user: str) -> None:
        self.tc = ThreadedClient("127.0.0.1", user, chat_port=srv.chat_port,
                                 screen_port=srv.screen_port, timeout=TIMEOUT)
        self.tc.connect().result(TIMEOUT)
        self.tc.call(lambda c: c.join("general")).result(TIMEOUT)
        self.screens: list[ScreenChannel] = []

    def share(self, viewers: list[str] | None = None) -> None:
        """Announce a share, and send no picture at all."""
        async def go(c: Client) -> None:
            screen = await c.open_screen()
            self.screens.append(screen)
            await screen.share(640, 480, viewers=viewers)

        self.tc.call(go).result(TIMEOUT)

    def close(self) -> None:
        for screen in self.screens:
            self.tc.run(screen.close()).result(TIMEOUT)
        self.tc.close()
        close_loop(self.tc)


@pytest.fixture
def people(server: ServerProcess) -> Iterator[dict[str, Person]]:
    made: dict[str, Person] = {}
    try:
        for name in ("bob", "painter"):
            made[name] = Person(server, name)
        yield made
    finally:
        for person in made.values():
            person.close()


def test_view_snapshot_says_which_failure_it_is(server: ServerProcess, tmp_path: Path,
                                                people: dict[str, Person]) -> None:
    nobody = view(server, tmp_path)
    assert nobody.returncode == 1
    assert nobody.stderr.strip() == "Nobody is sharing a screen you can watch (waited 1 s)"

    ghost = view(server, tmp_path, "--from", "ghost")
    assert ghost.returncode == 1
    assert ghost.stderr.strip() == ("ghost is not online (in no room you can see, and not "
                                    "sharing with you) (waited 1 s)")

    online = view(server, tmp_path, "--from", "bob")  # in #general, not sharing
    assert online.returncode == 1
    assert online.stderr.strip() == ("bob has no share you can watch (not sharing, or not "
                                     "with you) (waited 1 s)")

    people["bob"].share(viewers=["carol"])  # a share the viewer may not watch: the same
    not_for_us = view(server, tmp_path, "--from", "bob")
    assert not_for_us.returncode == 1
    assert not_for_us.stderr.strip() == online.stderr.strip()

    people["painter"].share()  # listed, but its picture never comes: the real timeout
    no_picture = view(server, tmp_path, "--from", "painter")
    assert no_picture.returncode == 1
    assert no_picture.stderr.strip() == ("No complete picture from painter within 1 s (they "
                                         "are sharing, but the picture did not arrive)")
    assert not (tmp_path / "x.png").exists()
