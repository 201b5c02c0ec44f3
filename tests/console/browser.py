"""Headless Chromium for the console's browser tests, driven by Playwright.

Which Chromium is tests/support/browser.py's choice (the machine's, else the npm
registry's); Playwright never downloads one. Without one the tests fail and say why --
they do not skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.browser import chromium_executable
from tests.support.toolchain import ToolMissing

# Where the screenshots go (default: the test session's temporary directory).
ARTIFACTS_ENV = "ATHENA_CDC_ARTIFACTS"


def chromium_path() -> str:
    """The Chromium executable, or a test failure that says how to get one."""
    try:
        return chromium_executable()
    except ToolMissing as exc:
        pytest.fail(f"the console's browser tests need Chromium: {exc}", pytrace=False)


def artifacts_dir(default: Path) -> Path:
    path = Path(os.environ.get(ARTIFACTS_ENV) or default)
    path.mkdir(parents=True, exist_ok=True)
    return path
