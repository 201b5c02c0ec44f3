"""Tokens never reach a log line: ``?token=`` and bearer values are redacted."""

from __future__ import annotations

import logging

import pytest

from athena_cdc.logging_setup import JsonFormatter, TextFormatter, redact

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /ws?client=a&token={TOKEN} HTTP/1.1",
        f"GET /ws?token={TOKEN}&client=a",
        f"Authorization: Bearer {TOKEN}",
        f"bad header 'authorization: bearer {TOKEN}'",
    ],
)
def test_tokens_are_redacted(text: str) -> None:
    assert TOKEN not in redact(text)
    assert "[redacted]" in redact(text)


def test_both_log_formats_redact_messages_and_tracebacks() -> None:
    try:
        raise ValueError(f"/ws?token={TOKEN}")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "url %s", (f"/ws?token={TOKEN}",), sys.exc_info()
        )
    for formatter in (TextFormatter(), JsonFormatter()):
        assert TOKEN not in formatter.format(record)
