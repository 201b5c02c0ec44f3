"""``athena-cdc bench``: a load generator for a running athena-cdc (your own deployment).

Run ``athena-cdc bench --help`` (or ``python -m athena_cdc.bench --help``). The comparison
with other WebSocket servers (which starts them all on one machine) is not part of the
package: it is ``bench/`` in a checkout (``python -m bench --help``), built on these
modules; see ``docs/performance.md``.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point for the ``athena-cdc bench`` subcommand; returns the exit code."""
    from athena_cdc.bench.remote import main as remote_main

    return remote_main(argv)


__all__ = ["main"]
