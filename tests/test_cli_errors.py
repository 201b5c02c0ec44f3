"""Every wrong invocation: one line naming the option, the value and what would be right; exit 2.

Each case is run as a user would: through ``athena-cdc``'s entry point (in-process where that
is faithful, as a subprocess where the case needs another user or a missing module).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from athena_cdc import cli

NOBODY = 65534


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Path], list[str]]
    # Fragments the one line must contain: the option, the value, and the fix.
    says: Callable[[Path], list[str]]
    setup: Callable[[Path], None] = field(default=lambda _: None)


def _file(path: Path) -> None:
    (path / "plain-file").write_text("not a directory\n")


def _binary(path: Path) -> None:
    (path / "bin.toml").write_bytes(b"\xff\xfe\x00")


def _dangling(path: Path) -> None:
    (path / "link").symlink_to(path / "gone")


CASES = [
    Case(
        "data dir is a file",
        lambda t: ["serve", "--data-dir", str(t / "plain-file")],
        lambda t: ["--data-dir", str(t / "plain-file"), "is a file", "give a directory"],
        _file,
    ),
    Case(
        "data dir under a file",
        lambda t: ["serve", "--data-dir", str(t / "plain-file" / "sub")],
        lambda t: ["--data-dir", str(t / "plain-file" / "sub"), "cannot create it",
                   "give a directory"],
        _file,
    ),
    Case(
        "data dir is a dangling link",
        lambda t: ["serve", "--data-dir", str(t / "link")],
        lambda t: ["--data-dir", str(t / "link"), "symbolic link to nowhere", "give a directory"],
        _dangling,
    ),
    Case(
        "config is a directory",
        lambda t: ["serve", "--store", "memory", "--config", str(t)],
        lambda t: ["--config", str(t), "is a directory", "give the path of a TOML file"],
    ),
    Case(
        "config is missing",
        lambda t: ["serve", "--store", "memory", "--config", str(t / "nope.toml")],
        lambda t: ["--config", str(t / "nope.toml"), "does not exist", "TOML file"],
    ),
    Case(
        "config is binary",
        lambda t: ["serve", "--store", "memory", "--config", str(t / "bin.toml")],
        lambda t: ["--config", str(t / "bin.toml"), "not UTF-8", "TOML file"],
        _binary,
    ),
    Case(
        "host does not resolve",
        lambda t: ["serve", "--store", "memory", "--host", "no-such-host.invalid"],
        lambda t: ["--host", "no-such-host.invalid", "cannot be resolved", "127.0.0.1"],
    ),
    Case(
        "port is not a number",
        lambda t: ["serve", "--store", "memory", "--port", "abc"],
        lambda t: ["--port", "abc", "between 0 and 65535"],
    ),
    Case(
        "port out of range",
        lambda t: ["serve", "--store", "memory", "--port", "70000"],
        lambda t: ["--port", "70000", "between 0 and 65535"],
    ),
    Case(
        "rate is not a number",
        lambda t: ["serve", "--store", "memory", "--client-rate-limit", "fast"],
        lambda t: ["--client-rate-limit", "fast", "such as 100"],
    ),
    Case(
        "misspelt option is not abbreviated into another",
        lambda t: ["serve", "--prot", "1"],
        lambda t: ["athena-cdc serve:", "--prot", "did you mean --port?", "serve --help"],
    ),
    Case(
        "unknown option is reported by serve",
        lambda t: ["serve", "--colour", "red"],
        lambda t: ["athena-cdc serve:", "--colour", "athena-cdc serve --help"],
    ),
    Case(
        "option without its value",
        lambda t: ["serve", "--port"],
        lambda t: ["athena-cdc serve:", "--port", "expected one argument", "serve --help"],
    ),
    Case(
        "unknown command",
        lambda t: ["sevre"],
        lambda t: ["sevre", "serve", "athena-cdc --help"],
    ),
]


def run_main(argv: list[str], cwd: Path) -> tuple[int, str]:
    """``athena-cdc ARGV`` in-process: exit code and stderr."""
    err = io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)  # anything relative (the default data dir) lands in the test's directory
    try:
        with contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(previous)
    return code, err.getvalue()


def assert_one_line(code: int, stderr: str, fragments: list[str]) -> None:
    lines = stderr.splitlines()
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from: {lines[0]}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_wrong_invocation_is_one_line_exit_2(case: Case, tmp_path: Path) -> None:
    case.setup(tmp_path)
    code, stderr = run_main(case.argv(tmp_path), tmp_path)
    assert_one_line(code, stderr, case.says(tmp_path))


# -- cases that need another user: the tests run as root, whom permissions do not stop --------

AS_OTHER_USER = """
import os, sys
from athena_cdc import cli
# What serving imports later, imported while the interpreter's files are still readable:
import encodings.idna, athena_cdc.logging_setup, athena_cdc.server.app, athena_cdc.log.sqlite
import athena_cdc.auth.tokens, athena_cdc.log.epoch, athena_cdc.sources.postgres.errors
if os.geteuid() == 0:
    os.setgroups([]); os.setgid({uid}); os.setuid({uid})
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="athena-cdc-cli-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_as_other_user(argv: list[str], cwd: Path) -> tuple[int, str]:
    # As root: drop to nobody after the imports (the interpreter itself may live where
    # nobody cannot read). As anyone else: the file modes below already stop this user.
    result = subprocess.run(
        [sys.executable, "-c", AS_OTHER_USER.format(uid=NOBODY), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stderr


def test_unwritable_data_dir_is_named_not_blamed_on_the_port(shared_dir: Path) -> None:
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    argv = ["serve", "--data-dir", str(locked), "--port", "0"]
    code, stderr = run_as_other_user(argv, shared_dir)
    assert_one_line(code, stderr, ["--data-dir", str(locked), "cannot write in it",
                                   "Permission denied", "give a directory"])
    assert "--port" not in stderr


def test_data_dir_in_an_unwritable_parent_is_named(shared_dir: Path) -> None:
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    wanted = locked / "data"
    argv = ["serve", "--data-dir", str(wanted), "--port", "0"]
    code, stderr = run_as_other_user(argv, shared_dir)
    assert_one_line(code, stderr, ["--data-dir", str(wanted), "cannot create it",
                                   "Permission denied", "give a directory"])


def test_unreadable_config_file_is_named(shared_dir: Path) -> None:
    config = shared_dir / "athena.toml"
    config.write_text("port = 4053\n")
    config.chmod(0o000)
    code, stderr = run_as_other_user(
        ["serve", "--store", "memory", "--config", str(config)], shared_dir
    )
    assert_one_line(code, stderr, ["--config", str(config), "cannot be read",
                                   "Permission denied", "can read"])


def test_data_dir_holding_another_users_log_is_named(shared_dir: Path) -> None:
    data = shared_dir / "data"
    data.mkdir()
    data.chmod(0o777)  # the directory is writable; the log file in it is not
    (data / "events.sqlite3").write_bytes(b"")
    (data / "events.sqlite3").chmod(0o644)
    argv = ["serve", "--data-dir", str(data), "--port", "0"]
    code, stderr = run_as_other_user(argv, shared_dir)
    assert_one_line(code, stderr, ["--data-dir", str(data), "events.sqlite3",
                                   "cannot be written", "chown"])


def test_privileged_port_says_which_ports_are_allowed(shared_dir: Path) -> None:
    argv = ["serve", "--store", "memory", "--port", "80"]
    code, stderr = run_as_other_user(argv, shared_dir)
    assert_one_line(code, stderr, ["cannot listen on 127.0.0.1:80", "permission denied",
                                   "--port 1024 or above"])


def run_serve(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "athena_cdc", "serve", "--store", "memory", *args],
        capture_output=True, text=True, timeout=60,
    )
    # The server logs its start to stderr before binding; the error is the last line.
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    return result.returncode, "\n".join(errors) + "\n"


def test_port_in_use_names_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = run_serve("--port", str(port))
    assert_one_line(code, stderr, [f"cannot listen on 127.0.0.1:{port}", "in use",
                                   "another --port"])


def test_host_of_another_machine_names_the_host() -> None:
    # 192.0.2.1 (TEST-NET-1, RFC 5737) resolves but is nobody's address here.
    code, stderr = run_serve("--host", "192.0.2.1", "--port", "0")
    assert_one_line(code, stderr, ["cannot listen on 192.0.2.1:0", "--host '192.0.2.1'",
                                   "not an address of this machine", "127.0.0.1"])


# -- the bench subcommand without the bench extra ----------------------------------------------

WITHOUT_PICOWS = """
import sys
sys.modules["picows"] = None  # as if the bench extra were not installed
from athena_cdc import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_bench_without_its_extra_says_how_to_install_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PICOWS, "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line(result.returncode, result.stderr,
                    ["athena-cdc bench", "picows", "pip install 'athena-cdc[bench]'"])


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.4])
def test_ctrl_c_at_any_moment_of_the_start_is_no_traceback(delay: float, tmp_path: Path) -> None:
    # Through the installed executable's entry point (athena_cdc.entry), as a terminal's
    # Ctrl-C would: during the imports (before any command handles SIGINT) it was a
    # KeyboardInterrupt traceback.
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from athena_cdc.entry import main; sys.exit(main())",
         "serve", "--store", "memory", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    # 130: interrupted in the imports; 0: drained; -SIGINT: before Python itself had
    # started (the signal's default action, as for any program).
    assert proc.returncode in (0, 130, -signal.SIGINT), (proc.returncode, err)
