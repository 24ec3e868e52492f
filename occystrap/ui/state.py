"""What the reporters know about a run: totals, and the rows of blobs in flight.

Pure bookkeeping, no I/O and no rich: every `update(event)` is O(1), so a
BlobProgress per MiB per blob costs nothing worth measuring. Rendering reads a
`View` snapshot (O(rows shown)), which the rich reporter takes from its refresh
thread under a lock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import islice

from occystrap.events import (
    BlobDone,
    BlobProgress,
    BlobQueued,
    BlobRetry,
    BlobSkipped,
    BlobStarted,
    BlobVerifying,
    Event,
)
from occystrap.ui.stats import Clock, Stats
from occystrap.ui.units import short, short_image

# Row states.
WAITING = "waiting"
DOWNLOADING = "downloading"
RETRYING = "retrying"
VERIFYING = "verifying"
DONE = "done"
PRESENT = "present"
SHARED = "shared"
MOUNTED = "mounted"

# Overall phases.
RESOLVING = "resolving"
FETCHING = "fetching"
WRITING = "writing"
FINISHED = "done"

SPEED_WINDOW = 3.0  # seconds of samples behind a per-blob speed
TOTAL_WINDOW = 5.0  # seconds of samples behind the aggregate speed
MAX_SAMPLES = 256


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Row:
    digest: str
    size: int
    images: list[str]
    state: str = WAITING
    done: int = 0
    retry_until: float = 0.0
    expires: float = 0.0
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def note(self, now: float, done: int) -> None:
        self.done = done
        samples = self.samples
        samples.append((now, done))
        while len(samples) > 2 and samples[0][0] < now - SPEED_WINDOW:
            samples.popleft()

    def speed(self, now: float) -> float | None:
        if len(self.samples) < 2:  # nothing since the start: unknown, not zero
            return None
        t0, b0 = self.samples[0]
        dt = now - t0
        if dt < 0.3:
            return None
        return max(0.0, (self.done - b0) / dt)

    def status(self, now: float) -> str:
        if self.state == RETRYING:
            left = self.retry_until - now
            return f"retry in {math.ceil(left)}s" if left > 0 else "retrying"
        return self.state


@dataclass(frozen=True)
class RowView:
    digest: str  # short
    images: str
    state: str  # one of the row states, for styling
    status: str  # what to print, e.g. "retry in 3s"
    done: int
    size: int
    speed: float | None
    eta: float | None


@dataclass(frozen=True)
class TotalView:
    phase: str
    images_done: int
    images_total: int
    blobs_done: int
    blobs_total: int
    reused: int
    done_bytes: int
    total_bytes: int
    speed: float | None
    eta: float | None
    elapsed: float


@dataclass(frozen=True)
class View:
    rows: list[RowView]
    hidden_active: int
    hidden_finished: int
    hidden_waiting: int
    total: TotalView

    @property
    def hidden(self) -> int:
        return self.hidden_active + self.hidden_finished + self.hidden_waiting


def _images_label(images: list[str]) -> str:
    if not images:
        return ""
    first = short_image(images[0])
    return first if len(images) == 1 else f"{first} +{len(images) - 1}"


class Board:
    """Rows of blobs (waiting, in flight, just finished) and the run's totals.

    Finished rows (done, present, shared) linger for `linger` seconds and then
    collapse: they leave the view and live on only in the totals.
    """

    def __init__(self, linger: float = 1.0, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.linger = linger
        self.stats = Stats(clock)
        self.waiting: dict[str, Row] = {}
        self.active: dict[str, Row] = {}
        self.finished: dict[str, Row] = {}  # insertion order == expiry order
        self.label_width = 0
        self._rate: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)

    # --- updates: O(1) each --------------------------------------------------

    def update(self, event: Event) -> None:
        self.stats.update(event)
        now = self.clock()
        row: Row | None
        if isinstance(event, BlobProgress):
            row = self._in_flight(event.digest, event.size, now)
            if row.state in (WAITING, RETRYING):
                row.state = DOWNLOADING
            row.note(now, event.done)
        elif isinstance(event, BlobQueued):
            row = self.waiting.get(event.digest) or self.active.get(event.digest)
            if row is None:
                self.waiting[event.digest] = Row(event.digest, event.size, [event.image])
            elif event.image not in row.images:
                row.images.append(event.image)
            self._label(event.image)
        elif isinstance(event, BlobStarted):
            row = self._in_flight(event.digest, event.size, now)
            row.state = DOWNLOADING
            row.samples.clear()
            row.note(now, event.offset)
        elif isinstance(event, BlobRetry):
            row = self.active.get(event.digest or "") or self.waiting.get(event.digest or "")
            if row is not None:
                row.state = RETRYING
                row.retry_until = now + max(event.delay, 0.0)
        elif isinstance(event, BlobVerifying):
            self._in_flight(event.digest, event.size, now).state = VERIFYING
        elif isinstance(event, BlobDone):
            row = self.active.pop(event.digest, None)
            if row is None:
                row = self.waiting.pop(event.digest, None)
            if row is None:
                row = Row(event.digest, event.size, [])
            row.state = DONE
            row.done = event.size
            self._finish(event.digest, row, now)
        elif isinstance(event, BlobSkipped):
            if event.reason == "shared":
                row = self.active.get(event.digest) or self.waiting.get(event.digest)
                if row is not None and event.image not in row.images:
                    row.images.append(event.image)
            state = {"shared": SHARED, "mounted": MOUNTED}.get(event.reason, PRESENT)
            skipped = Row(event.digest, event.size, [event.image], state, event.size)
            self._finish(f"{event.digest} {event.image}", skipped, now)
            self._label(event.image)

    def _in_flight(self, digest: str, size: int, now: float) -> Row:
        row = self.active.get(digest)
        if row is None:
            row = self.waiting.pop(digest, None)
            if row is None:
                row = Row(digest, size, [])
            self.active[digest] = row
        return row

    def _finish(self, key: str, row: Row, now: float) -> None:
        self._prune(now, budget=4)
        if self.linger <= 0:
            return
        row.expires = now + self.linger
        self.finished.pop(key, None)
        self.finished[key] = row

    def _prune(self, now: float, budget: int | None = None) -> None:
        finished = self.finished
        while finished and (budget is None or budget > 0):
            key = next(iter(finished))
            if finished[key].expires > now:
                break
            del finished[key]
            if budget is not None:
                budget -= 1

    def _label(self, image: str) -> None:
        self.label_width = max(self.label_width, len(short_image(image)) + 3)

    # --- reading: O(rows shown) ----------------------------------------------

    def phase(self) -> str:
        s = self.stats
        total = s.images_total
        if total and s.images_committed >= total:
            return FINISHED
        if self.active or self.waiting:
            return FETCHING
        if s.writing or s.queued_blobs or s.reused_blobs:
            return WRITING
        return RESOLVING

    def snapshot(self, limit: int = 16, final: bool = False) -> View:
        """What to draw now: at most `limit` blob rows, in flight first, then finished, then waiting."""
        now = self.clock()
        self._prune(now)
        limit = max(limit, 0)
        active = list(islice(self.active.values(), limit))
        finished = [] if final else list(islice(self.finished.values(), limit - len(active)))
        waiting = list(islice(self.waiting.values(), limit - len(active) - len(finished)))
        rows = [self._row_view(r, now) for r in (*finished, *active, *waiting)]
        return View(
            rows,
            len(self.active) - len(active),
            0 if final else len(self.finished) - len(finished),
            len(self.waiting) - len(waiting),
            self._total_view(now),
        )

    def _row_view(self, row: Row, now: float) -> RowView:
        speed = row.speed(now) if row.state == DOWNLOADING else None
        remaining = row.size - row.done
        eta = remaining / speed if speed and remaining > 0 else None
        return RowView(
            short(row.digest),
            _images_label(row.images),
            row.state,
            row.status(now),
            row.done,
            row.size,
            speed,
            eta,
        )

    def _total_view(self, now: float) -> TotalView:
        s = self.stats
        phase = self.phase()
        samples = self._rate
        samples.append((now, s.received_bytes))
        while len(samples) > 2 and samples[0][0] < now - TOTAL_WINDOW:
            samples.popleft()
        t0, b0 = samples[0]
        speed: float | None = None
        eta: float | None = None
        if phase == FINISHED:
            speed = s.throughput if s.fetched_bytes else None
        elif now - t0 >= 0.5:
            speed = max(0.0, (s.received_bytes - b0) / (now - t0))
            remaining = s.queued_bytes - s.received_bytes
            if speed > 0 and remaining > 0:
                eta = remaining / speed
        return TotalView(
            phase,
            s.images_committed,
            s.images_total,
            s.fetched_blobs,
            s.queued_blobs,
            s.reused_blobs,
            s.received_bytes,
            s.queued_bytes,
            speed,
            eta,
            s.elapsed,
        )
