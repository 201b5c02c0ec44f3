"""A token bucket: at most ``rate`` client messages per second, bursts of ten seconds' worth.

The burst is generous on purpose: a client that (re)connects subscribes to its channels
and travels each of them at once, a thousand messages for a thousand channels (the
default ``--max-subscriptions``), and must not be refused for it; what the limit stops
is a client that keeps sending faster than ``rate``.
"""

from __future__ import annotations

import time

BURST_SECONDS = 10.0


class RateLimiter:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, BURST_SECONDS * rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def allow(self, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens (e.g. a publish message's event count), if there are."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False
