"""What a newcomer runs in the first hour: ``python server.py`` / ``python client.py`` with
whatever Python is on the PATH, and clients that must not drag the server's code along."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from chatscreen.client import Client
from chatscreen.errors import ServerError
from tests.helpers.server import REPO, TIMEOUT, ServerProcess, run, running_server, wait_for


def test_no_client_module_imports_the_server() -> None:
    """Every module outside chatscreen.server (the clients, the app, the CLI, the shared
    code) imports, in a fresh interpreter, without chatscreen.server or argon2."""
    # (by file: pkgutil.walk_packages would import chatscreen.server itself to look inside)
    probe = ("import sys, pathlib, chatscreen\n"
             "root = pathlib.Path(chatscreen.__file__).parent\n"
             "for f in sorted(root.rglob('*.py')):\n"
             "    name = '.'.join(('chatscreen',) + f.relative_to(root).with_suffix('').parts)\n"
             "    name = name.removesuffix('.__init__')\n"
             "    if not name.startswith(('chatscreen.server', 'chatscreen.__main__')):\n"
             "        __import__(name)\n"
             "print(sorted(m for m in sys.modules\n"
             "             if m.startswith('chatscreen.server') or m == 'argon2'))\n"
             "print(len([m for m in sys.modules if m.startswith('chatscreen.')]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=3 * TIMEOUT, cwd=REPO, check=True)
    server, count = out.stdout.splitlines()
    assert server == "[]", server
    assert int(count) > 30  # the walk found the package's modules


def project_copy(where: Path, *, venv: bool) -> Path:
    """The root scripts with the project's sources next to them, as in a checkout; with a
    ``.venv`` (this test run's environment) or none, as before `make venv`."""
    where.mkdir()
    for script in ("server.py", "client.py"):
        shutil.copy(REPO / script, where / script)
    (where / "src").symlink_to(REPO / "src")
    if venv:
        (where / ".venv").symlink_to(Path(sys.prefix))
    return where


def bare_python(script: Path, *args: str, cwd: Path) -> list[str]:
    """A Python that cannot see the environment's packages (no site-packages: -S), nor
    PYTHONPATH (-I): what `python3` is outside the virtual environment."""
    return [sys.executable, "-I", "-S", str(script), *args]


def test_bare_python_without_the_deps_cannot_import_them() -> None:
    """The premise of the two tests below."""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", "import argon2"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode != 0 and "No module named 'argon2'" in out.stderr


def test_python_server_py_outside_the_venv_uses_the_projects_venv(tmp_path: Path) -> None:
    root = project_copy(tmp_path / "checkout", venv=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen(
        bare_python(root / "server.py", "--chat-port", "0", "--screen-port", "0",
                    "--host", "127.0.0.1", "--data-dir", str(tmp_path / "data"), cwd=root),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == "🚀 Server started!\n", (first, proc.poll())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=3 * TIMEOUT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    no_display = {k: v for k, v in env.items() if k != "DISPLAY"}
    out = subprocess.run(bare_python(root / "client.py", cwd=root), capture_output=True,
                         text=True, timeout=3 * TIMEOUT, cwd=root, env=no_display)
    assert out.returncode == 1 and "cannot open a window" in out.stderr, out  # the app ran


def test_python_scripts_without_a_venv_say_what_to_run(tmp_path: Path) -> None:
    root = project_copy(tmp_path / "checkout", venv=False)
    for script in ("server.py", "client.py"):
        out = subprocess.run(bare_python(root / script, cwd=root), capture_output=True,
                             text=True, timeout=3 * TIMEOUT, cwd=root)
        assert out.returncode == 1, out
        assert "Traceback" not in out.stderr, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert "chatscreen is not set up" in lines[0] and "make venv" in lines[0], lines
        assert out.stdout == ""


def test_bootstrap_checks_a_module_of_every_dependency() -> None:
    """chatscreen.bootstrap.REQUIRED follows pyproject.toml (uvloop is optional)."""
    import importlib.metadata
    import re
    import tomllib

    from chatscreen.bootstrap import REQUIRED

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower() for d in deps} - {"uvloop"}
    owners = importlib.metadata.packages_distributions()
    checked = {dist.lower() for module in REQUIRED for dist in owners.get(module, [])}
    assert wanted <= checked, wanted - checked


# -- `chatscreen admin` finds the server's data, and says what the server did ------------

ADMIN_PASSWORD = "newcomer password"


def admin(*args: str, cwd: Path, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("CHATSCREEN_DATA_DIR", "CHATSCREEN_CONFIG")}
    return subprocess.run([sys.executable, "-m", "chatscreen", "admin", *args],
                          capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=cwd,
                          env={**base, "CHATSCREEN_PASSWORD": ADMIN_PASSWORD, **(env or {})})


@pytest.mark.parametrize("command", [["create-admin", "boss"], ["add-user", "dana"],
                                     ["kick", "bob"], ["ban", "bob"], ["mute", "bob"],
                                     ["unban", "bob"], ["set-role", "bob", "member"],
                                     ["list"]])
def test_admin_in_a_folder_without_server_data_fails_clearly(tmp_path: Path,
                                                              command: list[str]) -> None:
    out = admin(*command, cwd=tmp_path)
    assert out.returncode == 1, out
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no chatscreen data in ./data"), lines
    assert "--data-dir" in lines[0] and "--config" in lines[0]
    assert not (tmp_path / "data").exists()


def test_admin_finds_the_data_by_flag_environment_or_config(tmp_path: Path) -> None:
    data = tmp_path / "srv-data"
    out = admin("--data-dir", str(data), "create-admin", "boss", cwd=tmp_path)  # a new one
    assert out.returncode == 0 and "Created admin 'boss'" in out.stdout, out
    config = tmp_path / "chatscreen.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n')
    ways: list[tuple[list[str], dict[str, str]]] = [
        (["--config", str(config)], {}), ([], {"CHATSCREEN_CONFIG": str(config)}),
        ([], {"CHATSCREEN_DATA_DIR": str(data)})]
    for flags, env in ways:
        out = admin(*flags, "list", cwd=tmp_path, env=env)
        assert out.returncode == 0 and "boss" in out.stdout, (flags, env, out)
    # ./data is the default when it is a server's (the folder the server was started in)
    (tmp_path / "here").mkdir()
    assert admin("--data-dir", "data", "add-user", "dana", cwd=tmp_path / "here").returncode == 0
    out = admin("list", cwd=tmp_path / "here")
    assert out.returncode == 0 and "dana" in out.stdout, out
    # ... and an existing but empty data directory is not silently made one
    out = admin("--data-dir", str(tmp_path / "nothing"), "kick", "bob", cwd=tmp_path)
    assert out.returncode == 1 and "no chatscreen data in" in out.stderr, out


def client(srv: ServerProcess, user: str) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT)


def test_admin_kick_reports_what_the_running_server_did(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert admin("--data-dir", str(data), "create-admin", "boss", cwd=tmp_path).returncode == 0

    async def scenario(srv: ServerProcess) -> None:
        async with client(srv, "bob") as bob, client(srv, "eve") as eve:
            await bob.join("general")
            await eve.join("general")
            out = await asyncio.to_thread(admin, "kick", "bob", "--reason", "enough",
                                          cwd=tmp_path)
            assert out.returncode == 0, out
            assert out.stdout.strip() == "bob was kicked", out
            ev = await wait_for(bob, lambda e: e.type == "status"
                                and e["state"] == "disconnected")
            assert "kicked by an admin: enough" in ev["reason"]
            out = await asyncio.to_thread(admin, "kick", "carol", cwd=tmp_path)
            assert out.returncode == 1, out
            assert out.stderr.strip() == "carol is not connected: nobody was kicked", out

    with running_server(data) as srv:
        run(scenario(srv))
    # no server: a kick says nothing happened
    out = admin("kick", "bob", cwd=tmp_path)
    assert out.returncode == 1, out
    assert out.stderr.strip() == ("no server is running with the data directory data: "
                                  "nobody was kicked"), out


def test_admin_changes_report_what_the_running_server_did(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert admin("--data-dir", str(data), "create-admin", "boss", cwd=tmp_path).returncode == 0

    async def scenario(srv: ServerProcess) -> None:
        async with client(srv, "eve") as eve:
            await eve.join("general")
            out = await asyncio.to_thread(admin, "mute", "eve", "--for", "1h", cwd=tmp_path)
            assert out.returncode == 0, out
            assert out.stdout.splitlines()[0].startswith("Muted eve until"), out
            assert out.stdout.splitlines()[1] == ("the running server applied it: eve is "
                                                  "connected"), out
            with pytest.raises(ServerError) as info:
                await eve.say("general", "still here?")
            assert info.value.code == "muted"
            out = await asyncio.to_thread(admin, "ban", "eve", cwd=tmp_path)
            assert out.stdout.splitlines()[1] == ("the running server applied it: eve was "
                                                  "disconnected"), out
            out = await asyncio.to_thread(admin, "ban", "zed", cwd=tmp_path)
            assert out.stdout.splitlines()[1] == ("the running server applied it: zed is "
                                                  "not connected"), out
            out = await asyncio.to_thread(admin, "set-role", "boss", "moderator", cwd=tmp_path)
            assert out.stdout.splitlines()[1] == ("the running server applied it: boss is "
                                                  "not connected"), out
            out = await asyncio.to_thread(admin, "ban", "--address", "127.0.0.9", cwd=tmp_path)
            assert out.stdout.splitlines()[1] == ("the running server applied it: no user(s) "
                                                  "connected from 127.0.0.9"), out
            async with client(srv, "ann") as ann:
                await ann.join("general")
                out = await asyncio.to_thread(admin, "ban", "--address", "127.0.0.1",
                                              cwd=tmp_path)
                assert out.stdout.splitlines()[1] == ("the running server applied it: 1 "
                                                      "user(s) connected from 127.0.0.1 "
                                                      "disconnected"), out

    with running_server(data) as srv:
        run(scenario(srv))
    # no server: a ban is stored for the next start
    out = admin("ban", "bob", cwd=tmp_path)
    assert out.returncode == 0, out
    assert out.stdout.splitlines()[1] == ("no server is running with the data directory data: "
                                          "it applies when the server reads it, at the latest "
                                          "when it starts"), out


def test_admin_kick_says_so_when_a_running_server_does_not_answer(tmp_path: Path) -> None:
    """A server stopped (SIGSTOP) still holds its data directory: the kick waits for it,
    then is withdrawn, so that it cannot happen later unannounced."""
    data = tmp_path / "data"
    assert admin("--data-dir", str(data), "create-admin", "boss", cwd=tmp_path).returncode == 0
    with running_server(data) as srv:
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGSTOP)
        try:
            out = admin("kick", "bob", cwd=tmp_path)
        finally:
            srv.proc.send_signal(signal.SIGCONT)
    assert out.returncode == 1, out
    assert out.stderr.strip() == ("no running server answered within 3 s (is it running, "
                                  "with the data directory data?): nobody was kicked"), out
    db = sqlite3.connect(data / "chatscreen.db")
    try:
        assert db.execute("SELECT count(*) FROM admin_requests").fetchone() == (0,)
    finally:
        db.close()


# -- `make run ARGS=...`: the app on the server's ports; Ctrl+C ends both --------------------

GUI_TIMEOUT = 2 * TIMEOUT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def wait_for_line(lines: queue.Queue[str | None], pattern: str) -> None:
    deadline = time.monotonic() + 3 * TIMEOUT
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if pattern in line:
            return
    raise AssertionError(f"no {pattern!r} in {seen}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_group_gone(pgid: int, what: str) -> None:
    deadline = time.monotonic() + 3 * TIMEOUT
    while group_alive(pgid):
        if time.monotonic() > deadline:
            left = subprocess.run(["ps", "-o", "pid,args", "-g", str(pgid)],
                                  capture_output=True, text=True).stdout
            raise AssertionError(f"{what}: still running:\n{left}")
        time.sleep(0.05)  # polling a process table, with a deadline


def app_window(display: str) -> str:
    """The app's window, once it is shown (xdotool waits for it, bounded)."""
    out = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--class",
                          "chatscreen"], capture_output=True, text=True, timeout=GUI_TIMEOUT,
                         env={**os.environ, "DISPLAY": display}, check=True)
    return out.stdout.split()[-1]


def press_return_in(display: str, window: str) -> None:
    env = {**os.environ, "DISPLAY": display}
    subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True,
                   timeout=GUI_TIMEOUT)
    subprocess.run(["xdotool", "key", "Return"], env=env, check=True, timeout=GUI_TIMEOUT)


def wait_remembered(config: Path, want: dict[str, object]) -> None:
    """The app saves the server and ports it connected to, once connected."""
    path = config / "client.toml"
    deadline = time.monotonic() + GUI_TIMEOUT
    got: dict[str, object] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
            got = tomllib.loads(path.read_text())["client"]
            if all(got.get(k) == v for k, v in want.items()):
                return
        time.sleep(0.05)  # polling a file the app writes, with a deadline
    raise AssertionError(f"the app did not connect to {want}: it remembers {got}")


def remember_a_user(config: Path) -> None:
    """A returning newcomer: the app remembers the name, and the defaults' server."""
    config.mkdir(parents=True, exist_ok=True)
    (config / "client.toml").write_text('[client]\nuser = "newbie"\nserver = "localhost"\n'
                                        "screen_port = 9998\n")


def test_make_run_opens_the_app_on_the_servers_ports_and_ctrl_c_ends_both(
        xvfb_display: str, tmp_path: Path, private_config_dir: Path) -> None:
    chat_port, screen_port = free_port(), free_port()
    remember_a_user(private_config_dir)
    venv = Path(sys.prefix)
    args = (f"--chat-port {chat_port} --screen-port {screen_port} --host 127.0.0.1 "
            f"--data-dir {tmp_path / 'data'}")
    # -o: the venv is there already (this test's own): make must not build one
    proc = subprocess.Popen(["make", "-s", "-o", f"{venv}/.stamp", "run", f"VENV={venv}",
                             f"ARGS={args}"], cwd=REPO, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**{k: v for k, v in os.environ.items()  # not `make test`'s
                                    if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
                                 "DISPLAY": xvfb_display, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for_line(lines_of(proc), "Press Ctrl+C to stop the server")
        press_return_in(xvfb_display, app_window(xvfb_display))  # Connect, as pre-filled
        wait_remembered(private_config_dir, {"user": "newbie",
                                             "server": f"127.0.0.1:{chat_port}",
                                             "screen_port": screen_port})
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C in the terminal
        proc.wait(timeout=3 * TIMEOUT)
        wait_group_gone(proc.pid, "after Ctrl+C")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_app_started_with_the_server_closes_when_the_server_stops(
        xvfb_display: str, tmp_path: Path, private_config_dir: Path) -> None:
    """Port 0 (any free port): the app gets the ports chosen; SIGTERM to the server alone
    (a service manager, `kill`) ends the app too."""
    remember_a_user(private_config_dir)
    proc = subprocess.Popen([sys.executable, "-m", "chatscreen", "server", "--app",
                             "--chat-port", "0", "--screen-port", "0", "--host", "127.0.0.1",
                             "--data-dir", str(tmp_path / "data")], cwd=REPO, text=True,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "DISPLAY": xvfb_display,
                                 "PYTHONUNBUFFERED": "1"})
    try:
        lines = lines_of(proc)
        banner: list[str] = []
        while not banner or "Press Ctrl+C" not in banner[-1]:
            line = lines.get(timeout=3 * TIMEOUT)
            assert line is not None, banner
            banner.append(line)
        ports = [int(line.rsplit(":", 1)[1]) for line in banner if " server: " in line]
        press_return_in(xvfb_display, app_window(xvfb_display))
        wait_remembered(private_config_dir, {"server": f"127.0.0.1:{ports[0]}",
                                             "screen_port": ports[1]})
        proc.terminate()
        assert proc.wait(timeout=3 * TIMEOUT) == 0
        wait_group_gone(proc.pid, "after the server stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
