"""``athena-cdc bench tenants --url``: the installed load generator against a server it
did not start (a real ``athena-cdc serve``), run from outside any checkout; and the wheel,
which holds the load generator but none of the comparison harness (``bench/``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jwt
import pytest
from aiohttp import web

from tests.support.servers import free_port, server_process

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


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("athena-cdc bench: error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "ws://[::1/ws"], "--url"),  # urlsplit raised ValueError: a traceback
        (["--url", "ws://127.0.0.1:99999/ws"], "--url"),  # was found after 2,000 connects
        (["--publish-url", "http://[::1"], "--publish-url"),
        (["--rate", "0"], "--rate"),  # argparse's 10 lines of usage before the error
        (["--rate", "abc"], "--rate"),
        (["--rate", "nan"], "--rate"),  # nan and inf were taken, and the run began
        (["--rate", "inf"], "--rate"),
        (["--rate", "1e30"], "--rate"),
        (["--duration", "inf"], "--duration"),
        (["--duration", "1e20"], "--duration"),
        (["--warmup", "nan"], "--warmup"),
        (["--timeout", "inf"], "--timeout"),
        (["--payload-bytes", "99999999999"], "--payload-bytes"),  # a 100 GB payload
        (["--channels", "99999999999"], "--channels"),  # hung building 2e11 names
        (["--subscribers", "100000"], "--subscribers"),
        (["--producers", "1000000"], "--producers"),
        (["--workers", "1000"], "--workers"),  # hung starting 1,000 processes
    ],
)
def test_absurd_options_are_one_line_and_exit_2_before_any_connection(
    tmp_path: Path, args: list[str], says: str
) -> None:
    # Nothing listens there: an option that slipped through would fail on connecting.
    url = f"ws://127.0.0.1:{free_port()}/ws"
    line = one_error_line(bench(tmp_path, "tenants", "--url", url, *args))
    assert says in line, line


async def test_a_websocket_server_that_is_not_athena_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    """An echo server accepts the upgrade but never says "subscribed": the run waited
    60 s, then said only "TimeoutError: "."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "athena_cdc", "bench", "tenants",
            "--url", f"ws://127.0.0.1:{port}/ws", *SMALL[:-2], "--timeout", "2",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 40)
        took = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert proc.returncode == 2, err
    text = err.decode()
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("athena-cdc bench: error: ") and "subscribed" in last, last
    assert "athena-cdc server" in last, last
    assert took < 20, took


@pytest.mark.timeout(90)
@pytest.mark.parametrize("moment", ["connecting", "publishing"])
def test_ctrl_c_exits_130_without_a_traceback(tmp_path: Path, moment: str) -> None:
    """A terminal's Ctrl-C reaches the whole process group: the load generator's
    worker processes printed a KeyboardInterrupt traceback each."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with server_process("--store", "memory") as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "athena_cdc", "bench", "tenants", "--url", server.ws,
             "--channels", "20", "--duration", "30", "--rate", "200", "--workers", "2"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )
        assert proc.stderr is not None
        seen = []
        wanted = "connecting" if moment == "connecting" else "published"
        for line in proc.stderr:
            seen.append(line)
            if wanted in line:
                break
        if moment == "connecting":
            time.sleep(0.3)  # the workers are up, connecting
        os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    stderr = "".join(seen) + err
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
