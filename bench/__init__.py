"""Benchmarks (`make bench`). Each run uses its own client config directory, so that
certificates pinned by earlier runs (servers on reused ports) do not get in the way."""

import os
import tempfile

os.environ.setdefault("CHATSCREEN_CONFIG_DIR", tempfile.mkdtemp(prefix="chatscreen-bench-"))
