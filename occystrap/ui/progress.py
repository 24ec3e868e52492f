"""Reporters: rich bars on a terminal, plain lines otherwise, JSON lines, or nothing."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from occystrap.events import (
    BlobDone,
    BlobProgress,
    BlobQueued,
    BlobRetry,
    BlobSkipped,
    BlobStarted,
    Event,
    ImageCommitted,
    ImageResolved,
    Warning_,
)


def short(digest: str) -> str:
    return digest.partition(":")[2][:12]


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


class Stats:
    """Totals every reporter keeps, for the final summary."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.images = 0
        self.fetched_blobs = 0
        self.fetched_bytes = 0
        self.reused_blobs = 0
        self.reused_bytes = 0
        self.retries = 0
        self.warnings = 0

    def update(self, event: Event) -> None:
        if isinstance(event, ImageCommitted):
            self.images += 1
        elif isinstance(event, BlobDone):
            self.fetched_blobs += 1
            self.fetched_bytes += event.size
        elif isinstance(event, BlobSkipped):
            self.reused_blobs += 1
            self.reused_bytes += event.size
        elif isinstance(event, BlobRetry):
            self.retries += 1
        elif isinstance(event, Warning_):
            self.warnings += 1

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return (
            f"{self.images} image(s); fetched {self.fetched_blobs} blob(s), {human(self.fetched_bytes)}; "
            f"reused {self.reused_blobs}, {human(self.reused_bytes)}; {elapsed:.1f}s, "
            f"{human(self.fetched_bytes / elapsed)}/s; {self.retries} retries, {self.warnings} warnings"
        )


class RichReporter:
    """A row per layer in flight and a total row. Drawn by rich's own refresh thread."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.stats = Stats()
        self.progress = Progress(
            TextColumn("{task.fields[label]:<14}"),
            BarColumn(bar_width=30),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            refresh_per_second=8,
        )
        self.total: TaskID | None = None
        self.rows: dict[str, TaskID] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        self.total = self.progress.add_task("", total=0, label="total")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def emit(self, event: Event) -> None:
        self.stats.update(event)
        p = self.progress
        assert self.total is not None
        if isinstance(event, ImageResolved):
            p.console.print(f"resolved {event.image} → {short(event.manifest_digest)}")
        elif isinstance(event, BlobQueued):
            self.rows[event.digest] = p.add_task("", total=event.size, label=short(event.digest), start=False)
            p.update(self.total, total=(p.tasks[self.total].total or 0) + event.size)
        elif isinstance(event, BlobStarted):
            if event.digest in self.rows:
                p.start_task(self.rows[event.digest])
        elif isinstance(event, BlobProgress):
            row = self.rows.get(event.digest)
            if row is not None:
                before = p.tasks[row].completed
                p.update(row, completed=event.done)
                p.advance(self.total, event.done - before)
        elif isinstance(event, BlobRetry):
            p.console.print(
                f"[yellow]retry {event.attempt} in {event.delay:.1f}s: {event.url}: {event.reason}"
            )
        elif isinstance(event, Warning_):
            p.console.print(f"[yellow]warning: {event.message}")
        elif isinstance(event, ImageCommitted):
            p.console.print(f"[green]wrote {event.image}")

    def close(self) -> None:
        self.console.print(self.stats.summary())


class PlainReporter:
    """One line per meaningful state change; a progress line at most every `interval` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self.stats = Stats()
        self._last = time.monotonic()
        self._total = 0
        self._done: dict[str, int] = {}

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def emit(self, event: Event) -> None:
        self.stats.update(event)
        if isinstance(event, ImageResolved):
            self._line(
                f"resolved {event.image} {event.manifest_digest}"
                f" ({event.blobs} layers, {human(event.total_bytes)})"
            )
        elif isinstance(event, BlobQueued):
            self._total += event.size
        elif isinstance(event, BlobProgress):
            self._done[event.digest] = event.done
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._line(f"progress {human(sum(self._done.values()))} of {human(self._total)}")
        elif isinstance(event, BlobDone):
            self._line(f"fetched {short(event.digest)} {human(event.size)}")
        elif isinstance(event, BlobRetry):
            self._line(f"retry {event.attempt} in {event.delay:.1f}s: {event.url}: {event.reason}")
        elif isinstance(event, Warning_):
            self._line(f"warning: {event.message}")
        elif isinstance(event, ImageCommitted):
            self._line(f"wrote {event.image}")

    def close(self) -> None:
        self._line(self.stats.summary())


class JsonReporter:
    """JSON lines on stderr: {"event": <type>, "at": <unix time>, ...fields}."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.stats = Stats()

    def emit(self, event: Event) -> None:
        self.stats.update(event)
        doc = {"event": type(event).__name__.rstrip("_"), **asdict(event)}
        print(json.dumps(doc), file=self.stream, flush=True)

    def close(self) -> None:
        s = self.stats
        doc = {
            "event": "Summary",
            "at": time.time(),
            "images": s.images,
            "fetched_blobs": s.fetched_blobs,
            "fetched_bytes": s.fetched_bytes,
            "reused_blobs": s.reused_blobs,
            "reused_bytes": s.reused_bytes,
            "retries": s.retries,
        }
        print(json.dumps(doc), file=self.stream, flush=True)


class QuietReporter:
    def emit(self, event: Event) -> None:
        return None

    def close(self) -> None:
        return None
