"""Channel patterns: which channels a token may read or publish to.

A pattern is an exact channel name, a prefix ending in ``*`` (``org_42:*``), or ``*``
alone. A set of patterns is compiled once, when the token is verified, into a set of
exact names and a tuple of prefixes, so a check costs a set lookup plus one
``str.startswith`` call with a tuple (done in C) — and checks happen on subscribe,
travel, publish and refresh, never per delivered event.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_PATTERNS = 1_000
MAX_PATTERN_LENGTH = 257  # a 256-character channel name, or a prefix of one plus '*'


class InvalidPatterns(ValueError):
    """A claim that is not a list of channel patterns; the message says why."""


class ChannelPatterns:
    """An immutable set of channel patterns."""

    __slots__ = ("_all", "_exact", "_prefixes", "patterns")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self._all = "*" in self.patterns
        self._exact = frozenset(p for p in self.patterns if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in self.patterns if p.endswith("*") and p != "*")

    @classmethod
    def from_claim(cls, value: object, claim: str) -> ChannelPatterns:
        """The patterns of a token claim; an absent claim (None) grants nothing."""
        if value is None:
            return NOTHING
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise InvalidPatterns(f'claim "{claim}" must be a list of channel patterns')
        if len(value) > MAX_PATTERNS:
            raise InvalidPatterns(f'claim "{claim}" has more than {MAX_PATTERNS} patterns')
        for pattern in value:
            if not pattern or len(pattern) > MAX_PATTERN_LENGTH:
                raise InvalidPatterns(f'claim "{claim}" has an empty or over-long pattern')
            if "*" in pattern[:-1]:
                raise InvalidPatterns(f'claim "{claim}": {pattern!r} — "*" may only end a pattern')
        return cls(value)

    def covers(self, channel: str) -> bool:
        return self._all or channel in self._exact or channel.startswith(self._prefixes)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"ChannelPatterns({list(self.patterns)!r})"


NOTHING = ChannelPatterns()
EVERYTHING = ChannelPatterns(["*"])
