"""The command line as a user types it, against the real server."""

from __future__ import annotations

import argparse
import os
import queue
import re
import resource
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chatscreen.client import Client
from chatscreen.client.address import split_server
from chatscreen.config import ConfigError, load_settings
from chatscreen.tls import cert_fingerprint
from tests.helpers.server import REPO, TIMEOUT, ServerProcess, run, running_server

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (\S+): (.*)$")


def chatscreen(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatscreen", *args], input=stdin,
                          capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO)


def chat(srv: ServerProcess, user: str, stdin: str,
         *extra: str) -> subprocess.CompletedProcess[str]:
    return chatscreen("chat", "--server", f"127.0.0.1:{srv.chat_port}", "--user", user, *extra,
                      stdin=stdin)


def messages(out: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for line in out.splitlines() if (m := LINE.match(line))]


def test_banner_is_the_originals_with_real_ports(server: ServerProcess) -> None:
    lines = "".join(server.output).splitlines()
    fingerprint = cert_fingerprint(server.data_dir / "tls-cert.pem")  # made on first start
    assert lines == [
        "🚀 Server started!",
        f"📱 Chat server: 127.0.0.1:{server.chat_port}",
        f"🖥️  Screen server: 127.0.0.1:{server.screen_port}",
        f"🔒 TLS certificate: {fingerprint}",
        "Press Ctrl+C to stop the server",
    ]
    assert server.chat_port != 0 and server.screen_port != 0
    assert re.fullmatch(r"SHA256(:[0-9A-F]{2}){32}", fingerprint)


def test_banner_says_when_tls_is_off(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", tls=False) as srv:
        assert "⚠️  TLS is off (--no-tls)" in "".join(srv.output)


def test_piped_chat_sends_every_line_and_prints_the_timeline(server: ServerProcess) -> None:
    first = chat(server, "alice", "hello there\n\nsecond: line\n")
    assert first.returncode == 0, first.stderr
    assert messages(first.stdout) == [("alice", "hello there"), ("alice", "second: line")]
    second = chat(server, "bob", "hi alice\n/who\n")
    assert second.returncode == 0, second.stderr
    # history first, then bob's own message
    assert messages(second.stdout) == [("alice", "hello there"), ("alice", "second: line"),
                                       ("bob", "hi alice")]
    assert "* joined general: bob" in second.stdout


def test_chat_commands(server: ServerProcess) -> None:
    out = chat(server, "carol", "/join dev\nin dev\n/rooms\n/bogus\n/quit\nnever sent\n")
    assert out.returncode == 0, out.stderr
    assert messages(out.stdout) == [("carol", "in dev")]
    assert "* rooms: dev (1), general (1)" in out.stdout  # /join keeps the old room too
    assert "! commands: /join ROOM" in out.stdout
    again = chat(server, "dave", "", "--room", "dev")
    assert messages(again.stdout) == [("carol", "in dev")]


def test_private_message_to_someone_absent_fails_clearly(server: ServerProcess) -> None:
    out = chat(server, "erin", "/msg nobody hello\n")
    assert out.stderr.count("! 'nobody' is not connected") == 1  # from a script: on stderr
    assert out.returncode == 1  # a message was refused


def test_connection_refused_is_one_clear_line() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = chatscreen("chat", "--server", f"127.0.0.1:{port}", "--user", "x")
    assert out.returncode == 1
    assert out.stderr == f"Failed to connect to 127.0.0.1:{port}: connection refused\n"


def test_taken_username_is_one_clear_line(server: ServerProcess) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "chatscreen", "chat", "--server", f"127.0.0.1:{server.chat_port}",
         "--user", "alice"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None
        assert "* joined general" in holder.stdout.readline()
        out = chat(server, "alice", "hi\n")
        assert out.returncode == 1
        assert out.stderr == "Username 'alice' is already taken\n"
    finally:
        holder.communicate("", timeout=TIMEOUT)
    assert holder.returncode == 0


@pytest.mark.parametrize("low_hard", [False, True], ids=["hard-limit-as-is", "hard-limit-1024"])
def test_server_lifts_its_open_files_limit_to_the_hard_limit(tmp_path: Path,
                                                             low_hard: bool) -> None:
    """Started with a soft limit of 256 descriptors, the server lifts it to the hard limit,
    so that a thousand clients fit; where the hard limit is low (1024), it says so."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if low_hard:
        hard = 1024 if hard == resource.RLIM_INFINITY else min(hard, 1024)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here is {hard}: nothing to lift")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = subprocess.Popen(
        [sys.executable, "-m", "chatscreen", "server", "--chat-port", "0", "--screen-port", "0",
         "--host", "127.0.0.1", "--data-dir", str(tmp_path), "--no-tls"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        preexec_fn=low_soft_limit)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "🚀 Server started!\n"
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        soft = line.split()[3]
        want = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        assert soft == want or (want == "unlimited" and int(soft) >= 1 << 20), line
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    warned = f"open files limit {hard}: the server can take fewer than {hard} connections"
    assert (warned in err) == (hard != resource.RLIM_INFINITY and hard < 4096), err


def test_python_server_py_as_in_the_original(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "server.py", "--chat-port", "0", "--screen-port", "0",
         "--host", "127.0.0.1", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "🚀 Server started!\n"
    finally:
        proc.terminate()
        proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    no_display = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    out = subprocess.run([sys.executable, "client.py"], capture_output=True, text=True,
                         timeout=TIMEOUT, cwd=REPO, env=no_display)
    assert out.returncode == 1 and "cannot open a window" in out.stderr


def test_port_in_use_is_one_clear_line(server: ServerProcess, tmp_path: Path) -> None:
    out = chatscreen("server", "--host", "127.0.0.1", "--chat-port", str(server.chat_port),
                     "--screen-port", "0", "--data-dir", str(tmp_path / "other"))
    assert out.returncode == 1
    assert out.stderr.strip().endswith("address already in use")
    assert "Cannot listen on 127.0.0.1" in out.stderr


def test_settings_flags_beat_env_beat_file(tmp_path: Path) -> None:
    config = tmp_path / "chatscreen.toml"
    config.write_text('[server]\nchat-port = 1000\nscreen_port = 1001\nhost = "10.0.0.1"\n'
                      'history = 5\n')
    env = {"CHATSCREEN_SCREEN_PORT": "2001", "CHATSCREEN_HOST": "127.0.0.2"}
    s = load_settings(config, env=env, host="127.0.0.3")
    assert (s.chat_port, s.screen_port, s.host, s.history) == (1000, 2001, "127.0.0.3", 5)
    assert load_settings(None, env={}).chat_port == 9999
    with pytest.raises(ConfigError, match="unknown setting"):
        config.write_text("[server]\nchat_prot = 1\n")
        load_settings(config, env={})
    with pytest.raises(ConfigError, match="not a valid int"):
        load_settings(None, env={"CHATSCREEN_CHAT_PORT": "many"})


def test_file_retention_takes_a_duration_as_people_type_it(tmp_path: Path) -> None:
    assert load_settings(None, env={}, file_retention="30d").file_retention == 30 * 86400
    assert load_settings(None, env={"CHATSCREEN_FILE_RETENTION": "12h"}).file_retention == 43200
    assert load_settings(None, env={}, file_retention="90").file_retention == 90
    assert load_settings(None, env={}, file_retention="0").file_retention == 0  # kept for ever
    config = tmp_path / "c.toml"
    config.write_text('[server]\nfile_retention = "2w"\nfile_partial_keep = 3600\n')
    s = load_settings(config, env={})
    assert (s.file_retention, s.file_partial_keep) == (14 * 86400, 3600)
    with pytest.raises(ConfigError, match="file_retention: 'soon' is not a duration"):
        load_settings(None, env={}, file_retention="soon")
    out = chatscreen("server", "--file-retention", "soon", "--data-dir", str(tmp_path / "d"))
    assert out.returncode != 0 and "'soon' is not a duration" in out.stderr, out


def test_server_reads_its_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nhost = "127.0.0.1"\nchat_port = 0\nscreen_port = 0\n')
    srv = ServerProcess(tmp_path / "d", "--config", str(config))
    srv.args = [a for a in srv.args if a not in ("--host", "127.0.0.1")]
    srv.start()
    try:
        assert "Chat server: 127.0.0.1:" in "".join(srv.output)
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("server", "port", "want"),
    [("example.org", None, ("example.org", 9999)), ("10.0.0.5:7000", None, ("10.0.0.5", 7000)),
     ("10.0.0.5:7000", 7001, ("10.0.0.5", 7001)), ("[::1]:8000", None, ("::1", 8000)),
     ("::1", None, ("::1", 9999))],
)
def test_server_address_forms(server: str, port: int | None, want: tuple[str, int]) -> None:
    assert split_server(argparse.Namespace(server=server, chat_port=port)) == want


def test_a_run_of_comings_and_goings_is_one_line(server: ServerProcess) -> None:
    """Issue 16, item 9: the CLI printed every join and leave on its own line, crowding out
    the talk. A run of them (until 0.5 s without one, or a message) is one line now."""
    watcher = subprocess.Popen(
        [sys.executable, "-m", "chatscreen", "chat", "--server", f"127.0.0.1:{server.chat_port}",
         "--user", "watcher"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    lines: queue.Queue[str] = queue.Queue()
    assert watcher.stdout is not None
    stdout = watcher.stdout

    def read() -> None:
        for x in stdout:
            lines.put(x)

    threading.Thread(target=read, daemon=True).start()

    def line_with(text: str) -> list[str]:
        seen: list[str] = []
        while not seen or text not in seen[-1]:
            seen.append(lines.get(timeout=TIMEOUT))
        return seen

    try:
        line_with("* joined general")

        async def bot() -> None:
            async with Client("127.0.0.1", "bot", chat_port=server.chat_port,
                              screen_port=server.screen_port, timeout=TIMEOUT) as c:
                for _ in range(5):
                    await c.join("general")
                    await c.leave("general")
                await c.join("general")
                await c.say("general", "done")

        run(bot())
        seen = line_with("bot: done")
        about_bot = [x for x in seen if x.startswith("* ") and "bot" in x]
        assert about_bot == ["* bot came and went 6 times, now is here #general\n"], seen
    finally:
        assert watcher.stdin is not None
        watcher.communicate("/quit\n", timeout=TIMEOUT)
