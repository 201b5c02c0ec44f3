"""The package's hand-written types (clients/js/src/index.d.ts) compile against typical
uses, and refuse misuses (clients/js/test/types.ts, checked by TypeScript's compiler)."""

from __future__ import annotations

import subprocess

from tests.clients_js._support import PACKAGE_DIR


def test_the_typescript_types_accept_typical_use_and_refuse_misuse(node: str) -> None:
    tsc = PACKAGE_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    result = subprocess.run(
        [node, str(tsc), "-p", str(PACKAGE_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
