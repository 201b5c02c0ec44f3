"""Tests of the PostgreSQL source."""
