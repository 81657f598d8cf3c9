from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.helpers.xvfb import XvfbError, run_xvfb


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """A private 1920x1080x24 Xvfb server for the whole session; yields e.g. ``":5"``."""
    with contextlib.ExitStack() as stack:
        try:
            display = stack.enter_context(run_xvfb())
        except XvfbError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield display
