"""Owned usernames, server passwords and slowed-down brute force, on the real server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chatscreen.client import Client
from chatscreen.errors import ConnectError, ServerError
from tests.helpers.proxy import CuttableProxy
from tests.helpers.rawchat import RawChat, login_answer
from tests.helpers.server import (
    NO_RATE_LIMITS,
    REPO,
    TIMEOUT,
    ServerProcess,
    frame,
    raw_socket,
    read_headers_until,
    refused,
    run,
    running_server,
)

PASSWORD = "correct horse battery staple"


def client(srv: ServerProcess, user: str, **kwargs: Any) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT, **kwargs)


def chatscreen(*args: str, stdin: str = "",
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatscreen", *args], input=stdin,
                          capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO,
                          env={**os.environ, **(env or {})})


def test_registered_name_needs_its_password_and_guests_still_work(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as srv:
        async def scenario() -> None:
            async with client(srv, "alice") as alice:
                assert alice.role is None  # a guest
                with pytest.raises(ServerError, match="at least 8"):
                    await alice.register("short")
                await alice.register(PASSWORD)
                assert alice.role == "member"
                with pytest.raises(ServerError, match="already registered"):
                    await alice.register(PASSWORD)
            err = await refused(client(srv, "ALICE"))
            assert (err.code, err.message) == ("bad_password",
                                               "'alice' is registered: give its password")
            err = await refused(client(srv, "alice", password="wrong password"))
            assert (err.code, err.message) == ("bad_password", "Wrong password for 'alice'")
            async with client(srv, "Alice", password=PASSWORD) as alice:
                assert alice.role == "member"
                assert alice.user == "alice"  # the account's spelling
                await alice.join("general")
                await alice.say("general", "it is really me")
            async with client(srv, "bob") as bob:  # guests still get in with just a name
                await bob.join("general")

        run(scenario())
        log = srv.stderr_path.read_text()
    assert "registered" in log and "failed login as alice" in log
    assert PASSWORD not in log and "wrong password" not in log
    db = sqlite3.connect(tmp_path / "data" / "chatscreen.db")
    (row,) = db.execute("SELECT name, display, hash, role FROM accounts").fetchall()
    assert row[:2] == ("alice", "alice") and row[3] == "member"
    assert row[2].startswith("$argon2id$") and PASSWORD not in row[2]
    texts = [t for (t,) in db.execute("SELECT text FROM messages")]
    assert not any(PASSWORD in t for t in texts)


def test_password_survives_reconnects(tmp_path: Path) -> None:
    """The client sends its password in every hello, so a dropped connection comes back,
    also after registering on that connection."""
    with running_server(tmp_path / "data") as srv:
        async def scenario() -> None:
            proxy = await CuttableProxy(srv.chat_port).start()
            carol = Client("127.0.0.1", "carol", chat_port=proxy.port,
                           screen_port=srv.screen_port, timeout=TIMEOUT)
            try:
                await carol.connect()
                await carol.register(PASSWORD)
                await carol.join("general")
                proxy.cut()
                await wait_status(carol, "reconnecting")
                await wait_status(carol, "connected")
                assert carol.role == "member"
                assert (await carol.say("general", "back"))["user"] == "carol"
            finally:
                await carol.close()
                await proxy.close()

        run(scenario())


async def wait_status(c: Client, state: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            ev = await c.next_event()
            if ev.type == "status" and ev["state"] == state:
                return


def test_brute_force_is_slowed_down_and_others_are_not(tmp_path: Path) -> None:
    env = {"CHATSCREEN_LOGIN_DELAY": "0.4", "CHATSCREEN_LOGIN_DELAY_MAX": "30"}
    with running_server(tmp_path / "data", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "dave") as dave:
                await dave.register(PASSWORD)
            loop = asyncio.get_running_loop()
            for n, expected in enumerate((0.4, 0.8, 1.6), 1):
                start = loop.time()
                err = await refused(client(srv, "dave", password=f"guess {n}"))
                took = loop.time() - start
                assert err.code == "bad_password"
                assert took >= expected - 0.05, f"failure {n} answered after {took:.2f} s"
            # While dave's account is slowed down, other users log in at once.
            attempt = asyncio.ensure_future(refused(client(srv, "dave", password="guess 4")))
            start = loop.time()
            async with client(srv, "erin") as erin:
                await erin.join("general")
            assert loop.time() - start < 1.5
            assert not attempt.done()  # that one waits 3.2 s
            err = await attempt
            assert err.code == "bad_password"
            assert loop.time() - start >= 3.2 - 0.1

        run(scenario())


def test_long_login_delays_end_in_a_clear_answer_not_a_timeout(tmp_path: Path) -> None:
    """A slowed-down login is answered before the handshake timeout: 'wrong password, the
    next try is looked at in N s', then 'try again in N s', never 'no handshake in time'."""
    env = {"CHATSCREEN_LOGIN_DELAY": "6", "CHATSCREEN_HANDSHAKE_TIMEOUT": "2"}
    with running_server(tmp_path / "data", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "dave") as dave:
                await dave.register(PASSWORD)
            loop = asyncio.get_running_loop()
            start = loop.time()
            err = await refused(client(srv, "dave", password="guess"))
            assert err.code == "bad_password", err
            assert "the next try is looked at in" in err.message
            assert loop.time() - start < 2.0
            err = await refused(client(srv, "dave", password=PASSWORD))
            assert err.code == "rate_limited", err
            assert "Too many failed logins" in err.message and "try again in" in err.message

        run(scenario())


def test_server_password_is_asked_before_anything_else(tmp_path: Path) -> None:
    secret = "s3rver-secret"
    env = {"CHATSCREEN_SERVER_PASSWORD": secret, "CHATSCREEN_LOGIN_DELAY": "0.1"}
    with running_server(tmp_path / "data", env=env) as srv:
        async def scenario() -> None:
            err = await refused(client(srv, "frank"))
            assert err.code == "bad_password" and "server password" in err.message
            err = await refused(client(srv, "frank", server_password="nope"))
            assert (err.code, err.message) == ("bad_password", "Wrong server password")
            async with client(srv, "frank", server_password=secret) as frank:
                await frank.join("general")

        run(scenario())
        assert secret not in srv.stderr_path.read_text()


def test_server_password_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "server-password"
    secret_file.write_text("from-a-file\n")
    with running_server(tmp_path / "data", "--password-file", str(secret_file)) as srv:
        async def scenario() -> None:
            err = await refused(client(srv, "gina", server_password="from-a-fil"))
            assert err.message == "Wrong server password"
            async with client(srv, "gina", server_password="from-a-file") as gina:
                await gina.join("general")

        run(scenario())
        # the CLI reads it from CHATSCREEN_SERVER_PASSWORD, never from an argument
        out = chatscreen("chat", "--server", f"127.0.0.1:{srv.chat_port}", "--user", "hank",
                         stdin="hello\n/quit\n",
                         env={"CHATSCREEN_SERVER_PASSWORD": "from-a-file"})
        assert out.returncode == 0, out.stderr
        assert "hank: hello" in out.stdout


def test_server_password_asked_for_by_the_server_command(tmp_path: Path) -> None:
    """`chatscreen server --password` asks for it (here, without a terminal, it takes
    CHATSCREEN_PASSWORD): it is never on the command line, so never in a process list."""
    secret = "asked-for secret"
    env = {"CHATSCREEN_PASSWORD": secret}
    with running_server(tmp_path / "data", "--password", env=env) as srv:
        assert srv.proc is not None
        cmdline = Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline

        async def scenario() -> None:
            err = await refused(client(srv, "ivy"))
            assert err.code == "bad_password"
            async with client(srv, "ivy", server_password=secret) as ivy:
                await ivy.join("general")

        run(scenario())


def test_require_accounts_and_admin_cli_work_offline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CHATSCREEN_PASSWORD": PASSWORD}
    out = chatscreen("admin", "--data-dir", str(data), "create-admin", "root", env=env)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    out = chatscreen("admin", "--data-dir", str(data), "add-user", "ivy", env=env)
    assert out.returncode == 0, out.stderr
    out = chatscreen("admin", "--data-dir", str(data), "set-role", "ivy", "moderator")
    assert out.returncode == 0 and "moderator" in out.stdout, out.stderr
    out = chatscreen("admin", "--data-dir", str(data), "set-role", "nobody", "member")
    assert out.returncode == 1 and "no account" in out.stderr
    out = chatscreen("admin", "--data-dir", str(data), "list")
    assert "root" in out.stdout and "admin" in out.stdout and "ivy" in out.stdout
    with running_server(data, "--require-accounts") as srv:
        async def scenario() -> None:
            err = await refused(client(srv, "guest1"))
            assert err.code == "account_required"
            async with client(srv, "root", password=PASSWORD) as root:
                assert root.role == "admin"
            async with client(srv, "ivy", password=PASSWORD) as ivy:
                assert ivy.role == "moderator"

        run(scenario())


def test_chat_register_reads_the_password_from_the_environment(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as srv:
        server = f"127.0.0.1:{srv.chat_port}"
        out = chatscreen("chat", "--server", server, "--user", "jack",
                         stdin="/register\nhi\n/quit\n", env={"CHATSCREEN_PASSWORD": PASSWORD})
        assert out.returncode == 0, out.stderr
        assert "* registered" in out.stdout
        out = chatscreen("chat", "--server", server, "--user", "jack", stdin="/quit\n",
                         env={"CHATSCREEN_PASSWORD": ""})
        assert out.returncode == 1 and "give its password" in out.stderr
        pw_file = tmp_path / "pw"
        pw_file.write_text(PASSWORD + "\n")
        out = chatscreen("chat", "--server", server, "--user", "jack", "--password-file",
                         str(pw_file), stdin="again\n/quit\n")
        assert out.returncode == 0, out.stderr
        assert "jack: again" in out.stdout
        log = srv.stderr_path.read_text()
    assert PASSWORD not in log
    db = sqlite3.connect(tmp_path / "data" / "chatscreen.db")
    assert not any(PASSWORD in t for (t,) in db.execute("SELECT text FROM messages"))


def test_login_delay_measured_with_deadline_not_sleep() -> None:
    """The guard's arithmetic: 0.5 s doubling to 30 s, per key."""
    from chatscreen.server.moderation import LoginGuard

    guard = LoginGuard(0.5, 30.0)
    now = time.monotonic()
    delays = [guard.failed(["ip:a", "user:x"], now + i) for i in range(9)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert guard.wait(["ip:b"], now) == 0
    assert guard.wait(["user:x"], now + 8) > 0
    guard.succeeded(["user:x"], release=["ip:a"])
    assert guard.wait(["ip:a", "user:x"], now + 8) == 0


def test_requests_pipelined_behind_a_password_hello_wait_for_it(tmp_path: Path) -> None:
    """A hello that needs a password check is answered off the event loop; what the client
    sent right behind it is held until then, not refused."""
    with running_server(tmp_path / "d", env=NO_RATE_LIMITS) as srv:

        async def register() -> None:
            async with Client("127.0.0.1", "pip", chat_port=srv.chat_port, timeout=TIMEOUT,
                              reconnect=False) as c:
                await c.register("correct horse battery")

        asyncio.run(register())
        sock = raw_socket(srv, srv.chat_port)
        with sock:
            sock.sendall(frame({"type": "hello", "v": 1, "user": "pip",
                                "password": "correct horse battery"})
                         + frame({"type": "join", "room": "general", "rid": "j"}))
            got = read_headers_until(sock, lambda h: h.get("type") == "joined")
        assert got[0]["type"] == "welcome"
        assert got[-1]["rid"] == "j"


def test_look_alike_names_are_the_same_name(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as srv:

        async def scenario() -> None:
            async with Client("127.0.0.1", "alice", chat_port=srv.chat_port, timeout=TIMEOUT,
                              reconnect=False):
                fullwidth = Client("127.0.0.1", "ａｌｉｃｅ", chat_port=srv.chat_port,
                                   timeout=TIMEOUT, reconnect=False)
                with pytest.raises(ConnectError, match="already taken"):
                    await fullwidth.connect()

        asyncio.run(scenario())




# -- failed logins count per address and per account at an address, not per account ---------


async def _register(srv: ServerProcess, *names: str) -> None:
    for name in names:
        async with client(srv, name) as c:
            await c.register(PASSWORD)


def test_strangers_failures_never_lock_the_owner_out(tmp_path: Path) -> None:
    """Someone guesses alice's password from 127.0.0.2, one guess every 0.5 s (each after
    the answer to the last): alice, from 127.0.0.1, logs in at once every time."""
    env = {"CHATSCREEN_LOGIN_DELAY": "0.25"}
    with running_server(tmp_path / "data", env=env) as srv:
        async def attacker(failures: asyncio.Queue[None]) -> None:
            loop = asyncio.get_running_loop()
            n = 0
            while True:
                started = loop.time()
                n += 1
                answer = await login_answer(srv, "alice", f"guess {n}", source="127.0.0.2")
                if answer.get("code") == "bad_password":
                    failures.put_nowait(None)
                await asyncio.sleep(max(0.0, started + 0.5 - loop.time()))  # its pace

        async def scenario() -> None:
            await _register(srv, "alice")
            failures: asyncio.Queue[None] = asyncio.Queue()
            task = asyncio.create_task(attacker(failures))
            try:
                async with asyncio.timeout(3 * TIMEOUT):
                    for _ in range(4):  # by then a per-account delay would be 2 s, then 4
                        await failures.get()
                loop = asyncio.get_running_loop()
                for _ in range(2):
                    alice = client(srv, "alice", password=PASSWORD)
                    start = loop.time()
                    try:
                        await alice.connect()
                        took = loop.time() - start
                    finally:
                        await alice.close()
                    assert alice.role == "member"
                    # (at most one of the attacker's checks may run before hers)
                    assert took < 2.5, f"alice's login took {took:.2f} s"
                    assert not task.done()  # the attacker goes on meanwhile
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        run(scenario())


def test_parallel_guesses_are_checked_one_after_another(tmp_path: Path) -> None:
    """30 wrong guesses on one account at the same moment: not all checked at once, but
    one after another with the delay their failures earn; the rest are told to come back
    (rate_limited) when their handshake time is up. The server logs each check that
    failed."""
    env = {"CHATSCREEN_LOGIN_DELAY": "0.5", "CHATSCREEN_HANDSHAKE_TIMEOUT": "4"}
    with running_server(tmp_path / "data", "--metrics-port", "0", env=env) as srv:
        async def scenario() -> list[dict[str, Any]]:
            await _register(srv, "dave")
            return list(await asyncio.gather(*(
                login_answer(srv, "dave", f"guess {n}", source="127.0.0.2")
                for n in range(30))))

        answers = run(scenario())
        log = srv.stderr_path.read_text()
        port = re.findall(r"Metrics: http://[\d.]+:(\d+)", "".join(srv.output))[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as r:
            metrics = r.read().decode()
    codes = [a.get("code") for a in answers]
    checked = codes.count("bad_password")
    assert 1 <= checked <= 4, codes  # 0.5 + 1 + 2 s of delays fit in the 3 s answered within
    assert codes.count("rate_limited") == 30 - checked, codes
    assert log.count("failed login as dave") == checked
    assert f"chatscreen_login_checks_total {checked}\n" in metrics  # argon2id checks


def test_the_owner_back_with_their_session_secret_passes_a_busy_address(
        tmp_path: Path) -> None:
    """Failures from an address slow down every login from it (a shared address: a NAT),
    but not the owner of a live session coming back with its secret (``resume``)."""
    env = {"CHATSCREEN_LOGIN_DELAY": "0.5"}
    with running_server(tmp_path / "data", env=env) as srv:
        async def logged(text: str, count: int) -> None:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    if srv.stderr_path.read_text().count(text) >= count:
                        return
                    await asyncio.sleep(0.02)

        async def scenario() -> None:
            await _register(srv, "alice", "bob", "carol")
            alice = await RawChat.login(srv, "alice", PASSWORD, resume="alice's secret")
            assert alice.welcomed
            for n in range(2):
                answer = await login_answer(srv, "bob", f"guess {n}")
                assert answer["code"] == "bad_password"
            guess = asyncio.create_task(login_answer(srv, "bob", "guess 3"))
            await logged("failed login as bob", 3)  # 127.0.0.2 now waits 2 s
            loop = asyncio.get_running_loop()
            start = loop.time()
            again = await RawChat.login(srv, "alice", PASSWORD, resume="alice's secret")
            assert again.welcomed, again.answer
            assert loop.time() - start < 1.0
            assert (await alice.until(lambda h: h["type"] == "error"))["code"] == "replaced"
            await alice.close()
            await again.close()
            start = loop.time()  # someone else from that address is slowed down
            assert (await login_answer(srv, "carol", PASSWORD))["type"] == "welcome"
            assert loop.time() - start >= 1.0
            assert (await guess)["code"] == "bad_password"

        run(scenario())
