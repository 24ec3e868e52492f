"""Reporters: rich rows on a terminal, plain lines for logs, JSON lines, or nothing.

The engine never talks to a reporter beyond ``emit(event)``, called on the event
loop; every reporter keeps that call O(1) and never lets an exception escape it
(a broken display must not break a fetch). ``close(ok=True, error=None)`` prints
the final summary line. The JSON lines schema is documented in
:mod:`occystrap.ui.schema`.

- :class:`RichReporter` (``--progress rich``, ``auto`` on a terminal): one row per
  blob waiting or in flight (short digest, image, state, bar, bytes, speed, ETA),
  an overall ``total`` row, finished rows collapsing into the total after a
  moment, warnings and retries printed above. Drawn by rich's refresh thread at
  ``refresh_per_second`` (at most 10 Hz). Use it as a context manager.
- :class:`PlainReporter` (``plain``, ``auto`` elsewhere, ``TERM=dumb``): no control
  codes; a line per state change that matters and a progress line at most every
  ``interval`` seconds.
- :class:`JsonReporter` (``json``): every event as one JSON object per line.
- nothing (``none``, ``--quiet``): ``commands.common.Silent``, which imports no display.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from occystrap.events import (
    BlobDone,
    BlobProgress,
    BlobQueued,
    BlobRemoved,
    BlobRetry,
    BlobSkipped,
    BlobStarted,
    CommitStarted,
    Event,
    ImageCommitted,
    ImageResolved,
    Info,
    ManifestPushed,
    PullQuota,
    Warning_,
)
from occystrap.ui import schema
from occystrap.ui.guarded import Guarded
from occystrap.ui.stats import SKIP_REASONS, Clock, Stats
from occystrap.ui.units import duration, human, human_pair, rate, short, short_image

__all__ = [
    "JsonReporter",
    "PlainReporter",
    "Stats",
    "human",
    "short",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# Rich
# --------------------------------------------------------------------------


class PlainReporter(Guarded):
    """Lines for logs: one per state change that matters, and progress every `interval` seconds."""

    def __init__(
        self, stream: TextIO | None = None, interval: float = 5.0, clock: Clock = time.monotonic
    ) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self.clock = clock
        self.stats = Stats(clock)
        self._last_line = clock()
        self._last_bytes = 0
        self._started: dict[str, float] = {}
        self._owner: dict[str, str] = {}
        self._closed = False

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _emit(self, event: Event) -> None:
        self.stats.update(event)
        text = self._text(event)
        if text is not None:
            self._line(text)
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._progress(now)

    def _text(self, event: Event) -> str | None:
        if isinstance(event, BlobProgress):
            return None
        if isinstance(event, BlobQueued):
            self._owner.setdefault(event.digest, event.image)
            return None
        if isinstance(event, BlobStarted):
            self._started[event.digest] = self.clock()
            return None
        if isinstance(event, ImageResolved):
            detail = f"{event.platform}, " if event.platform else ""
            what = "layers"
            if event.kind == "artifact":
                detail, what = f"artifact {event.artifact_type}, {detail}", "blobs"
            elif event.kind == "index":
                detail = f"index, {detail}"
            return (
                f"resolved {event.image} {event.manifest_digest}"
                f" ({detail}{event.blobs} {what}, {human(event.total_bytes)})"
            )
        if isinstance(event, BlobDone):
            began = self._started.pop(event.digest, None)
            owner = self._owner.pop(event.digest, None)
            took = ""
            if began is not None:
                secs = max(self.clock() - began, 1e-3)
                took = f" in {secs:.1f}s ({rate(event.size / secs)})"
            image = f" for {short_image(owner)}" if owner else ""
            where = self.stats.source_of(event.digest)
            source = f" from {where}" if where else ""
            return f"{self.stats.moved} {short(event.digest)} {human(event.size)}{took}{image}{source}"
        if isinstance(event, BlobRemoved):
            return f"deleted {short(event.digest)} {human(event.size)}"
        if isinstance(event, BlobSkipped):
            why = SKIP_REASONS.get(event.reason, event.reason)
            return f"reused {short(event.digest)} {human(event.size)} for {short_image(event.image)} ({why})"
        if isinstance(event, ManifestPushed):
            if event.tag:
                return f"tagged {short_image(event.image)} -> {short(event.digest)}"
            return f"pushed manifest {short(event.digest)} for {short_image(event.image)}"
        if isinstance(event, BlobRetry):
            what = short(event.digest) if event.digest else event.url
            return f"retry {what} attempt {event.attempt} in {event.delay:.1f}s: {event.reason}"
        if isinstance(event, Warning_):
            return f"warning: {event.message}"
        if isinstance(event, Info):
            return event.message
        if isinstance(event, PullQuota):
            return self.stats.quota_line(event)
        if isinstance(event, CommitStarted):
            return f"writing {event.destination}" if event.destination else None
        if isinstance(event, ImageCommitted):
            where = f" -> {event.path}" if event.path else ""
            return f"wrote {event.image}{where}"
        return None

    def _progress(self, now: float) -> None:
        s = self.stats
        got = s.received_bytes
        if got == self._last_bytes or not s.queued_bytes:
            return
        speed = (got - self._last_bytes) / max(now - self._last_line, 1e-3)
        remaining = s.queued_bytes - got
        eta = f", ETA {duration(remaining / speed)}" if speed > 0 and remaining > 0 else ""
        pct = 100 * got / s.queued_bytes
        self._last_line, self._last_bytes = now, got
        self._line(
            f"progress: {s.images_committed}/{s.images_total} images, "
            f"{s.fetched_blobs}/{s.queued_blobs} blobs, {human_pair(got, s.queued_bytes)} ({pct:.0f}%), "
            f"{rate(speed)}{eta}"
        )

    def close(self, ok: bool = True, error: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._line(self.stats.summary(ok))
        except Exception:
            self._failed("close")


# --------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------


class JsonReporter(Guarded):
    """Every event as a JSON object on its own line, then a Summary (see occystrap.ui.schema)."""

    def __init__(self, stream: TextIO | None = None, clock: Clock = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.stats = Stats(clock)
        self._closed = False

    def _write(self, doc: dict[str, Any]) -> None:
        self.stream.write(json.dumps(doc, default=str) + "\n")
        self.stream.flush()

    def _emit(self, event: Event) -> None:
        self.stats.update(event)
        self._write(schema.to_json(event))

    def close(self, ok: bool = True, error: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._write(schema.summary(self.stats, time.time(), ok, error))
        except Exception:
            self._failed("close")


def __getattr__(name: str) -> Any:
    # rich costs start-up time and memory; only the live display needs it.
    if name == "RichReporter":
        from occystrap.ui.live import RichReporter

        return RichReporter
    raise AttributeError(name)
