"""The run report's plumbing: where each moved blob came from (from the events), and the
report out as an event and a file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from occystrap.commands.common import CliReporter
    from occystrap.events import Event
    from occystrap.mirror.changes import Changes
    from occystrap.mirror.plan import Plan, Planned


class SourceRecorder:
    """A reporter in front of the real one that notes each blob's source (BlobSource events)."""

    def __init__(self, inner: CliReporter) -> None:
        self.inner = inner
        self.sources: dict[str, str] = {}

    def emit(self, event: Event) -> None:
        source = getattr(event, "source", None)
        if type(event).__name__ == "BlobSource" and isinstance(source, str):
            self.sources[getattr(event, "digest", "")] = source
        self.inner.emit(event)

    def close(self, ok: bool = True, error: str | None = None) -> None:
        self.inner.close(ok, error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # the live display's console, __exit__


def emit_report(
    reporter: SourceRecorder,
    path: Path | None,
    planned: list[Planned],
    result: Plan,
    found: Changes | None,
    destination: str,
    upload: bool,
) -> None:
    from occystrap.events import RunReport
    from occystrap.mirror import report

    doc = report.build(planned, result, found, reporter.sources, destination, upload)
    reporter.emit(RunReport(doc))
    if path is not None:
        report.write(path, doc)
