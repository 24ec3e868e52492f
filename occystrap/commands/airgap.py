"""mirror's airgap options: --since OLD (a delta bundle) and --prune (a merged DEST keeps only
what this run mirrored). Kept here so the mirror command only calls in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread

from occystrap import digest as digests
from occystrap.delta.base import Base, size_line
from occystrap.events import Event, Info, Reporter
from occystrap.layout import catalog
from occystrap.layout.writer import streamed
from occystrap.mirror import keep, lockfile
from occystrap.mirror.plan import Plan
from occystrap.platform import Platform
from occystrap.sinks.base import Sink

if TYPE_CHECKING:
    from occystrap.prune import Pruning


def check_options(dest: Path | None, since: Path | None, prune: bool) -> None:
    """dest None: a registry."""
    from occystrap.errors import UsageError

    if since is not None and (dest is None or not lockfile.is_tarball(dest)):
        raise UsageError("--since makes a delta bundle: DEST must be a bundle tarball (.tar)")
    if since is not None and not since.exists():
        raise UsageError(f"--since {since} does not exist")
    if prune and (dest is None or lockfile.is_tarball(dest)):
        raise UsageError("--prune works on a merged directory DEST (a bundle is written whole anyway)")


def sink_factory(dest: Path, platform: Platform, base: Base | None, result: Plan) -> Callable[[], Sink]:
    from occystrap.mirror.run import local_sink

    if base is None:
        return lambda: local_sink(dest, platform)
    from occystrap.delta.sink import DeltaTarballSink

    own = digests.of(lockfile.lock_bytes(result.lock()))
    meta = base.meta(result.nodes, own)
    return lambda: DeltaTarballSink(dest, meta, platform)


def _pruning(dest: Path, result: Plan, prune: bool) -> Pruning | None:
    if not prune or not (dest / "catalog.json").is_file():
        return None
    from occystrap import prune as pruning

    return pruning.plan(dest, lambda images, _: keep.planned(images, result), after=result.nodes)


def dry_run_lines(dest: Path, result: Plan, base: Base | None, prune: bool) -> list[str]:
    lines = [size_line(base, result.nodes)] if base is not None else []
    found = _pruning(dest, result, prune)
    return lines + (["prune: " + line for line in found.lines()] if found is not None else [])


def dry_run_json(dest: Path, result: Plan, base: Base | None, prune: bool) -> dict[str, Any]:
    """--dry-run --json: the delta's size against the full bundle's, and what prune would remove."""
    doc: dict[str, Any] = {}
    if base is not None:
        full = streamed(result.nodes)
        left = base.omitted(result.nodes)
        full_bytes, left_bytes = sum(l.descriptor.size for l in full), sum(b.size for b in left)
        doc["delta"] = {
            "base": base.name,
            "base_lock_digest": base.lock_digest,
            "blobs": len(full) - len(left),
            "bytes": full_bytes - left_bytes,
            "full": {"blobs": len(full), "bytes": full_bytes},
            "left_to_base": {"blobs": len(left), "bytes": left_bytes},
        }
    found = _pruning(dest, result, prune)
    if found is not None:
        doc["prune"] = {
            "remove": [str(r) for r in found.removed],
            "blobs": len(found.blobs),
            "bytes": found.freed,
        }
    return doc


class FromThread:
    """A reporter for work on a worker thread: each event is handed to the event loop."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def emit(self, event: Event) -> None:
        anyio.from_thread.run_sync(self.reporter.emit, event)


async def after_run(dest: Path, result: Plan, base: Base | None, prune: bool, reporter: Reporter) -> None:
    if base is not None and result.items:
        reporter.emit(Info(size_line(base, result.nodes)))
    if prune:
        from occystrap import prune as pruning

        def choose(images: catalog.Images, _: lockfile.Lock | None) -> set[tuple[str, str]]:
            return keep.planned(images, result)

        done = await anyio.to_thread.run_sync(pruning.prune, dest, choose, FromThread(reporter))
        reporter.emit(Info(done.lines("removed")[-1]))
