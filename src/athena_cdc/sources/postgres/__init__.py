"""PostgreSQL logical replication (pgoutput) as a source of events.

See docs/postgres.md for setup, payload format and guarantees.
"""

from athena_cdc.sources.postgres.errors import (
    DecodeError,
    SourceConfigError,
    SourceError,
    SourceUnavailable,
)
from athena_cdc.sources.postgres.source import PostgresSource

__all__ = [
    "DecodeError",
    "PostgresSource",
    "SourceConfigError",
    "SourceError",
    "SourceUnavailable",
]
