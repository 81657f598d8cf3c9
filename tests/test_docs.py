"""docs/security.md backs every claim with a named test: each name it gives must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_named_in_security_md_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    named = set(re.findall(r"\b(test_\w+)::(test_\w+)", text))
    assert len(named) > 50, "security.md names its tests as test_module::test_name"
    missing = []
    for module, test in sorted(named):
        path = ROOT / "tests" / f"{module}.py"
        source = path.read_text() if path.exists() else ""
        if not re.search(rf"^(async )?def {test}\(", source, re.MULTILINE):
            missing.append(f"{module}::{test}")
    assert not missing, f"security.md names tests that do not exist: {missing}"
