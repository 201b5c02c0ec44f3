"""Shared fixtures: servers on free ports, with each log backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from athena_cdc.server.app import AthenaServer
from tests.support.servers import running_server


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both log backends."""
    value: str = request.param
    return value


@pytest.fixture
async def server(store: str, tmp_path: Path) -> AsyncIterator[AthenaServer]:
    """A server on a free port, with the backend of the ``store`` parameter."""
    async with running_server(store=store, data_dir=str(tmp_path / "data")) as srv:
        yield srv


@pytest.fixture
async def memory_server(tmp_path: Path) -> AsyncIterator[AthenaServer]:
    async with running_server(store="memory") as srv:
        yield srv


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a failed test here: CI must not pass by not running things."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        reporter.write_line("skipped tests count as failures (see tests/conftest.py)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
