"""Cooperative time slices: long work on the event loop gives way every half millisecond.

Everything the server does runs on one event loop, so a request that computes for
100 ms delays every other client's live events by 100 ms. Work that can be large (a
travel over 10,000 channels, a 50,000-event reply) checks a :class:`TimeSlice` often
and, once its budget is spent, rests briefly so that the loop serves everything else
that is ready. A live event needs a few loop turns from the publisher's socket to the
subscriber's; with a job running it waits for at most about one slice per turn.

While sliced jobs run, two process-wide settings change (see :func:`job_started`):
automatic garbage collection is off, and the interpreter hands the GIL to other
threads sooner. Both are put back when the last job ends.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

# Long enough that giving way (one loop turn, ~20 µs) costs little; short enough that
# the few loop turns of a live event are each delayed by half a millisecond at most.
SLICE_BUDGET_S = 0.0005
# After each slice the job sleeps this long: the loop waits for I/O meanwhile, so other
# clients' work runs several turns without a slice in between, and threads (sqlite's
# writer) get the GIL. A job takes about three times its computing time; nobody else
# waits for it. (Event loops time in whole milliseconds: shorter rests would be none.)
SLICE_REST_S = 0.001


class TimeSlice:
    """A budget of uninterrupted loop time, renewed each time the work gives way."""

    __slots__ = ("_budget", "_started")

    def __init__(self, budget_s: float | None = None) -> None:
        self._budget = SLICE_BUDGET_S if budget_s is None else budget_s
        self._started = time.perf_counter()

    async def pause(self) -> None:
        """Give way to the loop if the budget is spent (cheap: call it often)."""
        if time.perf_counter() - self._started >= self._budget:
            await asyncio.sleep(SLICE_REST_S)
            self._started = time.perf_counter()


# -- process-wide settings while jobs run ---------------------------------------------
#
# Garbage collection: a travel over 10,000 channels holds a page of events per channel
# (200,000 objects) while it merges them. They live long enough to be promoted and then
# trigger full collections, each of which scans every object of the process: 50 to 100 ms
# during which the loop stands still, however finely the job is sliced. With automatic
# collection off while jobs run, that garbage is freed by reference counting (the job
# frees it a slice at a time), and collection resumes when the last job ends.
#
# The GIL: while the loop thread computes, a thread that has finished a disk write (the
# sqlite writer) waits for the GIL until the loop thread is made to drop it, 5 ms by
# default, and a write takes the GIL several times: a publish would wait tens of ms.
# While jobs run, the loop thread is made to hand the GIL over after 0.1 ms.

JOB_SWITCH_INTERVAL_S = 0.0001
# Jobs that overlap without end (a storm of reconnecting clients travelling) must not
# keep collection off for good: a job that starts after this long collects once.
GC_OFF_MAX_S = 10.0
_jobs = 0
_saved_switch_interval = 0.005
_gc_off_since = 0.0


def job_started() -> None:
    """A sliced job begins (pair with :func:`job_done`, in a ``finally``)."""
    global _jobs, _saved_switch_interval, _gc_off_since
    if _jobs == 0:
        if not gc.isenabled():
            return  # someone else (a test, an embedding program) manages collection
        gc.disable()
        _gc_off_since = time.monotonic()
        _saved_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(_saved_switch_interval, JOB_SWITCH_INTERVAL_S))
    elif time.monotonic() - _gc_off_since > GC_OFF_MAX_S:
        gc.collect()
        _gc_off_since = time.monotonic()
    _jobs += 1


def job_done() -> None:
    """A sliced job ends; the settings are put back when it was the last one."""
    global _jobs
    if _jobs:
        _jobs -= 1
        if _jobs == 0:
            gc.enable()
            sys.setswitchinterval(_saved_switch_interval)
