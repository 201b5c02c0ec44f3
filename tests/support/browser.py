"""The Chromium the browser tests drive (tests/console/ and tests/clients_js/).

``$ATHENA_CDC_CHROMIUM``, else the machine's (``chromium``, ``chromium-browser`` or
``google-chrome`` on PATH), else ``@sparticuz/chromium`` from the npm registry: a headless
Chromium for x86-64 Linux, brotli-compressed inside the npm package, installed with the
repository's npm (tests/support/toolchain.py, which falls back to the test extra's Node wheel)
and unpacked once into the tests' cache. So the README's test command needs no Chromium on
the machine. ``ATHENA_CDC_TEST_USE_WHEELS=1`` ignores the machine's (and the variable) and
uses only the npm one: CI runs the browser tests once that way, so the fallback cannot rot.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

from tests.support.toolchain import ToolMissing, node_and_npm, wheels_only

CHROMIUM_ENV = "ATHENA_CDC_CHROMIUM"
SYSTEM_NAMES = ("chromium", "chromium-browser", "google-chrome")
NPM_PACKAGE = "@sparticuz/chromium"
# Pinned: a new version is a new cache directory, never a silent change under the tests.
NPM_VERSION = "153.0.0"
# Beside pytest's own cache (git ignores it); one directory per pinned version.
CACHE_DIR = (
    Path(__file__).resolve().parents[2]
    / ".pytest_cache"
    / "athena-cdc"
    / f"sparticuz-chromium-{NPM_VERSION}"
)

# The package unpacks into os.tmpdir() (TMPDIR here: the staging directory): chromium and
# its SwiftShader libraries, and, asked for explicitly, al2023/lib -- the NSS, NSPR and
# expat it was built with. A machine without Chromium usually lacks those (they come with
# Debian's chromium package), so the launcher puts them first on the library path.
_UNPACK_JS = f"""
import {{ join }} from "node:path";
import chromium, {{ inflate }} from "{NPM_PACKAGE}";
const bin = join(process.cwd(), "node_modules", "{NPM_PACKAGE}", "bin");
console.log(await chromium.executablePath(bin));
await inflate(join(bin, "al2023.tar.br"));
"""

_LAUNCHER = f"""#!/bin/sh
# {NPM_PACKAGE} {NPM_VERSION} from the npm registry, unpacked by tests/support/browser.py.
here=$(dirname -- "$0")
LD_LIBRARY_PATH="$here/unpacked/al2023/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" \\
    exec "$here/unpacked/chromium" "$@"
"""


def chromium_executable() -> str:
    """A Chromium executable for Playwright's ``executable_path``; ToolMissing says why not."""
    if not wheels_only():
        configured = os.environ.get(CHROMIUM_ENV)
        if configured:
            if not os.access(configured, os.X_OK):
                raise ToolMissing(f"{CHROMIUM_ENV}={configured} is not an executable file")
            return configured
        for name in SYSTEM_NAMES:
            found = shutil.which(name)
            if found is not None:
                return found
    return str(npm_chromium())


@cache
def npm_chromium() -> Path:
    """The launcher of the npm registry's Chromium, installed into CACHE_DIR on first use."""
    launcher = CACHE_DIR / "chromium"
    if launcher.exists():
        return launcher
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ToolMissing(
            f"no Chromium found, and the npm registry's ({NPM_PACKAGE}) is for x86-64 Linux "
            f"only: install Chromium or set {CHROMIUM_ENV} to a Chromium executable"
        )
    node_cmd, npm_cmd = node_and_npm()
    CACHE_DIR.parent.mkdir(parents=True, exist_ok=True)
    # A session killed mid-install leaves its staging directory (up to 300 MB) behind.
    for stale in CACHE_DIR.parent.glob("chromium-install-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    # Built aside and renamed into place, so an interrupted install is never taken as done.
    staging = Path(tempfile.mkdtemp(prefix="chromium-install-", dir=CACHE_DIR.parent))
    try:
        # npm runs package scripts with whatever "node" is on PATH: make it this one.
        path = f"{Path(node_cmd[0]).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        _run(
            [*npm_cmd, "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error",
             "--ignore-scripts", "--prefix", str(staging), f"{NPM_PACKAGE}@{NPM_VERSION}"],
            cwd=staging, env={**os.environ, "PATH": path},
        )  # fmt: skip
        (staging / "unpacked").mkdir()
        _run(
            [*node_cmd, "--input-type=module", "-e", _UNPACK_JS],
            cwd=staging, env={**os.environ, "TMPDIR": str(staging / "unpacked")},
        )  # fmt: skip
        # The compressed copies (70 MB) are not needed once unpacked.
        shutil.rmtree(staging / "node_modules")
        (staging / "chromium").write_text(_LAUNCHER)
        (staging / "chromium").chmod(0o755)
        _run([str(staging / "chromium"), "--version"], cwd=staging, env=dict(os.environ))
        try:
            staging.rename(CACHE_DIR)
        except OSError:
            if not launcher.exists():  # not another session's finished install: a failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return launcher


def _run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise ToolMissing(
            f"installing Chromium from the npm registry ({NPM_PACKAGE}@{NPM_VERSION}) failed "
            f"at {argv[0]} (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
            f"Install Chromium (e.g. apt-get install chromium) or set {CHROMIUM_ENV}."
        )
