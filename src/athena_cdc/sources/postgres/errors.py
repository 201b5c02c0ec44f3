"""Errors of the PostgreSQL source."""

from __future__ import annotations


class SourceError(Exception):
    """Base class of the PostgreSQL source's errors."""


class SourceConfigError(SourceError):
    """PostgreSQL or the source is set up so that streaming cannot work.

    The message is one line saying what to change (``wal_level``, a role attribute,
    a busy slot...). Retrying does not help, so the CLI prints it and exits with 2.
    """


class UnroutableChange(SourceConfigError):
    """An UPDATE or DELETE whose old channel is unknown, under ``--pg-unroutable refuse``.

    Raised by the reader thread before the change's transaction is handed over, so
    nothing of it is applied and the slot stays before it: the source stops there
    (``/ready`` says why) until it is restarted with a fallback.
    """

    def __init__(self, message: str, commit_lsn: int) -> None:
        super().__init__(message)
        self.commit_lsn = commit_lsn  # of the transaction holding the change


class DecodeError(SourceError):
    """A pgoutput message could not be decoded (a bug, or an unsupported protocol)."""


class SourceUnavailable(SourceError):
    """PostgreSQL cannot be reached or streaming broke off; retried with backoff."""


class SlotBusy(SourceUnavailable):
    """START_REPLICATION answered "replication slot ... is active for PID ...": another
    connection streams the slot. Someone else is active: wait and retry, not an error."""


class Standby(SourceError):
    """Another process holds the slot's leader lock: this one waits to take over."""
