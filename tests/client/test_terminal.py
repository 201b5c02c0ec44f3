"""``athena-cdc tail`` and ``athena-cdc publish`` end to end: subprocesses against a
server subprocess, through a kill -9 and restart."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.support.servers import ServerProcess, free_port

WITHIN = 20.0
CLI = [sys.executable, "-m", "athena_cdc"]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


class Lines:
    """A stream's lines, read in the background, taken with a timeout."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            with contextlib.suppress(OSError):  # EIO: a pty whose other side closed
                for raw in stream:
                    self.queue.put(raw.decode().rstrip("\r\n"))
            self.queue.put(None)

        threading.Thread(target=read, daemon=True).start()

    def take(self, count: int) -> list[str]:
        lines: list[str] = []
        for _ in range(count):
            line = self.queue.get(timeout=WITHIN)
            assert line is not None, f"the stream ended after {lines}"
            lines.append(line)
        return lines


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(["--data-dir", str(tmp_path / "data")]) as srv:
        yield srv


def test_tail_prints_each_event_once_in_order_across_a_kill_9_and_restart(
    server: ServerProcess,
) -> None:
    published = run("publish", "orders", "-", "--url", server.ws,
                    stdin='{"n":1}\n\n2\n{"big":123456789012345678901234567890}\n')
    assert (published.returncode, published.stdout) == (0, "1\n2\n3\n"), published.stderr
    tail = subprocess.Popen([*CLI, "tail", "orders", "--since-seq", "0", "--url", server.ws,
                             "--verbose"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = Lines(tail.stdout), Lines(tail.stderr)  # type: ignore[arg-type]
        first = [json.loads(line) for line in out.take(3)]
        assert first[0] == {"type": "event", "channel": "orders", "seq": 1,
                            "ts_ms": first[0]["ts_ms"], "payload": {"n": 1}}
        assert [e["payload"] for e in first[1:]] == [2, {"big": 123456789012345678901234567890}]
        server.kill()
        server.start()
        again = run("publish", "orders", '"after the restart"', "--url", server.ws, "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["seq"] == 4
        [fourth] = [json.loads(line) for line in out.take(1)]
        assert (fourth["seq"], fourth["payload"]) == (4, "after the restart")
        notes: list[str] = []
        while not any("reconnecting" in n for n in notes):
            notes += err.take(1)
        tail.send_signal(signal.SIGINT)
        assert tail.wait(10) == 130
        assert out.queue.get(timeout=WITHIN) is None, "no event twice"
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


def test_tail_on_a_terminal_prints_readable_coloured_lines_from_the_last_n(
    server: ServerProcess,
) -> None:
    assert run("publish", "logs", "-", "--url", server.ws,
               stdin='"a"\n"b"\n{"msg":"\\u009b31m hi"}\n').returncode == 0
    controller, terminal = pty.openpty()
    tail = subprocess.Popen([*CLI, "tail", "logs", "--last", "2", "--url", server.ws],
                            stdout=terminal, stderr=subprocess.DEVNULL)
    os.close(terminal)
    try:
        lines = Lines(os.fdopen(controller, "rb")).take(2)
    finally:
        tail.kill()
        tail.wait()
    assert "\x1b[" in lines[0]
    plain = [line.replace("\x1b[0m", "").split("\x1b[") for line in lines]
    text = ["".join(part.split("m", 1)[-1] for part in parts) for parts in plain]
    assert text[0].startswith("logs #2 ") and text[0].endswith(' "b"')
    # A C1 control character in a payload is shown escaped, not sent to the terminal.
    assert text[1].startswith("logs #3 ") and text[1].endswith('{"msg":"\\u009b31m hi"}')


def test_publish_stops_at_a_line_that_is_not_json_after_sending_what_came_before(
    server: ServerProcess,
) -> None:
    result = run("publish", "x", "-", "--url", server.ws, stdin='1\n{"a":\n3\n')
    assert result.returncode == 2
    assert result.stdout == "1\n"
    assert "stdin line 2 is not JSON" in result.stderr and "Traceback" not in result.stderr
    for value in ("NaN", "1e400", "{"):
        refused = run("publish", "x", value, "--url", server.ws)
        assert refused.returncode == 2 and "not JSON" in refused.stderr, refused.stderr


def test_publish_explains_a_refusal_and_an_unreachable_server(tmp_path: Path) -> None:
    with ServerProcess(["--store", "memory", "--publish-key", "k" * 20]) as keyed:
        refused = run("publish", "x", "1", "--url", keyed.ws)
        assert refused.returncode == 1
        assert "HTTP 401 unauthorized" in refused.stderr and "--key" in refused.stderr
        assert run("publish", "x", "1", "--url", keyed.ws, "--key", "k" * 20).stdout == "1\n"
    nobody = run("publish", "x", "1", "--url", f"ws://127.0.0.1:{free_port()}/ws")
    assert nobody.returncode == 1 and "is the server running" in nobody.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["tail", "x", "--since", "yesterday"], "neither a duration"),
        (["tail", "x", "--since-seq", "1", "--last", "2"], "not allowed with"),
        (["tail", "x", "--last", "0"], "not an integer >= 1"),
        (["tail", "x", "--url", "http://h/ws"], "ws:// or wss://"),
        (["publish", "x", "1", "--url", "nonsense"], "not a server URL"),
        (["tail", "x", "--cafile", "/nonexistent/ca.pem"], "--cafile /nonexistent/ca.pem"),
        (["publish", "x", "1", "--cafile", "/nonexistent/ca.pem"], "--cafile /nonexistent/ca.pem"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(args: list[str], complaint: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert complaint in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
        result.stderr
    )


def test_tail_rereads_its_token_file_and_stays_connected_past_the_first_tokens_expiry(
    tmp_path: Path,
) -> None:
    import time

    import jwt

    secret = "athena-test-secret-of-at-least-32-bytes"

    def token(ttl: float, **claims: object) -> str:
        return jwt.encode({"exp": int(time.time() + ttl), **claims}, secret, algorithm="HS256")

    token_file = tmp_path / "token"
    token_file.write_text(token(3, channels=["org_42"]))
    stop = threading.Event()

    def renew() -> None:  # what a token-renewing job would do
        while not stop.wait(0.5):
            token_file.write_text(token(3, channels=["org_42"]))

    with ServerProcess(["--store", "memory", "--jwt-secret", secret]) as server:
        tail = subprocess.Popen([*CLI, "tail", "org_42", "--url", server.ws, "--token-file",
                                 str(token_file), "--verbose"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        renewer = threading.Thread(target=renew)
        renewer.start()
        try:
            err = Lines(tail.stderr)  # type: ignore[arg-type]
            while "live" not in err.take(1)[0]:
                pass
            time.sleep(7)  # more than twice the lifetime of each token
            publisher = run("publish", "org_42", '"still here"', "--url", server.ws,
                            "--token", token(60, publish=["*"]))
            assert publisher.stdout == "1\n", publisher.stderr
            [line] = Lines(tail.stdout).take(1)  # type: ignore[arg-type]
            assert json.loads(line)["payload"] == "still here"
            notes: list[str | None] = []
            while not err.queue.empty():
                notes.append(err.queue.get())
            assert not any("reconnecting" in (n or "") for n in notes), notes
        finally:
            stop.set()
            renewer.join()
            tail.kill()
            tail.wait()


def test_tail_without_the_client_extra_says_how_to_install_it() -> None:
    code = ("import sys\nsys.modules['websockets'] = None  # as if not installed\n"
            "from athena_cdc.cli import main\nsys.exit(main(['tail', 'x']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "pip install 'athena-cdc[client]'" in result.stderr and "Traceback" not in result.stderr
