#!/usr/bin/env python3
"""Start the chatscreen desktop client, as in the original: ``python client.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from chatscreen.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["client", *sys.argv[1:]]))
