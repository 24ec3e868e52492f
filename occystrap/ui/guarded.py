"""What every reporter shares: emit() and close() never raise (a broken display must not
break a transfer), and how often a live display may redraw."""

from __future__ import annotations

import logging

from occystrap.events import Event, Info, PullQuota, Warning_

log = logging.getLogger(__name__)

MAX_REFRESH = 10.0
LINES_ONLY = (Info, Warning_, PullQuota)  # events that print a line but need no live display


class Guarded:
    """emit() and close() never raise: a failure is logged (debug) and counted."""

    errors = 0

    def emit(self, event: Event) -> None:
        try:
            self._emit(event)
        except Exception:
            self._failed("emit")

    def _emit(self, event: Event) -> None:
        raise NotImplementedError

    def _failed(self, where: str) -> None:
        self.errors += 1
        if self.errors <= 3:
            log.debug("progress reporter: %s failed", where, exc_info=True)
