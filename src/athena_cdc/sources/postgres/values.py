"""PostgreSQL text-form values → JSON-ready Python values, chosen by type OID.

pgoutput sends every value in its text form. The reader's connection pins the
settings that shape those forms (``DateStyle=ISO``, ``TimeZone=UTC``,
``IntervalStyle=iso_8601``, ``bytea_output=hex``, ``extra_float_digits=1``, see
:data:`SESSION_SETTINGS`), so the conversions here can be plain string work.

| PostgreSQL | JSON |
|---|---|
| int2/int4/int8/oid | number |
| float4/float8 | number; ``NaN``/``Infinity``/``-Infinity`` as those strings |
| numeric | string, exact (``"12.50"``, ``"NaN"``) |
| bool | true/false |
| json/jsonb | the JSON value itself, byte for byte (no re-parsing) |
| timestamp/timestamptz/date/time/timetz | ISO 8601 string; ``infinity`` stays |
| interval | ISO 8601 duration (``P1DT2H``) |
| bytea | ``"\\x0102..."`` |
| arrays of the above | arrays (nested for several dimensions), NULL → null |
| anything else (text, uuid, enum, inet, money, domains...) | its text form |
"""

from __future__ import annotations

import math
from collections.abc import Callable

import orjson

Converter = Callable[[bytes], object]

# Settings for the replication session so that text forms are unambiguous.
SESSION_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "bytea_output": "hex",
    "extra_float_digits": "1",  # shortest text that reads back as the same float
}


def text(raw: bytes) -> object:
    return raw.decode()


def integer(raw: bytes) -> object:
    return int(raw)


def floating(raw: bytes) -> object:
    value = float(raw)
    # JSON has no NaN or Infinity; keep PostgreSQL's spelling rather than lose it.
    return value if math.isfinite(value) else raw.decode()


def boolean(raw: bytes) -> object:
    return raw == b"t"


def json_value(raw: bytes) -> object:
    # Already JSON (PostgreSQL validated it): embed it as is, exact and cheap.
    return orjson.Fragment(raw)


def timestamp(raw: bytes) -> object:
    """``2024-05-01 12:00:00.5+00`` → ``2024-05-01T12:00:00.5+00:00``."""
    value = raw.decode()
    if value.endswith(" BC") or value[-1] == "y":  # BC dates, (-)infinity: as PostgreSQL says
        return value
    value = value.replace(" ", "T", 1)
    return _full_offset(value)


def time_with_zone(raw: bytes) -> object:
    return _full_offset(raw.decode())


def _full_offset(value: str) -> str:
    # PostgreSQL writes a whole-hour offset as +HH; ISO 8601 readers expect +HH:MM.
    if len(value) > 3 and value[-3] in "+-" and value[-2:].isdigit():
        return value + ":00"
    return value


# -- arrays ---------------------------------------------------------------------------


def parse_array(value: str) -> list[object]:
    """The text form of an array → nested lists of element strings (``None`` for NULL).

    Handles quoting, backslash escapes, several dimensions and an explicit bounds
    prefix (``[0:1]={1,2}``). The element delimiter is ``,`` (every built-in type
    but ``box``, whose arrays are not parsed).
    """
    if value.startswith("["):
        value = value[value.index("=") + 1 :]
    if '"' not in value and "{" not in value[1:]:
        # Fast path: one dimension, no quoting (int, float, bool arrays).
        inner = value[1:-1]
        if not inner:
            return []
        return [None if item.upper() == "NULL" else item.strip() for item in inner.split(",")]
    result, _ = _parse_dimension(value, 0)
    return result


def _parse_dimension(value: str, pos: int) -> tuple[list[object], int]:
    # value[pos] == "{"
    items: list[object] = []
    pos += 1
    length = len(value)
    while pos < length:
        char = value[pos]
        if char == "}":
            return items, pos + 1
        if char in ", \t\n":
            pos += 1
        elif char == "{":
            sub, pos = _parse_dimension(value, pos)
            items.append(sub)
        elif char == '"':
            chars = []
            pos += 1
            while value[pos] != '"':
                if value[pos] == "\\":
                    pos += 1
                chars.append(value[pos])
                pos += 1
            items.append("".join(chars))
            pos += 1
        else:
            start = pos
            while value[pos] not in ",}":
                pos += 1
            item = value[start:pos].strip()
            items.append(None if item.upper() == "NULL" else item)
    raise ValueError(f"unterminated array: {value!r}")


def array_of(element: Converter) -> Converter:
    def convert_items(items: list[object]) -> list[object]:
        out: list[object] = []
        for item in items:
            if item is None:
                out.append(None)
            elif isinstance(item, list):
                out.append(convert_items(item))
            else:
                assert isinstance(item, str)
                out.append(element(item.encode()))
        return out

    def convert(raw: bytes) -> object:
        return convert_items(parse_array(raw.decode()))

    return convert


# -- the table ------------------------------------------------------------------------

# Built-in type OIDs (src/include/catalog/pg_type.dat); they never change.
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, XML, FLOAT4, FLOAT8, MONEY, BPCHAR, VARCHAR = 114, 142, 700, 701, 790, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, UUID, JSONB = 1700, 2950, 3802

SCALARS: dict[int, Converter] = {
    BOOL: boolean,
    INT2: integer,
    INT4: integer,
    INT8: integer,
    OID: integer,
    FLOAT4: floating,
    FLOAT8: floating,
    NUMERIC: text,
    JSON: json_value,
    JSONB: json_value,
    TIMESTAMP: timestamp,
    TIMESTAMPTZ: timestamp,
    TIMETZ: time_with_zone,
    # bytea (hex), date, time, interval (iso_8601) and the text types are already
    # in the form we want: their text.
}

# Array type OID → element type OID.
ARRAYS: dict[int, int] = {
    1000: BOOL,
    1001: BYTEA,
    1002: CHAR,
    1003: NAME,
    1005: INT2,
    1007: INT4,
    1009: TEXT,
    1028: OID,
    1014: BPCHAR,
    1015: VARCHAR,
    1016: INT8,
    1021: FLOAT4,
    1022: FLOAT8,
    1231: NUMERIC,
    1115: TIMESTAMP,
    1185: TIMESTAMPTZ,
    1182: DATE,
    1183: TIME,
    1270: TIMETZ,
    1187: INTERVAL,
    2951: UUID,
    199: JSON,
    3807: JSONB,
    143: XML,
    791: MONEY,
}


def converter_for(type_oid: int) -> Converter:
    """How to turn a value of ``type_oid`` into JSON; unknown types stay text."""
    scalar = SCALARS.get(type_oid)
    if scalar is not None:
        return scalar
    element = ARRAYS.get(type_oid)
    if element is not None:
        return array_of(SCALARS.get(element, text))
    return text
