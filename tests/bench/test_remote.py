"""``athena-cdc bench tenants --url``: the installed load generator against a server it
did not start (a real ``athena-cdc serve``), run from outside any checkout; and the wheel,
which holds the load generator but none of the comparison harness (``bench/``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jwt
import pytest

from tests.support.servers import server_process

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--channels", "12", "--subscribers", "2", "--producers", "3", "--rate", "300",
         "--duration", "0.4", "--warmup", "0.1", "--workers", "1", "--timeout", "10"]


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # From a folder that is not a checkout, without PYTHONPATH: only what is installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "athena_cdc", "bench", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.timeout(60)
def test_the_load_generator_reports_every_clients_deliveries(tmp_path: Path) -> None:
    with server_process("--store", "memory") as server:
        result = bench(tmp_path, "tenants", "--url", server.ws, *SMALL, "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["published"] == 120 and row["expected"] == row["received"] == 240
    assert row["complete"] is True and row["clients_short"] == row["clients_excess"] == 0
    assert row["gaps"] == row["duplicates"] == row["lost"] == row["excess"] == 0
    assert row["samples"] == 240 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert row["publish_rate"] > 0 and row["ack_p50_ms"] <= row["ack_p99_ms"]
    assert row["publish_url"] == server.base
    assert not any("cpu" in key and "server" in key for key in row)  # it cannot see it


@pytest.mark.timeout(60)
def test_with_auth_on_it_sends_the_token_and_without_one_says_why_it_stopped(
    tmp_path: Path,
) -> None:
    secret = "s" * 48
    token = jwt.encode({"exp": int(time.time()) + 600, "channels": ["*"], "publish": ["*"]},
                       secret, algorithm="HS256")
    (tmp_path / "token").write_text(token + "\n")
    with server_process("--store", "memory", f"--jwt-secret={secret}") as server:
        refused = bench(tmp_path, "tenants", "--url", server.ws, *SMALL)
        result = bench(tmp_path, "tenants", "--url", server.ws, *SMALL,
                       "--token-file", str(tmp_path / "token"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1].startswith("athena-cdc bench: error: 24 of 24 ")
    assert result.returncode == 0, result.stderr
    assert "held of 300/s asked" in result.stdout
    assert "240 of 240" in result.stdout and "once, in order" in result.stdout
    assert "the server's CPU is not seen from here" in result.stdout


def test_the_comparison_scenarios_point_to_the_checkout(tmp_path: Path) -> None:
    result = bench(tmp_path, "burst", "--server", "athena")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "python -m bench burst" in result.stderr


@pytest.mark.timeout(120)
def test_the_wheel_holds_the_load_generator_and_no_harness(tmp_path: Path) -> None:
    # Built from a copy, so no build/ or *.egg-info lands in the checkout.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, project / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(project)],
                   check=True, capture_output=True, timeout=110)
    [wheel] = (tmp_path / "dist").glob("athena_cdc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "athena_cdc/bench/remote.py" in names and "athena_cdc/bench/loadgen.py" in names
    harness = ("scenarios", "servers", "verdicts", "charts", "report", "baselines",
               "redis_bench", "console_cost", "postgres_source", "naive_websockets", "nats")
    assert [n for n in names if any(word in n for word in harness)] == []
    assert not any(n.startswith("bench/") for n in names)
