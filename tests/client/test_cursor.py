"""The ordering rule on its own (no I/O), against every interleaving hypothesis finds:
live events before, inside and after a replay, repeats, a gap reported at any point."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from athena_cdc.client import Event, Gap, Item
from athena_cdc.client.cursor import Cursor, Phase, Start, Step


def subscribed_cursor(position: int) -> Cursor:
    cursor = Cursor("c", Start(since_seq=position), "E")
    assert cursor.next_request(100) == (Step.SUBSCRIBE, {"type": "subscribe",
                                                         "organization_id": "c"})
    cursor.replied(Step.SUBSCRIBE, {"status": "subscribed", "epoch": "E"})
    assert cursor.phase is Phase.CATCHING_UP
    return cursor


def covered(items: list[Item]) -> list[int]:
    seqs: list[int] = []
    for item in items:
        if isinstance(item, Event):
            seqs.append(item.seq)
        elif isinstance(item, Gap):
            seqs += range(item.from_seq, item.to_seq + 1)
    return seqs


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, int, int, list[int | None]]:
    """(position, dropped up to, newest, what arrives: seqs, and None for the ack)."""
    position = draw(st.integers(0, 30))
    newest = draw(st.integers(position, position + 60))
    dropped = draw(st.integers(0, newest))
    kept = list(range(max(position, dropped) + 1, newest + 1))
    repeats = draw(st.lists(st.sampled_from(kept), max_size=20)) if kept else []
    arrivals: list[int | None] = [*kept, *repeats, None]
    return position, dropped, newest, draw(st.permutations(arrivals))


@given(deliveries())
def test_each_seq_is_handed_over_once_in_order_whatever_the_interleaving(
    case: tuple[int, int, int, list[int | None]],
) -> None:
    position, dropped, newest, arrivals = case
    cursor = subscribed_cursor(position)
    assert cursor.next_request(100) is not None  # the catch-up travel
    items: list[Item] = []
    for arrival in arrivals:
        if arrival is None:
            gaps = ([{"organization_id": "c", "from_seq": position + 1, "to_seq": dropped}]
                    if dropped > position else [])
            items += cursor.replied(Step.CATCH_UP, {"status": "travel_complete",
                                                    "has_more": False, "gaps": gaps,
                                                    "epoch": "E"})
        else:
            items += cursor.accept(Event("c", arrival, 0, None, "E"))
        seqs = covered(items)
        assert seqs == list(range(position + 1, position + 1 + len(seqs)))
    assert covered(items) == list(range(position + 1, newest + 1))
    assert cursor.seq == newest


def test_a_live_event_that_skips_a_seq_sends_the_cursor_back_to_catching_up() -> None:
    cursor = subscribed_cursor(0)
    cursor.next_request(100)
    cursor.replied(Step.CATCH_UP, {"status": "travel_complete", "has_more": False, "gaps": []})
    assert cursor.phase is Phase.LIVE
    assert cursor.accept(Event("c", 2, 0, None)) == []
    assert cursor.phase is Phase.CATCHING_UP  # type: ignore[comparison-overlap]
    assert cursor.next_request(100) == (Step.CATCH_UP, {"type": "travel", "organization_id": "c",
                                                        "since_seq": 0, "limit": 100})
    assert covered(cursor.accept(Event("c", 1, 0, None))) == [1, 2]
