"""The PostgreSQL fixtures (a session cluster, a database per test) for the source test."""

from tests.sources.postgres.conftest import db, pg

__all__ = ["db", "pg"]
