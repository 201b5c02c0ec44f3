"""Logs: readable lines by default, one JSON object per line on request."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from tests.support.servers import free_port


def run_briefly(*args: str) -> list[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "athena_cdc",
            "serve",
            "--store",
            "memory",
            "--port",
            str(port),
            *args,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    return [line for line in err.splitlines() if line.strip()]


def test_json_logs_are_one_object_per_line() -> None:
    lines = run_briefly("--log-format", "json")
    entries = [json.loads(line) for line in lines]
    assert any("listening on ws://127.0.0.1:" in e["message"] for e in entries)
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
    assert any(e["message"] == "stopped" for e in entries)


def test_text_logs_read_as_sentences() -> None:
    lines = run_briefly()
    assert any("INFO" in line and "listening on ws://127.0.0.1:" in line for line in lines)
    assert any("SIGTERM received: draining" in line for line in lines)
