"""Events per second in and out, from the server's counters, sampled when asked.

The counters (events appended, events delivered) are kept by the server anyway; the
console's history is samples of them taken when ``/api/stats`` is called -- at most
one a second, the last few minutes -- so nothing runs while nobody looks, and a
chart shows a break where nobody did.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

HISTORY_SPAN_S = 300.0  # how far back the chart goes
MIN_SAMPLE_GAP_S = 1.0  # viewers asking more often share the last sample


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.monotonic()
    at_ms: int  # wall clock, for the chart's axis
    appended: float
    delivered: float


@dataclass(frozen=True, slots=True)
class RatePoint:
    at_ms: int
    window_s: float
    in_per_s: float
    out_per_s: float


class CounterHistory:
    def __init__(
        self,
        read: Callable[[], tuple[float, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read  # () -> (events appended, events delivered) since start
        self._clock = clock
        self._samples: deque[Sample] = deque()

    def sample(self) -> Sample:
        """The current sample: a new one unless the last is under a second old."""
        now = self._clock()
        samples = self._samples
        if samples and now - samples[-1].at < MIN_SAMPLE_GAP_S:
            return samples[-1]
        appended, delivered = self._read()
        sample = Sample(now, time.time_ns() // 1_000_000, appended, delivered)
        samples.append(sample)
        while samples and now - samples[0].at > HISTORY_SPAN_S:
            samples.popleft()
        return sample

    def points(self) -> list[RatePoint]:
        """Rates between consecutive samples, oldest first."""
        points = []
        previous = None
        for sample in self._samples:
            if previous is not None:
                window = sample.at - previous.at
                points.append(
                    RatePoint(
                        sample.at_ms,
                        round(window, 3),
                        round((sample.appended - previous.appended) / window, 2),
                        round((sample.delivered - previous.delivered) / window, 2),
                    )
                )
            previous = sample
        return points
