from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.server import ServerProcess, port_outside_ephemeral_range, running_server
from tests.helpers.xvfb import XvfbError, run_xvfb


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """A private 1920x1080x24 Xvfb server for the whole session; yields e.g. ``":5"``."""
    with contextlib.ExitStack() as stack:
        try:
            display = stack.enter_context(run_xvfb())
        except XvfbError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield display


@pytest.fixture(autouse=True)
def private_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own client config (known_hosts, remembered settings): servers on
    reused ports with new certificates must not look like an attack to the next test."""
    path = tmp_path / "client-config"
    monkeypatch.setenv("CHATSCREEN_CONFIG_DIR", str(path))
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The real server, with its defaults (TLS), on free loopback ports."""
    with running_server(tmp_path / "data") as srv:
        yield srv


@pytest.fixture
def fixed_port_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The server on fixed ports, so that it can be restarted where the clients look."""
    for _ in range(5):
        srv = ServerProcess(tmp_path / "data", chat_port=port_outside_ephemeral_range(),
                            screen_port=port_outside_ephemeral_range())
        try:
            srv.start()
        except AssertionError:  # taken meanwhile by someone else: try other ports
            with contextlib.suppress(Exception):
                srv.kill()
            continue
        try:
            yield srv
        finally:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.stop()
        return
    raise AssertionError("could not start the server on fixed ports")
