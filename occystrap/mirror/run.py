"""Moving a plan into DEST in one engine run; with --keep-going, failures narrowed to images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from occystrap.concurrency import library_error
from occystrap.engine import Engine, Item
from occystrap.errors import OccystrapError, UsageError
from occystrap.mirror.lockfile import is_tarball
from occystrap.mirror.plan import Plan, Planned
from occystrap.model import Node
from occystrap.platform import Platform
from occystrap.sinks.base import Sink
from occystrap.sources.base import Source


class MirrorFailedError(OccystrapError):
    """Some images of a --keep-going run failed; the others were mirrored."""

    exit_code = 1


def local_sink(dest: Path, platform: Platform | None) -> Sink:
    from occystrap.sinks.directory import DirectorySink
    from occystrap.sinks.tarball import TarballSink

    if is_tarball(dest):
        if dest.is_dir():
            raise UsageError(f"{dest} is a directory")
        return TarballSink(dest, platform=platform)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory")
    return DirectorySink(dest, unique_names=True, platform=platform)


Place = Callable[[Node], Node]


def items(planned: list[Planned], place: Place | None = None) -> list[Item]:
    """Engine items; place: how a node is named at the destination (a registry's PREFIX/…)."""
    return [Item(p.source_ref, place(p.node) if place else p.node) for p in planned]


async def fetch(
    engine: Engine,
    source: Source,
    result: Plan,
    make_sink: Callable[[], Sink],
    keep_going: bool = False,
    whole: bool = False,
    place: Place | None = None,
) -> None:
    """Everything in one engine run. With keep_going a failure is narrowed down to its images:
    retried image by image where DEST keeps what arrived; where DEST is written whole (a
    bundle: `whole`), every image fails with it."""
    if not result.items:
        return
    try:
        await engine.copy(source, make_sink(), items(result.items, place))
        return
    except BaseException as exc:
        err = library_error(exc)
        if err is None or not keep_going:
            raise
        if whole:
            for name in dict.fromkeys(p.source for p in result.items):
                result.fail(name, err, f"bundle not written: {err}")
            result.items.clear()
            return
    by_source: dict[str, list[Planned]] = {}
    for p in result.items:
        by_source.setdefault(p.source, []).append(p)
    kept: list[Planned] = []
    for name, planned in by_source.items():
        try:
            await engine.copy(source, make_sink(), items(planned, place))
            kept.extend(planned)
        except BaseException as exc:
            err = library_error(exc)
            if err is None:
                raise
            result.fail(name, err)
    result.items[:] = kept


def failure_message(failures: dict[str, str]) -> str:
    """The one error line of a --keep-going run: every failed image and why (shortened)."""
    reasons = "; ".join(f"{name}: {why if len(why) <= 200 else why[:197] + '...'}"
                        for name, why in sorted(failures.items()))  # fmt: skip
    return f"{len(failures)} image(s) failed: {reasons}"
