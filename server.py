#!/usr/bin/env python3
"""Start the chatscreen server, as in the original: ``python server.py`` (see README.md).

Flags are those of ``chatscreen server``; ``python server.py --help`` lists them. Any
Python 3.11 will do: without the project's packages it runs again with the ``.venv`` that
`make venv` made next to this file (see chatscreen.bootstrap).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))

from chatscreen.bootstrap import ensure_environment  # noqa: E402

if __name__ == "__main__":
    ensure_environment(ROOT, "server.py")
    from chatscreen.cli import main

    sys.exit(main(["server", *sys.argv[1:]]))
