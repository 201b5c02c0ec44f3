"""The Redis store's source-position fence: a batch whose position is not beyond the
stored one is refused whole, in the same script that would have appended it."""

from __future__ import annotations

import pytest

from athena_cdc.log.base import NewEvent, SourcePosition, StalePosition, TravelQuery
from athena_cdc.log.redis import RedisLog, position_order
from tests.conftest import flush_redis


def test_lsns_sort_by_value_not_by_text() -> None:
    assert position_order("0/A") < position_order("0/10") < position_order("1/0")
    # A transaction applied in part sorts before the whole of it, and parts in order.
    assert position_order("0/10#2") < position_order("0/10#10") < position_order("0/10")


async def test_a_stale_position_is_refused_and_appends_nothing(redis_url: str) -> None:
    url = redis_url + "/15"
    flush_redis(url)
    log = RedisLog(url)
    await log.open()
    try:
        await log.append([NewEvent("a", b"1")], SourcePosition("pg", "0/20"))
        for stale in ("0/20", "0/1F", "0/20#5"):
            with pytest.raises(StalePosition, match="not beyond"):
                await log.append(
                    [NewEvent("a", b"2"), NewEvent("b", b"2")], SourcePosition("pg", stale)
                )
        assert await log.get_position("pg") == "0/20"
        result = await log.travel(TravelQuery(("a", "b"), 0, None, 10))
        assert [(e.channel, e.seq) for e in result.events] == [("a", 1)]
        (event,) = await log.append([NewEvent("a", b"3")], SourcePosition("pg", "0/21"))
        assert event.seq == 2
    finally:
        await log.close()
