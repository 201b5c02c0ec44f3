"""Headless Chromium for the console's browser tests, driven by Playwright.

The browser is the machine's own (Debian's ``chromium`` package, or the executable
named by ``ATHENA_CDC_CHROMIUM``): Playwright never downloads one here. Without it the
tests fail and say what to install -- they do not skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ENV = "ATHENA_CDC_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Where the screenshots go (default: the test session's temporary directory).
ARTIFACTS_ENV = "ATHENA_CDC_ARTIFACTS"


def chromium_path() -> str:
    """The Chromium executable, or a test failure that says how to get one."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"{CHROMIUM_ENV}={configured} is not an executable file", pytrace=False)
        return configured
    found = DEFAULT_CHROMIUM if os.access(DEFAULT_CHROMIUM, os.X_OK) else shutil.which("chromium")
    if found is None:
        pytest.fail(
            "the console's browser tests need Chromium: install Debian's package "
            "(apt-get update && apt-get install -y chromium; .ci/run does it when it is "
            f"missing) or set {CHROMIUM_ENV} to a Chromium executable",
            pytrace=False,
        )
    return found


def artifacts_dir(default: Path) -> Path:
    path = Path(os.environ.get(ARTIFACTS_ENV) or default)
    path.mkdir(parents=True, exist_ok=True)
    return path
