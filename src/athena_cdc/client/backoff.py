"""Jittered exponential backoff between reconnection attempts.

After a server restart every client reconnects at once; random delays spread them out
(the protocol's "Resuming without loss": about 0.5 s doubling to 30 s).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5  # seconds before the second attempt (the first is at once)
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5  # each delay is drawn from [delay * (1 - jitter), delay]

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and self.factor >= 1 and 0 <= self.jitter <= 1):
            raise ValueError(f"invalid backoff: {self}")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Endless delays: a short random one, then growing to ``maximum``."""
        draw = (rng or random).uniform
        yield draw(0, self.initial * self.jitter)  # the first retry: spread, but soon
        delay = self.initial
        while True:
            yield draw(delay * (1 - self.jitter), delay)
            delay = min(delay * self.factor, self.maximum)
