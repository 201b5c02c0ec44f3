"""Opaque page cursors of the ops API: the sort key of the last row of a page.

Pages are keyset pages: the next one holds the rows that sort after that key, so a
page costs the same however deep it is, and rows that move between requests are
neither skipped twice nor lost in bulk (a ranking that changes may still move a row
across the cursor; the API says so).
"""

from __future__ import annotations

import base64
import binascii

import orjson

MAX_CURSOR_CHARS = 2048


class BadCursor(ValueError):
    """A cursor this server did not hand out (or that was altered)."""


def encode_cursor(key: tuple[object, ...]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode("ascii").rstrip("=")


def decode_cursor(text: str, shape: tuple[type, ...]) -> tuple[object, ...]:
    """The key in ``text``, whose items must have the types of ``shape`` (an int is
    accepted for a float)."""
    if len(text) > MAX_CURSOR_CHARS:
        raise BadCursor(f"a cursor is at most {MAX_CURSOR_CHARS} characters")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        items = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise BadCursor("not a cursor of this API (pass next_cursor as it was given)") from None
    if not isinstance(items, list) or len(items) != len(shape):
        raise BadCursor("not a cursor of this API (pass next_cursor as it was given)")
    key: list[object] = []
    for item, kind in zip(items, shape, strict=True):
        if kind is float and isinstance(item, int) and not isinstance(item, bool):
            item = float(item)
        if type(item) is not kind:
            raise BadCursor("not a cursor of this API (pass next_cursor as it was given)")
        key.append(item)
    return tuple(key)
