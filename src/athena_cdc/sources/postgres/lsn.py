"""Log sequence numbers and the source's position in the log.

A position says how far the WAL has been applied to the event log. It is stored
with :class:`~athena_cdc.log.base.SourcePosition` in the same durable write as the
events, so after any crash the source knows exactly what is already in the log:

* ``0/16B3748`` -- every change of the transaction that committed at that LSN, and
  of every earlier one, is in the log;
* ``0/16B3748#5000`` -- the same for earlier transactions, and the first 5000 changes
  of the (huge) transaction committed at ``0/16B3748``: it was appended in chunks
  and the rest is still to come.

Decoding a transaction from the slot is deterministic (same changes, same order), so
"the first N changes" names the same rows every time PostgreSQL sends it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A transaction whose changes are all applied sorts after any partial state of it.
COMPLETE = 2**63

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def format_lsn(lsn: int) -> str:
    """``0x16B3748`` → ``0/16B3748`` (PostgreSQL's own spelling)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    match = _LSN.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """Applied through the transaction committed at ``commit_lsn``, or its first
    ``changes`` changes when that is less than :data:`COMPLETE`."""

    commit_lsn: int
    changes: int = COMPLETE

    @property
    def complete(self) -> bool:
        return self.changes >= COMPLETE

    def __str__(self) -> str:
        text = format_lsn(self.commit_lsn)
        return text if self.complete else f"{text}#{self.changes}"

    @classmethod
    def parse(cls, text: str) -> Position:
        lsn, sep, changes = text.partition("#")
        if not sep:
            return cls(parse_lsn(lsn))
        if not changes.isdigit():
            raise ValueError(f"not a position: {text!r}")
        return cls(parse_lsn(lsn), int(changes))
