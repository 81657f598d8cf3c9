"""``python server.py`` and ``python client.py`` with any Python: the root scripts run this
before anything else, with nothing but the standard library.

If this Python lacks the project's packages (it is not the virtual environment `make venv`
builds), the scripts run again with the ``.venv`` next to them; without one, they say in one
line what to run instead of ending in a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# The modules of the packages in pyproject.toml's dependencies that every command needs.
REQUIRED = ("argon2", "cryptography", "numpy", "PIL", "simplejpeg", "mss", "av",
            "confusables", "prompt_toolkit", "Xlib")
_RETRIED = "CHATSCREEN_BOOTSTRAP_PYTHON"  # set when we re-ran: never loop


def missing_module() -> str | None:
    """The first required module this Python cannot import (it is not imported), or None."""
    for name in REQUIRED:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def venv_python(root: Path) -> Path | None:
    for candidate in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" /
                      "python.exe"):
        if candidate.exists():
            return candidate
    return None


def ensure_environment(root: Path, script: str) -> None:
    """Return if this Python has the project's packages; else re-run ``script`` (with the
    same arguments) with ``root``'s ``.venv``, or exit with one line saying what to do."""
    module = missing_module()
    if module is None:
        return
    python = venv_python(root)
    if python is not None and os.environ.get(_RETRIED) != str(python):
        os.environ[_RETRIED] = str(python)
        os.execv(python, [str(python), str(root / script), *sys.argv[1:]])
    if python is not None:
        why = f"its virtual environment {root / '.venv'} has no module {module!r}"
        todo = "run `make venv` again"
    else:
        why = (f"this Python ({sys.executable}) has no module {module!r} and there is no "
               f"{root / '.venv'}")
        todo = "run `make run` (or `make venv`) first"
    print(f"chatscreen is not set up: {why}: {todo}, then `python {script}`", file=sys.stderr)
    raise SystemExit(1)
