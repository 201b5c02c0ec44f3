"""``athena-cdc``: the command line.

athena-cdc serve [options]     run the server
athena-cdc bench tenants       load a running server and measure it
athena-cdc tail CHANNEL...     follow channels (the client, athena_cdc.client)
athena-cdc publish CHANNEL V   publish JSON values
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from athena_cdc import __version__, preflight
from athena_cdc.config import ConfigError, Settings, add_options, load_settings

log = logging.getLogger("athena_cdc")

DESCRIPTION = """\
Change-data-capture over WebSocket. Clients connect to ws://HOST:PORT/ws with the
header X-Athena-Client: <name>, receive the events of that channel live, and replay
what they missed with {"type":"travel",...}. Producers POST /events; PostgreSQL
changes stream in with --source.
"""

SERVE_EPILOG = """\
Every option can also be set with its ATHENA_CDC_* environment variable or in a TOML
file given with --config (keys as the option names: port = 4053, store = "memory").
Precedence: flag, then environment, then file, then default.

examples:
  athena-cdc serve                                 sqlite log in ./athena-cdc-data
  athena-cdc serve --store memory --port 8080      nothing on disk
  athena-cdc serve --source postgresql://app@localhost/app --default-channel misc
"""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line pointing at ``--help``.

    argparse's own error prints the whole usage first: for ``serve`` that is some thirty
    lines, and the one line that matters scrolls away.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: with abbreviations, a mistyped "--prot 1" (meant: --port) silently
    # became --protect-ops=1.
    parser = OneLineParser(
        prog="athena-cdc",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"athena-cdc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the athena-cdc server (WebSocket and HTTP on one port).",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_options(serve)
    commands.add_parser(
        "bench",
        help="load a running server and measure it (see: athena-cdc bench --help)",
        add_help=False,
    )
    from athena_cdc.client.terminal import add_commands  # tail, publish

    add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _reject_unknown(parser, args.command, unknown)
    if args.command in ("tail", "publish"):  # clients: no server settings
        code: int = args.run(args)
        return code
    try:
        settings = load_settings(args)
        preflight.check(settings)
    except ConfigError as exc:
        print(f"athena-cdc: error: {exc}", file=sys.stderr)
        return 2
    return run_server(settings)


def _bench(argv: list[str]) -> int:
    # The load generator needs the bench extra (picows, ...); without it, say so
    # instead of showing an ImportError traceback.
    try:
        from athena_cdc.bench.remote import main as bench_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("athena_cdc"):
            raise
        print(
            f"athena-cdc bench: error: needs the bench extra (module {exc.name!r} is missing): "
            "pip install 'athena-cdc[bench]'",
            file=sys.stderr,
        )
        return 2
    return bench_main(argv)


def _reject_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> NoReturn:
    """Report unknown arguments against the subcommand they were given to, not the top level."""
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    sub: argparse.ArgumentParser = subparsers.choices[command]
    flags = [flag for action in sub._actions for flag in action.option_strings]
    first = unknown[0]
    message = f"unknown argument {first!r}"
    if first.startswith("-"):
        close = difflib.get_close_matches(first.split("=", 1)[0], flags, n=1, cutoff=0.6)
        message = f"unknown option {first.split('=', 1)[0]!r}"
        if close:
            message += f"; did you mean {close[0]}?"
    sub.error(message)


def run_server(settings: Settings, worker: tuple[str, int] | None = None) -> int:
    """Serve until SIGTERM/SIGINT: one process, or with ``--workers N`` a supervisor of N
    (``worker``: this process is one of them, with its supervisor's socket and number)."""
    from athena_cdc.logging_setup import setup_logging
    from athena_cdc.server.app import serve

    setup_logging(settings.log_level, settings.log_format)
    _raise_open_files_limit()
    stop = asyncio.Event()

    async def main_task() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stopper(stop, sig))
        if worker is not None or settings.workers > 1:
            from athena_cdc.server import workers

            if worker is not None:
                return await workers.run_worker(settings, stop, *worker)
            return await workers.supervise(settings, stop)
        await serve(settings, stop)
        return 0

    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.uvloop)) as runner:
            return runner.run(main_task())
    except Exception as exc:
        message = _startup_problem(exc, settings)
        if message is None:
            raise
        print(f"athena-cdc: error: {message}", file=sys.stderr)
        return 2


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", sig.name)
            raise SystemExit(1)
        log.info("%s received: draining", sig.name)
        stop.set()

    return handler


def _startup_problem(exc: BaseException, settings: Settings) -> str | None:
    """One line for the errors a user can fix; None for bugs (shown with a traceback)."""
    from athena_cdc.auth.tokens import AuthConfigError
    from athena_cdc.log.base import StoreConfigError  # not the redis module: it imports a lot
    from athena_cdc.log.epoch import LogDamaged
    from athena_cdc.log.sqlite import DataDirLocked
    from athena_cdc.server.app import TlsConfigError
    from athena_cdc.sources.postgres.errors import SourceConfigError

    if isinstance(
        exc,
        DataDirLocked
        | LogDamaged
        | SourceConfigError
        | TlsConfigError
        | AuthConfigError
        | StoreConfigError,
    ):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        # A file the server needed (under --data-dir, a TLS or key file): name it.
        return f"{exc.filename}: {preflight.reason(exc)}"
    if isinstance(exc, OSError):
        problem = preflight.listen_problem(exc, settings)
        if problem is not None:
            return problem
        # (an OSError without a file name, not from bind: shown as it is)
        return f"{exc}"
    return None


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _raise_open_files_limit() -> None:
    # Each WebSocket client is a file descriptor; the default soft limit (1024) is low.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
