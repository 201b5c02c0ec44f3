"""Text forms → JSON values, without a server (the integration test checks real output)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from athena_cdc.sources.postgres import values
from athena_cdc.sources.postgres.values import converter_for, parse_array


def convert(oid: int, raw: str) -> object:
    return orjson.loads(orjson.dumps({"v": converter_for(oid)(raw.encode())}))["v"]


@pytest.mark.parametrize(
    ("oid", "raw", "expected"),
    [
        (values.INT2, "-7", -7),
        (values.INT8, "9223372036854775807", 9223372036854775807),
        (values.FLOAT8, "1.5", 1.5),
        (values.FLOAT4, "NaN", "NaN"),
        (values.FLOAT8, "-Infinity", "-Infinity"),
        (values.NUMERIC, "12.50", "12.50"),
        (values.BOOL, "t", True),
        (values.BOOL, "f", False),
        (values.JSONB, '{"a": [1, 2]}', {"a": [1, 2]}),
        (values.JSON, "  [1,  2 ]", [1, 2]),
        (values.TIMESTAMPTZ, "2024-05-01 12:00:00.5+00", "2024-05-01T12:00:00.5+00:00"),
        (values.TIMESTAMPTZ, "2024-05-01 12:00:00+05:30", "2024-05-01T12:00:00+05:30"),
        (values.TIMESTAMP, "2024-05-01 12:00:00", "2024-05-01T12:00:00"),
        (values.TIMESTAMP, "infinity", "infinity"),
        (values.TIMESTAMP, "0044-03-15 12:00:00 BC", "0044-03-15 12:00:00 BC"),
        (values.TIMETZ, "12:00:00-02", "12:00:00-02:00"),
        (values.DATE, "2024-05-01", "2024-05-01"),
        (values.INTERVAL, "P1DT2H", "P1DT2H"),
        (values.BYTEA, "\\x00ff", "\\x00ff"),
        (values.UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
         "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (424242, "(1,2)", "(1,2)"),  # unknown type: its text form
        (1007, "{1,NULL,3}", [1, None, 3]),
        (1016, "{{1,2},{3,4}}", [[1, 2], [3, 4]]),
        (1009, '{a,"b c","d\\"e","NULL",NULL,""}', ["a", "b c", 'd"e', "NULL", None, ""]),
        (1000, "{t,f}", [True, False]),
        (1022, "{1.5,NaN}", [1.5, "NaN"]),
        (1007, "[0:1]={5,6}", [5, 6]),
        (1007, "{}", []),
        (3807, '{"{\\"a\\": 1}",null}', [{"a": 1}, None]),
    ],
)
def test_conversions(oid: int, raw: str, expected: object) -> None:
    assert convert(oid, raw) == expected


def array_text(items: list[str | None]) -> str:
    def element(item: str | None) -> str:
        if item is None:
            return "NULL"
        return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "{" + ",".join(element(i) for i in items) + "}"


@given(st.lists(st.one_of(st.none(), st.text())))
def test_text_array_roundtrip(items: list[str | None]) -> None:
    assert parse_array(array_text(items)) == items


@given(st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=2, max_size=2), min_size=1))
def test_two_dimensional_int_array(rows: list[list[int]]) -> None:
    text = "{" + ",".join("{" + ",".join(map(str, r)) + "}" for r in rows) + "}"
    assert convert(1016, text) == rows
