"""Log a recurring failure once per kind per second, not once per request.

A broken disk or a bug on a hot path fails every request in the same way; logging
each one buries the log (megabytes of identical tracebacks per second) and costs CPU
when the server is already in trouble. :class:`RateLimitedLog` writes the first record
of a kind, holds back the repeats for ``interval`` seconds, then writes the next one
with the number held back, so nothing is silently lost.

A *kind* is the message template (not the formatted text) plus, for
:meth:`~RateLimitedLog.exception`, the type of the exception being handled; a caller
whose one template covers several kinds (auth denials, by reason) names the kind.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        # kind → (time of the last record written, repeats held back since)
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}

    def error(self, msg: str, *args: object, kind: str = "") -> None:
        self._log(logging.ERROR, kind, msg, args, exc_info=False)

    def warning(self, msg: str, *args: object, kind: str = "") -> None:
        self._log(logging.WARNING, kind, msg, args, exc_info=False)

    def info(self, msg: str, *args: object, kind: str = "") -> None:
        self._log(logging.INFO, kind, msg, args, exc_info=False)

    def exception(self, msg: str, *args: object) -> None:
        """Like :meth:`logging.Logger.exception`: at error level, with the traceback."""
        exc_type = sys.exc_info()[0]
        self._log(logging.ERROR, exc_type.__name__ if exc_type else "", msg, args, exc_info=True)

    def _log(
        self, level: int, kind_name: str, msg: str, args: tuple[object, ...], *, exc_info: bool
    ) -> None:
        if not self.logger.isEnabledFor(level):
            return
        kind = (msg, kind_name)
        now = self._clock()
        last, held = self._kinds.get(kind, (None, 0))
        if last is not None and now - last < self.interval:
            self._kinds[kind] = (last, held + 1)
            return
        self._kinds[kind] = (now, 0)
        if held:
            msg += " (and %d more like it in the last %.0f s, not logged)"
            args = (*args, held, now - last if last is not None else 0.0)
        # stacklevel 3: the record names the caller's line, not this module.
        self.logger.log(level, msg, *args, exc_info=exc_info, stacklevel=3)
