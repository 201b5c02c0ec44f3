"""Channel patterns: exact names, prefixes ending in '*', and '*' alone."""

from __future__ import annotations

import pytest

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
