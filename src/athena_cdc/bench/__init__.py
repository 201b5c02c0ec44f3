"""Benchmarks of athena-cdc against baseline WebSocket servers (``athena-cdc bench``).

Run ``python -m athena_cdc.bench --help``; see ``docs/performance.md`` for the method.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point for the ``athena-cdc bench`` subcommand; returns the exit code."""
    from athena_cdc.bench.cli import main as cli_main

    return cli_main(argv)


__all__ = ["main"]
