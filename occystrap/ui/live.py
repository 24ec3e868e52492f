"""The live terminal display, the only module that imports rich (loaded only when it is used)."""

from __future__ import annotations

import logging
import threading
import time

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from occystrap.events import (
    BlobProgress,
    BlobRetry,
    Event,
    ImageCommitted,
    ImageResolved,
    Info,
    PullQuota,
    Warning_,
)
from occystrap.ui.guarded import LINES_ONLY, MAX_REFRESH, Guarded
from occystrap.ui.state import (
    DONE,
    DOWNLOADING,
    FINISHED,
    MOUNTED,
    PRESENT,
    RESOLVING,
    RETRYING,
    SHARED,
    VERIFYING,
    WAITING,
    WRITING,
    Board,
    RowView,
    TotalView,
    View,
)
from occystrap.ui.stats import Clock
from occystrap.ui.units import duration, human, human_pair, rate, short

log = logging.getLogger(__name__)

_STYLE = {
    WAITING: "dim",
    DOWNLOADING: "cyan",
    RETRYING: "yellow",
    VERIFYING: "magenta",
    DONE: "green",
    PRESENT: "green",
    SHARED: "blue",
    MOUNTED: "blue",
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
        frame: Text
        try:
            frame = self.reporter.render(options.max_width, console.size.height)
        except Exception:
            self.reporter._failed("render")
            frame = Text("(progress display unavailable)", style="dim")
        yield frame


class RichReporter(Guarded):
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
        if self._entered and not self._started and not self._final and not isinstance(event, LINES_ONLY):
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
        if isinstance(event, PullQuota):
            line = self.stats.quota_line(event)
            low = event.limit is not None and event.remaining <= max(1, event.limit // 10)
            return Text(line, style="yellow" if low else "dim") if line else None
        if isinstance(event, ImageCommitted):
            where = f" -> {event.path}" if event.path else ""
            return Text.assemble(("wrote ", "green bold"), event.image, where)
        return None

    # --- drawing (rich's refresh thread) --------------------------------------

    def snapshot(self, limit: int | None = None) -> View:
        with self._lock:
            return self.board.snapshot(self.max_rows if limit is None else limit, final=self._final)

    def render(self, width: int, height: int) -> Text:
        """The live view: blob rows, a `+N more` row when some are hidden, the total row.

        Drawn as plain styled lines in columns of fixed width (see _layout), not a rich
        Table: the frame is redrawn up to ten times a second while the fetch needs the CPU,
        and a Table costs about 2 ms a frame (and its import, 8 ms a run) to lay out
        columns whose widths are already known here.
        """
        view = self.snapshot(max(1, min(self.max_rows, height - 4)))
        widths = _layout(width, self.board.label_width)
        lines: list[Text] = []

        def add(cells: dict[str, Text], style: str = "") -> None:
            line = Text(style=style, no_wrap=True, overflow="crop")
            for i, (name, w) in enumerate(widths.items()):
                cell = cells.get(name) or Text()
                cell.truncate(w, overflow="ellipsis")
                cell.align("right" if name in _RIGHT else "left", w)
                if i:
                    line.append(" ")
                line.append_text(cell)
            lines.append(line)

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
                    "digest": Text(f"+{view.hidden} more"),
                    **{k: Text(v) for k, v in zip(("label", "status", "bytes"), counts, strict=False)},
                },
                "dim",
            )
        add(_total_cells(view.total, widths.get("bar", 0)))
        return Text("\n", no_wrap=True, overflow="crop").join(lines)


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
        del widths["bar"]
        if spare >= 6:
            widths["label"] = spare
        else:  # very narrow: no names; the status gets what is left beside digest and bytes
            del widths["label"]
            widths["status"] = min(_STATUS_W, width - widths["digest"] - widths["bytes"] - 2)
            if widths["status"] < 4:
                del widths["status"]
    else:
        widths["label"] = max(min(label_width, 28, spare // 2), 12)
        widths["bar"] = min(spare - widths["label"] - 1, 30)
    return widths


def _bar(total: int, completed: int, width: int) -> Text:
    """A bar drawn as rich's ProgressBar draws one, in half-cell steps and its theme's styles."""
    halves = width * 2 * min(max(completed, 0), total) // total if total > 0 else 0
    full, half = divmod(halves, 2)
    style = "bar.finished" if total > 0 and completed >= total else "bar.complete"
    bar = Text("━" * full, style=style)
    if half:
        bar.append("╸", style=style)
    if width - full - half > 0:
        bar.append("━" * (width - full - half), style="bar.back")
    return bar


def _row_cells(row: RowView, bar_w: int) -> dict[str, Text]:
    finished = row.state in (DONE, PRESENT, SHARED, MOUNTED)
    return {
        "digest": Text(row.digest, style="dim" if finished else "cyan"),
        "label": Text(row.images, style="dim" if finished else ""),
        "status": Text(row.status, style=_STYLE.get(row.state, "")),
        "bar": _bar(row.size, row.size if finished else row.done, bar_w),
        "bytes": (
            Text(human(row.size), style="dim")
            if finished or row.state == WAITING
            else Text(human_pair(row.done, row.size))
        ),
        "speed": Text(rate(row.speed), style="green"),
        "eta": Text(duration(row.eta), style="dim"),
    }


def _total_cells(total: TotalView, bar_w: int) -> dict[str, Text]:
    done = total.phase == FINISHED
    return {
        "digest": Text("total", style="bold"),
        "label": Text(f"{total.images_done}/{total.images_total} images", style="bold"),
        "status": Text(f"{total.blobs_done}/{total.blobs_total} blobs", style="bold"),
        "bar": _bar(total.total_bytes, total.done_bytes, bar_w),
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
