"""Readable logs for people, one JSON object per line for log pipelines."""

from __future__ import annotations

import logging
import re
import sys
import time

import orjson

# A token in a URL (?token= for browsers) or a bearer header must never reach a log.
_SECRETS = re.compile(
    r"(?i)([?&](?:access_)?token=|bearer\s+|token=['\"]|\"token\":\s*\")[^&\s\"',;]+"
)


def redact(text: str) -> str:
    return _SECRETS.sub(r"\1[redacted]", text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp logs every bad handshake at error level with a traceback; keep it quieter.
    logging.getLogger("aiohttp.server").setLevel(max(root.level, logging.WARNING))
