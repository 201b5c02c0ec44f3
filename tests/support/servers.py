"""Start athena-cdc for tests: in-process (fast) or as a subprocess (for kill tests)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from athena_cdc.config import Settings
from athena_cdc.server.app import AthenaServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_server(**overrides: object) -> AsyncIterator[AthenaServer]:
    """An in-process server on a free port; keyword arguments override Settings."""
    settings = Settings(port=0, **overrides)  # type: ignore[arg-type]
    server = AthenaServer(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def ws_url(server: AthenaServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


def http_url(server: AthenaServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@dataclass
class ServerProcess:
    """``athena-cdc serve`` in a subprocess."""

    args: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 20.0) -> None:
        cmd = [sys.executable, "-m", "athena_cdc", "serve", "--port", str(self.port), *self.args]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {cmd}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.base + "/health", timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def server_process(*args: str, log_path: Path | None = None) -> Iterator[ServerProcess]:
    proc = ServerProcess(list(args), log_path=log_path)
    with proc:
        yield proc

