"""Checks before the server starts: what it would otherwise meet half-started, misreported.

Without them an unwritable ``--data-dir`` surfaced as "cannot listen: Permission denied"
(the last OSError handler's guess), and a host name that does not resolve as a bare
``[Errno -2]``. Each problem is one line naming the option, its value and the fix.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import tempfile
from pathlib import Path

from athena_cdc.config import ConfigError, Settings


def check(settings: Settings) -> None:
    """Raise :class:`ConfigError` for the first problem found."""
    if settings.store == "sqlite":
        check_data_dir(settings.data_dir)
    check_host(settings.host)


def check_data_dir(data_dir: str) -> None:
    path = Path(data_dir)
    fix = (
        f"give a directory that the user running athena-cdc ({user_name()}) can write "
        "(it is created if missing)"
    )
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"--data-dir {data_dir!r}: is a symbolic link to nowhere; {fix}")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--data-dir {data_dir!r}: is a file, not a directory; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = f"cannot create it ({reason(exc)})"
        raise ConfigError(f"--data-dir {data_dir!r}: {problem}; {fix}") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        problem = f"cannot write in it ({reason(exc)})"
        raise ConfigError(f"--data-dir {data_dir!r}: {problem}; {fix}") from None
    # A log file left by another user (say, a first run as root) stops the server later,
    # deep in sqlite, with a message that names neither the file nor the option.
    for entry in sorted(path.iterdir()):
        if entry.is_file() and not os.access(entry, os.R_OK | os.W_OK):
            raise ConfigError(
                f"--data-dir {data_dir!r}: its file {entry.name} cannot be written by "
                f"{user_name()}; change its owner (chown), or {fix}"
            )


def check_host(host: str) -> None:
    if not host:
        return
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise ConfigError(
            f"--host {host!r}: cannot be resolved ({why}); give an IP address such as "
            "127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces), or a resolvable name"
        ) from None


def listen_problem(exc: OSError, settings: Settings) -> str | None:
    """The one line for a socket that could not be bound, or None if ``exc`` is not that."""
    where = f"cannot listen on {settings.host}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: the port is in use (another athena-cdc?); choose another --port"
    if exc.errno == errno.EACCES:
        return (
            f"{where}: permission denied (ports below 1024 need privileges); choose "
            "--port 1024 or above"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{where}: --host {settings.host!r} is not an address of this machine; give one "
            "of its addresses, 127.0.0.1 or 0.0.0.0"
        )
    return None


def reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
