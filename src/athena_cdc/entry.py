"""The ``athena-cdc`` executable's entry point: Ctrl-C at any moment is a quiet exit 130.

Importing the command line (aiohttp, uvloop, the log backends...) takes a few hundred
ms, before any command has installed its own handling of SIGINT. A Ctrl-C then was a
traceback, and, raised in the middle of a C extension's import, could leave it half
initialised (a crash at exit was seen). So a Ctrl-C during the imports is only noted,
and acted on once they are done; after that, until the command takes over, it is the
usual KeyboardInterrupt, answered here with 130.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
from types import FrameType

# What ``serve`` imports only once it runs: imported here too, while a Ctrl-C is only
# noted (a KeyboardInterrupt raised inside orjson's module init crashed the process).
SERVER_MODULES = (
    "athena_cdc.logging_setup",
    "athena_cdc.server.app",
    "athena_cdc.server.workers",
    "uvloop",
)


def main() -> int:
    interrupted: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        interrupted.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        from athena_cdc.cli import main as run

        if sys.argv[1:2] == ["serve"]:
            for name in SERVER_MODULES:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        if interrupted:
            raise KeyboardInterrupt
        return run()
    except KeyboardInterrupt:
        print("athena-cdc: interrupted", file=sys.stderr)
        return 130
