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
- :class:`QuietReporter` (``none``, ``--quiet``): nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from occystrap.events import (
    BlobDone,
    BlobProgress,
    BlobQueued,
    BlobRetry,
    BlobSkipped,
    BlobStarted,
    CommitStarted,
    Event,
    ImageCommitted,
    ImageResolved,
    Info,
    Warning_,
)
from occystrap.ui import schema
from occystrap.ui.state import (
    DONE,
    DOWNLOADING,
    FINISHED,
    PRESENT,
    RESOLVING,
    RETRYING,
    SHARED,
    VERIFYING,
    WAITING,
    WRITING,
    Board,
    Clock,
    RowView,
    Stats,
    TotalView,
    View,
    duration,
    human,
    human_pair,
    rate,
    short,
    short_image,
)

__all__ = [
    "JsonReporter",
    "PlainReporter",
    "QuietReporter",
    "RichReporter",
    "Stats",
    "human",
    "short",
]

log = logging.getLogger(__name__)

MAX_REFRESH = 10.0
_LINES_ONLY = (Info, Warning_)  # events that print a line but need no live display


class _Guarded:
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


# --------------------------------------------------------------------------
# Rich
# --------------------------------------------------------------------------

_STYLE = {
    WAITING: "dim",
    DOWNLOADING: "cyan",
    RETRYING: "yellow",
    VERIFYING: "magenta",
    DONE: "green",
    PRESENT: "green",
    SHARED: "blue",
}

# Column widths that do not move between frames.
_DIGEST_W = 12
_STATUS_W = 12
_BYTES_W = 15
_SPEED_W = 10
_ETA_W = 6


class _Frame:
    """The live renderable: asks the reporter for a fresh view on every refresh."""

    def __init__(self, reporter: RichReporter) -> None:
        self.reporter = reporter

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        frame: Table | Text
        try:
            frame = self.reporter.render(options.max_width, console.size.height)
        except Exception:
            self.reporter._failed("render")
            frame = Text("(progress display unavailable)", style="dim")
        yield frame


class RichReporter(_Guarded):
    """Rows of blobs in flight and a total row, drawn live on a terminal (stderr)."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        linger: float = 1.0,
        refresh_per_second: float = 8.0,
        max_rows: int = 16,
        clock: Clock = time.monotonic,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.board = Board(linger, clock)
        self.stats = self.board.stats
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._entered = False
        self._started = False
        self._final = False
        self._closed = False
        self.live = Live(
            _Frame(self),
            console=self.console,
            refresh_per_second=min(max(refresh_per_second, 0.5), MAX_REFRESH),
            transient=False,
            redirect_stdout=False,  # stdout may carry data; never wrap it
            redirect_stderr=True,
            vertical_overflow="crop",
        )

    # --- lifecycle -----------------------------------------------------------

    def __enter__(self) -> RichReporter:
        """Arms the display; it starts drawing with the first event about images or blobs.

        Commands that only print (a plan, tags, a manifest) and send no such event
        never get a live region fighting their output for the terminal.
        """
        self._entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start(self) -> None:
        self._started = True
        try:
            self.live.start()
        except Exception:
            self._failed("start")

    def _stop(self) -> None:
        if self._final:
            return
        self._final = True
        self.stats.finish()
        if not self._started:
            return
        try:
            self.live.stop()  # draws a last frame: finished rows gone, totals final
            if not self.console.is_terminal:
                self.console.line()  # rich ends that frame with a newline only on terminals
        except Exception:
            self._failed("stop")

    def close(self, ok: bool = True, error: str | None = None) -> None:
        self._stop()
        if self._closed:
            return
        self._closed = True
        try:
            self.console.print(
                Text(self.stats.summary(ok), style="bold" if ok else "bold red"), soft_wrap=True
            )
        except Exception:
            self._failed("close")

    # --- events --------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        with self._lock:
            self.board.update(event)
        if isinstance(event, BlobProgress):  # the hot path: nothing to print
            return
        if self._entered and not self._started and not self._final and not isinstance(event, _LINES_ONLY):
            self._start()
        line = self._line(event)
        if line is not None:
            self.console.print(line, soft_wrap=True)

    def _line(self, event: Event) -> Text | None:
        if isinstance(event, ImageResolved):
            detail = f"{event.platform}, " if event.platform else ""
            return Text.assemble(
                ("resolved ", "bold"),
                event.image,
                (f" {short(event.manifest_digest)}", "cyan"),
                (f" ({detail}{event.blobs} layers, {human(event.total_bytes)})", "dim"),
            )
        if isinstance(event, BlobRetry):
            what = short(event.digest) if event.digest else event.url
            return Text.assemble(
                ("retry ", "yellow bold"),
                f"{what} attempt {event.attempt} in {event.delay:.1f}s: ",
                (event.reason, "yellow"),
            )
        if isinstance(event, Warning_):
            return Text.assemble(("warning: ", "yellow bold"), event.message)
        if isinstance(event, Info):
            return Text(event.message, style="dim")
        if isinstance(event, ImageCommitted):
            where = f" -> {event.path}" if event.path else ""
            return Text.assemble(("wrote ", "green bold"), event.image, where)
        return None

    # --- drawing (rich's refresh thread) --------------------------------------

    def snapshot(self, limit: int | None = None) -> View:
        with self._lock:
            return self.board.snapshot(self.max_rows if limit is None else limit, final=self._final)

    def render(self, width: int, height: int) -> Table:
        """The live view: blob rows, a `+N more` row when some are hidden, the total row."""
        view = self.snapshot(max(1, min(self.max_rows, height - 4)))
        widths = _layout(width, self.board.label_width)
        table = Table.grid(padding=(0, 1))
        for name, w in widths.items():
            table.add_column(
                width=w, no_wrap=True, overflow="ellipsis", justify="right" if name in _RIGHT else "left"
            )

        def add(cells: dict[str, Any], style: str = "") -> None:
            table.add_row(*(cells.get(name, "") for name in widths), style=style)

        for row in view.rows:
            add(_row_cells(row, widths.get("bar", 0)))
        if view.hidden:
            counts = [
                f"{n} {what}"
                for n, what in (
                    (view.hidden_active, "active"),
                    (view.hidden_waiting, "waiting"),
                    (view.hidden_finished, "finished"),
                )
                if n
            ]
            add(
                {
                    "digest": f"+{view.hidden} more",
                    **dict(zip(("label", "status", "bytes"), counts, strict=False)),
                },
                "dim",
            )
        add(_total_cells(view.total, widths.get("bar", 0)))
        return table


_RIGHT = ("bytes", "speed", "eta")


def _layout(width: int, label_width: int) -> dict[str, int]:
    """Column widths for this terminal width: the bar goes first, then ETA and speed; never the numbers."""
    widths = {
        "digest": _DIGEST_W,
        "label": 0,
        "status": _STATUS_W,
        "bar": 0,
        "bytes": _BYTES_W,
        "speed": _SPEED_W,
        "eta": _ETA_W,
    }
    for drop in ("eta", "speed"):
        if sum(widths.values()) + len(widths) + 10 <= width:
            break
        del widths[drop]
    spare = width - sum(widths.values()) - len(widths)  # one space between columns, one spare
    if spare < 30:  # narrow: the names matter more than a bar
        widths["label"] = max(spare, 6)
        del widths["bar"]
    else:
        widths["label"] = max(min(label_width, 28, spare // 2), 12)
        widths["bar"] = min(spare - widths["label"] - 1, 30)
    return widths


def _row_cells(row: RowView, bar_w: int) -> dict[str, Any]:
    finished = row.state in (DONE, PRESENT, SHARED)
    return {
        "digest": Text(row.digest, style="dim" if finished else "cyan"),
        "label": Text(row.images, style="dim" if finished else ""),
        "status": Text(row.status, style=_STYLE.get(row.state, "")),
        "bar": ProgressBar(total=max(row.size, 1), completed=row.size if finished else row.done, width=bar_w),
        "bytes": (
            Text(human(row.size), style="dim")
            if finished or row.state == WAITING
            else Text(human_pair(row.done, row.size))
        ),
        "speed": Text(rate(row.speed), style="green"),
        "eta": Text(duration(row.eta), style="dim"),
    }


def _total_cells(total: TotalView, bar_w: int) -> dict[str, Any]:
    done = total.phase == FINISHED
    return {
        "digest": Text("total", style="bold"),
        "label": Text(f"{total.images_done}/{total.images_total} images", style="bold"),
        "status": Text(f"{total.blobs_done}/{total.blobs_total} blobs", style="bold"),
        "bar": ProgressBar(total=max(total.total_bytes, 1), completed=total.done_bytes, width=bar_w),
        "bytes": Text(human_pair(total.done_bytes, total.total_bytes), style="bold"),
        "speed": (
            Text(total.phase, style="magenta")
            if total.phase in (RESOLVING, WRITING)
            else Text(rate(total.speed), style="bold green")
        ),
        "eta": Text(duration(total.elapsed if done else total.eta), style="dim" if done else ""),
    }


# --------------------------------------------------------------------------
# Plain lines
# --------------------------------------------------------------------------


class PlainReporter(_Guarded):
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
            return (
                f"resolved {event.image} {event.manifest_digest}"
                f" ({detail}{event.blobs} layers, {human(event.total_bytes)})"
            )
        if isinstance(event, BlobDone):
            began = self._started.pop(event.digest, None)
            owner = self._owner.pop(event.digest, None)
            took = ""
            if began is not None:
                secs = max(self.clock() - began, 1e-3)
                took = f" in {secs:.1f}s ({rate(event.size / secs)})"
            image = f" for {short_image(owner)}" if owner else ""
            return f"fetched {short(event.digest)} {human(event.size)}{took}{image}"
        if isinstance(event, BlobSkipped):
            why = "already present" if event.reason == "present" else "shared with another image"
            return f"reused {short(event.digest)} {human(event.size)} for {short_image(event.image)} ({why})"
        if isinstance(event, BlobRetry):
            what = short(event.digest) if event.digest else event.url
            return f"retry {what} attempt {event.attempt} in {event.delay:.1f}s: {event.reason}"
        if isinstance(event, Warning_):
            return f"warning: {event.message}"
        if isinstance(event, Info):
            return event.message
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


class JsonReporter(_Guarded):
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


class QuietReporter:
    def emit(self, event: Event) -> None:
        return None

    def close(self, ok: bool = True, error: str | None = None) -> None:
        return None
