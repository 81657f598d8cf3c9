"""Issue 15, item 11: first contact without trust on first use.

``--fingerprint SHA256:...`` (from ``chatscreen admin invite``, or the banner) makes a client
check the server's certificate even the first time, refuse a different one naming both, and
pin the right one; trust on first use stays for clients that are not given one.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from chatscreen.client import Client
from chatscreen.errors import ConnectError
from chatscreen.tls import KnownHosts, cert_fingerprint, parse_fingerprint
from tests.helpers.server import REPO, TIMEOUT, ServerProcess

WRONG = "SHA256:" + ":".join(["AB"] * 32)


def chatscreen(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatscreen", *args], input=stdin,
                          capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO)


def banner_fingerprint(srv: ServerProcess) -> str:
    line = next(x for x in "".join(srv.output).splitlines() if "TLS certificate:" in x)
    return line.split("TLS certificate: ", 1)[1].strip()


def known(config: Path) -> KnownHosts:
    return KnownHosts(config / "known_hosts")


def test_the_right_fingerprint_connects_on_first_contact_and_pins_both_ports(
        server: ServerProcess, private_config_dir: Path) -> None:
    fp = banner_fingerprint(server)

    async def talk() -> None:
        async with Client("127.0.0.1", "alice", chat_port=server.chat_port,
                          screen_port=server.screen_port, timeout=TIMEOUT, reconnect=False,
                          fingerprint=fp.lower().replace("sha256:", "")) as c:
            await c.join("general")
            channel = await c.open_screen()
            await channel.close()

    asyncio.run(talk())
    assert known(private_config_dir).get(f"127.0.0.1:{server.chat_port}") == fp
    assert known(private_config_dir).get(f"127.0.0.1:{server.screen_port}") == fp
    out = chatscreen("chat", "--server", f"127.0.0.1:{server.chat_port}", "--user", "bob",
                     "--fingerprint", fp, stdin="hi\n")
    assert out.returncode == 0, out.stderr
    assert "bob: hi" in out.stdout


def test_a_wrong_fingerprint_is_refused_naming_both_and_nothing_is_pinned(
        server: ServerProcess, private_config_dir: Path) -> None:
    fp = banner_fingerprint(server)
    with pytest.raises(ConnectError) as err:
        asyncio.run(Client("127.0.0.1", "alice", chat_port=server.chat_port, timeout=TIMEOUT,
                           reconnect=False, fingerprint=WRONG).connect())
    assert fp in str(err.value) and WRONG in str(err.value)
    out = chatscreen("chat", "--server", f"127.0.0.1:{server.chat_port}", "--user", "bob",
                     "--fingerprint", WRONG, stdin="hi\n")
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and fp in lines[0] and WRONG in lines[0], out.stderr
    assert "--fingerprint" in lines[0]
    assert not (private_config_dir / "known_hosts").exists()
    # Pinned meanwhile (trust on first use), a wrong --fingerprint is still refused.
    assert chatscreen("chat", "--server", f"127.0.0.1:{server.chat_port}", "--user", "carol",
                      stdin="").returncode == 0
    assert known(private_config_dir).get(f"127.0.0.1:{server.chat_port}") == fp
    refused = chatscreen("chat", "--server", f"127.0.0.1:{server.chat_port}", "--user", "carol",
                         "--fingerprint", WRONG, stdin="")
    assert refused.returncode == 1 and WRONG in refused.stderr


def test_the_fingerprint_replaces_an_old_pin(server: ServerProcess,
                                             private_config_dir: Path) -> None:
    """A replaced certificate: the admin's new invite line gets the users through."""
    fp = banner_fingerprint(server)
    where = f"127.0.0.1:{server.chat_port}"
    known(private_config_dir).pin(where, WRONG)
    without = chatscreen("chat", "--server", where, "--user", "bob", stdin="")
    assert without.returncode == 1 and "has changed" in without.stderr
    out = chatscreen("chat", "--server", where, "--user", "bob", "--fingerprint", fp, stdin="")
    assert out.returncode == 0, out.stderr
    assert known(private_config_dir).get(where) == fp


def test_a_malformed_fingerprint_is_one_clear_line() -> None:
    out = chatscreen("chat", "--server", "127.0.0.1:1", "--user", "x", "--fingerprint", "abc")
    assert out.returncode == 2 and "--fingerprint" in out.stderr and "SHA256:" in out.stderr
    assert parse_fingerprint(f"sha256:{'ab' * 32}") == "SHA256:" + ":".join(["AB"] * 32)
    for bad in ("", "SHA256:AB", "MD5:" + "ab" * 32, "zz" * 32):
        with pytest.raises(ValueError):
            parse_fingerprint(bad)


def test_admin_invite_prints_a_ready_line_with_the_banners_fingerprint(
        server: ServerProcess, private_config_dir: Path) -> None:
    fp = banner_fingerprint(server)
    assert fp == cert_fingerprint(server.data_dir / "tls-cert.pem")
    out = chatscreen("admin", "--data-dir", str(server.data_dir), "invite", "--host",
                     "127.0.0.1", "--chat-port", str(server.chat_port))
    assert out.returncode == 0, out.stderr
    line = out.stdout.splitlines()[0]
    assert line == f"chatscreen chat --server 127.0.0.1:{server.chat_port} --fingerprint {fp}"
    # the line works as printed (plus a name), first contact included
    args = shlex.split(line)[1:]
    used = chatscreen(*args, "--user", "dave", stdin="hello\n")
    assert used.returncode == 0, used.stderr
    assert known(private_config_dir).get(f"127.0.0.1:{server.chat_port}") == fp
    default = chatscreen("admin", "--data-dir", str(server.data_dir), "invite")
    assert default.returncode == 0 and f"--fingerprint {fp}" in default.stdout
    assert ":9999 " in default.stdout.splitlines()[0]


def test_admin_invite_without_a_certificate_says_so(tmp_path: Path) -> None:
    out = chatscreen("admin", "--data-dir", str(tmp_path / "empty"), "invite")
    assert out.returncode == 1 and "tls-cert.pem" in out.stderr


def test_the_app_remembers_a_fingerprint_per_server(private_config_dir: Path) -> None:
    from chatscreen.gui.settings import ClientSettings, load_settings, save_settings

    fp = parse_fingerprint("ab" * 32)
    saved = ClientSettings(user="alice", server="chat.example:7000",
                           fingerprints={"chat.example:7000": fp, 'odd "host"': WRONG})
    save_settings(saved)
    assert load_settings() == saved
    save_settings(ClientSettings(user="bob"))
    assert load_settings().fingerprints == {}
