"""merge's look before it writes: every input's names and what each points at, the conflicts
between inputs, where each blob is, and one lock file for the result. Nothing here writes.

Names keep the order of each input's index.json (inputs in the order given, each name where it
first appears), so merging the shards of one plan lists the images as one mirror run of that
plan would, and writes the same index.json, manifest.json and catalog.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from occystrap.concurrency import gather
from occystrap.digest import Digest
from occystrap.errors import NotFoundError, UsageError
from occystrap.mirror.lockfile import INDEX_KEY, Lock, lock_path, parse_lock
from occystrap.model import Descriptor
from occystrap.platform import Platform
from occystrap.reference import Reference
from occystrap.shard.marker import MARKER_NAME, ShardMeta
from occystrap.shard.marker import parse as parse_marker
from occystrap.sources.layout import LayoutSource

SHOWN = 20  # conflicts or missing blobs named in the one error line; the rest are counted


class MergeConflictError(UsageError):
    """The inputs give one name different content: nothing was written."""


class MissingBlobsError(NotFoundError):
    """No input holds some blob the merged images need: nothing was written."""


@dataclass(frozen=True)
class Name:
    ref: Reference
    digest: Digest  # what the name points at in this input
    platform: Platform | None  # as the input's index.json records it (a platform list's image)


@dataclass
class Input:
    path: Path
    source: LayoutSource
    names: list[Name]
    shard: ShardMeta | None
    lock: Lock | None


async def open_input(path: Path, limiter: anyio.CapacityLimiter) -> Input:
    """An input's names, each manifest read (and checked against its digest), its marker, its lock."""
    source = await anyio.to_thread.run_sync(LayoutSource, path)
    try:
        return await _read(source, path, limiter)
    except BaseException:
        await source.aclose()
        raise


async def _read(source: LayoutSource, path: Path, limiter: anyio.CapacityLimiter) -> Input:
    entries = await anyio.to_thread.run_sync(source.reader.entries)
    order: dict[str, int] = {}
    platforms: dict[str, Platform | None] = {}
    for i, entry in enumerate(entries):
        if entry.reference is not None:
            order.setdefault(str(entry.reference), i)
            platforms.setdefault(str(entry.reference), entry.descriptor.platform)
    refs = await anyio.to_thread.run_sync(source.references)
    fetched = await gather([lambda r=r: source.manifest(r) for r in refs], limiter)  # type: ignore[misc]
    names = [Name(r, f.digest, platforms.get(str(r))) for r, f in zip(refs, fetched, strict=True)]
    names.sort(key=lambda n: order.get(str(n.ref), len(entries)))  # stable: the rest keep their order
    marker = source.reader.small(MARKER_NAME)
    shard = parse_marker(marker, f"{path}/{MARKER_NAME}") if marker is not None else None
    return Input(path, source, names, shard, _lock(path))


def _lock(path: Path) -> Lock | None:
    where = lock_path(path)
    try:
        return parse_lock(where.read_bytes(), str(where))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {where}: {exc}") from None


def union(inputs: Sequence[Input]) -> list[tuple[Name, Input]]:
    """Every name once, from the first input that has it."""
    out: dict[str, tuple[Name, Input]] = {}
    for inp in inputs:
        for name in inp.names:
            out.setdefault(str(name.ref), (name, inp))
    return list(out.values())


def conflicts(inputs: Sequence[Input]) -> list[str]:
    """One line per name that two inputs point at different content."""
    seen: dict[str, dict[str, list[str]]] = {}
    for inp in inputs:
        for name in inp.names:
            seen.setdefault(str(name.ref), {}).setdefault(name.digest, []).append(str(inp.path))
    return [
        f"{name}: "
        + " vs ".join(f"{Digest.parse(d).short} in {', '.join(paths)}" for d, paths in held.items())
        for name, held in sorted(seen.items())
        if len(held) > 1
    ]


def merged_lock(inputs: Sequence[Input]) -> tuple[Lock | None, list[str]]:
    """The union of the inputs' locks (None when no input has one), and where they disagree."""
    out: Lock = {}
    first: dict[tuple[str, str, str], tuple[str, Path]] = {}
    clashes: dict[str, None] = {}
    with_lock = [(inp.path, inp.lock) for inp in inputs if inp.lock is not None]
    for path, lock in with_lock:
        for image, tags in lock.items():
            for key, platforms in tags.items():
                merged = out.setdefault(image, {}).setdefault(key, {})
                for platform, digest in platforms.items():
                    held, there = first.setdefault((image, key, platform), (digest, path))
                    if held != digest:
                        clash = (
                            f"{_short(held)} in {lock_path(there)} vs {_short(digest)} in {lock_path(path)}"
                        )
                        clashes[f"{image} {key} {platform}: {clash}"] = None
                    merged.setdefault(platform, digest)
                if INDEX_KEY in merged and len(merged) > 1:
                    clashes[
                        f"{image} {key}: locked to a whole index in one lock, to platforms in another"
                    ] = None
    return (out if with_lock else None), list(clashes)


def _short(digest: str) -> str:
    return Digest.parse(digest).short


def conflict_error(lines: list[str]) -> MergeConflictError:
    more = f"; +{len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
    return MergeConflictError(
        f"{len(lines)} conflict(s), one name with different content in two inputs (nothing written): "
        + "; ".join(lines[:SHOWN])
        + more
    )


def missing_error(missing: Sequence[Descriptor], inputs: Sequence[Input]) -> MissingBlobsError:
    names = [d.digest[:19] for d in sorted(missing, key=lambda d: d.digest)]
    more = f", +{len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return MissingBlobsError(
        f"{len(missing)} blob(s) the images need are in no input: {', '.join(names[:SHOWN])}{more}"
        f"{_absent_shards(inputs)} (nothing written)"
    )


def _absent_shards(inputs: Sequence[Input]) -> str:
    """`; shard 3/4 of plan sha256:… is not among the inputs`, when shards are merged."""
    plans: dict[tuple[str, int], set[int]] = {}
    for inp in inputs:
        if inp.shard is not None:
            plans.setdefault((inp.shard.plan_digest, inp.shard.shard.count), set()).add(inp.shard.shard.index)
    notes = []
    for (plan, count), held in sorted(plans.items()):
        absent = [str(i) for i in range(1, count + 1) if i not in held]
        if absent:
            which = ", ".join(f"{i}/{count}" for i in absent)
            notes.append(f"shard(s) {which} of plan {plan[:19]} not among the inputs")
    return "; " + "; ".join(notes) if notes else ""
