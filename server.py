#!/usr/bin/env python3
"""Start the chatscreen server, as in the original: ``python server.py`` (see README.md).

Flags are those of ``chatscreen server``; ``python server.py --help`` lists them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from chatscreen.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["server", *sys.argv[1:]]))
