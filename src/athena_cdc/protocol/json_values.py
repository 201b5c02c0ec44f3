"""Strict JSON in, strict JSON out: what the server reads from clients and producers.

Any standard parser must accept what the server stores and sends, so:

- ``NaN``, ``Infinity`` and numbers that overflow a double (``1e400``) are refused;
- text that is not UTF-8 is refused;
- integers of any size keep their exact digits (a JavaScript client may lose precision
  on them, but never gets text it cannot parse);
- floats come back as the shortest text that reads as the same double.

orjson does the common case. It reads integers exactly only from -2**63 to 2**64-1 and
silently turns longer ones into floats, so a text with a run of 20 digits (or a minus
and 19; nanosecond timestamps and snowflake ids have 19) is read by the standard
library instead, which hands us each number's text. The run may sit inside a string:
then the slow path is taken for nothing, with the same result.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

import orjson

# orjson's own limit when writing; a payload is written back, so this is its limit.
MAX_DEPTH: Final = 254

_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1
_LONG_NUMBER_BYTES = re.compile(rb"\d{20}|-\d{19}")
# The pattern needs 19 digits in a row. Mapping every digit to b"0" and looking for 19
# of them is two C loops (~0.3 us for a 250-byte body, against ~8 us for the regex scan,
# which then runs only on the rare body that has such a run).
_DIGITS_AS_ZERO = bytes(ord("0") if b in b"0123456789" else ord(".") for b in range(256))
_NINETEEN_DIGITS = b"0" * 19


class JsonError(ValueError):
    """The text is not strict JSON, or nests too deep; the message says why."""


class BigInteger:
    """An integer outside orjson's range (-2**63 to 2**64-1), kept as its JSON text.

    Never converted to ``int``: the conversion is quadratic in the number of digits,
    and Python refuses it beyond 4,300 digits anyway. :func:`dumps` writes the text
    back unchanged.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def negative(self) -> bool:
        return self.text.startswith("-")

    def __repr__(self) -> str:
        return f"BigInteger({self.text})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BigInteger) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def loads(data: bytes | str) -> Any:
    """Parse strict JSON; integers beyond orjson's range come back as :class:`BigInteger`."""
    if isinstance(data, str):
        # Text (a WebSocket message) is checked as its UTF-8 bytes: encoding ~250
        # characters costs ~0.3 µs, the same regex scan of the str ~9 µs.
        try:
            data = data.encode()
        except UnicodeEncodeError:  # a lone surrogate: not text JSON can hold
            raise JsonError("the text is not UTF-8") from None
    long_number = (
        _NINETEEN_DIGITS in data.translate(_DIGITS_AS_ZERO)
        and _LONG_NUMBER_BYTES.search(data) is not None
    )
    if not long_number:
        try:
            return orjson.loads(data)  # refuses NaN, Infinity and 1e400 by itself
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):  # orjson stops at 1024 levels
                raise JsonError(_too_deep()) from None
            raise JsonError(str(exc)) from None
    try:
        text = data.decode()
        return json.loads(
            text,
            parse_int=_exact_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except UnicodeDecodeError:
        raise JsonError("the text is not UTF-8") from None
    except RecursionError:
        # The standard library's scanner recurses once per level and stops, cleanly,
        # at Python's recursion limit (about 1,000 levels).
        raise JsonError(_too_deep()) from None
    except ValueError as exc:  # json.JSONDecodeError, or one of ours below
        raise JsonError(str(exc)) from None


def dumps(value: Any) -> bytes:
    """Compact strict JSON of a value from :func:`loads` (or any plain JSON value)."""
    try:
        return orjson.dumps(value, default=_big_integer_text)
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" in str(exc):
            raise JsonError(_too_deep()) from None
        # A lone surrogate (from a "\\ud800" escape) is not UTF-8 text.
        raise JsonError(str(exc)) from None


def _exact_int(text: str) -> int | BigInteger:
    if len(text) <= 20:  # at most 20 characters: cheap to convert, then check the range
        number = int(text)
        if _INT64_MIN <= number <= _UINT64_MAX:
            return number
    return BigInteger(text)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {_clip(text)} is too large for a double")
    return number


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _big_integer_text(value: object) -> orjson.Fragment:
    if isinstance(value, BigInteger):
        return orjson.Fragment(value.text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _too_deep() -> str:
    return f"arrays and objects are nested more than {MAX_DEPTH} levels deep"


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
