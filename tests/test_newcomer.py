"""What a newcomer runs in the first hour: ``python server.py`` / ``python client.py`` with
whatever Python is on the PATH, and clients that must not drag the server's code along."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.server import REPO, TIMEOUT

# Every client-side module: none may import chatscreen.server (nor its dependencies).
CLIENT_MODULES = ("chatscreen.commands", "chatscreen.client", "chatscreen.gui",
                  "chatscreen.gui.app", "chatscreen.gui.dialogs", "chatscreen.viewer",
                  "chatscreen.text", "chatscreen.sharing", "chatscreen.resume",
                  "chatscreen.capture", "chatscreen.tls", "chatscreen.cli")


def test_no_client_module_imports_the_server() -> None:
    probe = (f"import sys\nfor m in {CLIENT_MODULES!r}: __import__(m)\n"
             "print(sorted(m for m in sys.modules\n"
             "             if m.startswith('chatscreen.server') or m == 'argon2'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=3 * TIMEOUT, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout


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
