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
from collections.abc import Callable
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
    CommitStarted,
    Event,
    ImageCommitted,
    ImageResolved,
    RunStarted,
    Warning_,
)

Clock = Callable[[], float]

# Row states.
WAITING = "waiting"
DOWNLOADING = "downloading"
RETRYING = "retrying"
VERIFYING = "verifying"
DONE = "done"
PRESENT = "present"
SHARED = "shared"

# Overall phases.
RESOLVING = "resolving"
FETCHING = "fetching"
WRITING = "writing"
FINISHED = "done"

SPEED_WINDOW = 3.0  # seconds of samples behind a per-blob speed
TOTAL_WINDOW = 5.0  # seconds of samples behind the aggregate speed
MAX_SAMPLES = 256


# --------------------------------------------------------------------------
# Formatting (ASCII only: CI logs and odd locales must never break on it)
# --------------------------------------------------------------------------


def short(digest: str | None) -> str:
    """`sha256:0123456789abcdef...` -> `0123456789ab` (what docker shows)."""
    if not digest:
        return "-"
    algo, sep, hexpart = digest.partition(":")
    return (hexpart if sep else algo)[:12]


def short_image(name: str) -> str:
    """Drop the registry host and `library/`: `127.0.0.1:5000/team/app:v1` -> `team/app:v1`."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        name = rest
        if first == "docker.io" and name.startswith("library/"):
            name = name[len("library/") :]
    base, at, digest = name.partition("@")
    return f"{base}@{short(digest)}" if at else name


_UNITS = ("B", "kB", "MB", "GB", "TB")


def _scale(n: float) -> tuple[float, str]:
    n = abs(n)
    for i, unit in enumerate(_UNITS):
        if n < 1000 or unit == _UNITS[-1]:
            return 1000.0**i, unit
        n /= 1000
    return 1.0, "B"  # pragma: no cover


def human(n: float) -> str:
    """Decimal units, as registries and docker report sizes: `1.2 MB`."""
    div, unit = _scale(n)
    return f"{n:.0f} {unit}" if unit == "B" else f"{n / div:.1f} {unit}"


def human_pair(done: float, total: float) -> str:
    """`4.2/10.0 MB`: both numbers in the unit of the total."""
    div, unit = _scale(max(total, done))
    if unit == "B":
        return f"{done:.0f}/{total:.0f} B"
    return f"{done / div:.1f}/{total / div:.1f} {unit}"


def rate(bps: float | None) -> str:
    return "" if bps is None else f"{human(bps)}/s"


def duration(seconds: float | None) -> str:
    """`7s`, `3m05s`, `1h02m`; empty when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------
# Totals
# --------------------------------------------------------------------------


class Stats:
    """Run totals every reporter keeps for the overall row and the final summary."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.ended: float | None = None
        self.images_requested = 0
        self.images_resolved = 0
        self.images_committed = 0
        self.referenced_blobs = 0
        self.referenced_bytes = 0
        self.queued_blobs = 0
        self.queued_bytes = 0
        self.fetched_blobs = 0
        self.fetched_bytes = 0
        self.reused_blobs = 0
        self.reused_bytes = 0
        self.present_blobs = 0
        self.shared_blobs = 0
        self.received_bytes = 0  # bytes of fetched blobs so far, finished or not
        self.retries = 0
        self.warnings = 0
        self.writing = False
        self._received: dict[str, int] = {}

    @property
    def images_total(self) -> int:
        return max(self.images_requested, self.images_resolved, self.images_committed)

    @property
    def referenced(self) -> int:
        """Bytes of every layer of every image; fetched + reused when images were not announced."""
        return max(self.referenced_bytes, self.fetched_bytes + self.reused_bytes)

    @property
    def elapsed(self) -> float:
        end = self.ended if self.ended is not None else self.clock()
        return max(end - self.started, 0.0)

    @property
    def throughput(self) -> float:
        return self.fetched_bytes / max(self.elapsed, 1e-3)

    def update(self, event: Event) -> None:
        if isinstance(event, BlobProgress):
            before = self._received.get(event.digest, 0)
            self._received[event.digest] = event.done
            self.received_bytes += event.done - before
        elif isinstance(event, BlobDone):
            self.fetched_blobs += 1
            self.fetched_bytes += event.size
            self.received_bytes += event.size - self._received.pop(event.digest, 0)
        elif isinstance(event, BlobQueued):
            self.queued_blobs += 1
            self.queued_bytes += event.size
        elif isinstance(event, BlobSkipped):
            self.reused_blobs += 1
            self.reused_bytes += event.size
            if event.reason == "shared":
                self.shared_blobs += 1
            else:
                self.present_blobs += 1
        elif isinstance(event, ImageResolved):
            self.images_resolved += 1
            self.referenced_blobs += event.blobs
            self.referenced_bytes += event.total_bytes
        elif isinstance(event, ImageCommitted):
            self.images_committed += 1
        elif isinstance(event, RunStarted):
            self.images_requested += len(event.images)
        elif isinstance(event, CommitStarted):
            self.writing = True
        elif isinstance(event, BlobRetry):
            self.retries += 1
        elif isinstance(event, Warning_):
            self.warnings += 1

    def finish(self) -> None:
        if self.ended is None:
            self.ended = self.clock()

    def summary(self, ok: bool = True) -> str:
        """The one line every command ends with."""
        self.finish()
        images = (
            plural(self.images_committed, "image")
            if ok and self.images_committed >= self.images_total
            else f"{self.images_committed}/{plural(self.images_total, 'image')}"
        )
        head = "summary:" if ok else "summary (failed):"
        return (
            f"{head} {images}, {plural(self.fetched_blobs, 'blob')} fetched ({human(self.fetched_bytes)}), "
            f"{self.reused_blobs} reused ({human(self.reused_bytes)}), "
            f"{human(self.referenced)} referenced, in {self.elapsed:.1f}s at "
            f"{rate(self.throughput)}, {self.retries} {'retry' if self.retries == 1 else 'retries'}, "
            f"{plural(self.warnings, 'warning')}"
        )


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
            state = SHARED if event.reason == "shared" else PRESENT
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
