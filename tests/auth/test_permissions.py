"""Channel patterns: exact names, prefixes ending in '*', and '*' alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena_cdc.auth.permissions import ChannelPatterns, InvalidPatterns


@pytest.mark.parametrize(
    ("patterns", "channel", "covered"),
    [
        (["org_42"], "org_42", True),
        (["org_42"], "org_421", False),
        (["org_42:*"], "org_42:orders", True),
        (["org_42:*"], "org_42:", True),
        (["org_42:*"], "org_42", False),
        (["*"], "anything", True),
        ([], "anything", False),
        (["a", "b*"], "bcd", True),
        (["a", "b*"], "cb", False),
    ],
)
def test_a_pattern_covers_exact_names_prefixes_or_everything(
    patterns: list[str], channel: str, covered: bool
) -> None:
    assert ChannelPatterns.from_claim(patterns, "channels").covers(channel) is covered


def test_an_absent_claim_grants_nothing() -> None:
    patterns = ChannelPatterns.from_claim(None, "channels")
    assert not patterns
    assert not patterns.covers("x")


@pytest.mark.parametrize(
    "claim", ["org_42", [1], ["a*b"], [""], ["x" * 300], {"a": 1}, ["*"] * 1001]
)
def test_a_claim_that_is_not_a_list_of_patterns_is_refused(claim: object) -> None:
    with pytest.raises(InvalidPatterns, match="channels"):
        ChannelPatterns.from_claim(claim, "channels")


def model_covers(patterns: list[str], channel: str) -> bool:
    """The rule of the contract, written the obvious way."""
    return any(
        p == "*" or p == channel or (p.endswith("*") and channel.startswith(p[:-1]))
        for p in patterns
    )


names = st.text(alphabet="ab:_*", min_size=0, max_size=6)
channel_names = st.text(alphabet="ab:_*", min_size=1, max_size=6)
valid_patterns = st.lists(names.filter(lambda p: p != "" and "*" not in p[:-1]), max_size=6)


@settings(max_examples=1000, deadline=None)
@given(valid_patterns, channel_names)
def test_the_permission_check_agrees_with_the_contracts_rule(
    patterns: list[str], channel: str
) -> None:
    compiled = ChannelPatterns.from_claim(patterns, "channels")
    assert compiled.covers(channel) == model_covers(patterns, channel)
