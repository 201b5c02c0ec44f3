"""``--workers``: a number of processes, or ``auto``; from a flag, the environment or the
config file, like every option."""

from __future__ import annotations

import os
from pathlib import Path

from athena_cdc.cli import build_parser
from athena_cdc.config import Settings, load_settings


def settings(*argv: str, env: dict[str, str] | None = None) -> Settings:
    return load_settings(build_parser().parse_args(["serve", *argv]), env or {})


def test_one_worker_by_default() -> None:
    assert settings().workers == 1


def test_auto_is_one_worker_per_core_this_process_may_use() -> None:
    assert settings("--workers", "auto").workers == len(os.sched_getaffinity(0))
    assert settings(env={"ATHENA_CDC_WORKERS": "AUTO"}).workers == len(os.sched_getaffinity(0))


def test_workers_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "athena.toml"
    config.write_text("workers = 3\n")
    assert settings("--config", str(config)).workers == 3
    assert settings("--config", str(config), "--workers", "2").workers == 2
