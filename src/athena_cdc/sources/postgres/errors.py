"""Errors of the PostgreSQL source."""

from __future__ import annotations


class SourceError(Exception):
    """Base class of the PostgreSQL source's errors."""


class SourceConfigError(SourceError):
    """PostgreSQL or the source is set up so that streaming cannot work.

    The message is one line saying what to change (``wal_level``, a role attribute,
    a busy slot...). Retrying does not help, so the CLI prints it and exits with 2.
    """


class DecodeError(SourceError):
    """A pgoutput message could not be decoded (a bug, or an unsupported protocol)."""


class SourceUnavailable(SourceError):
    """PostgreSQL cannot be reached or streaming broke off; retried with backoff."""
