"""merge INPUT... INTO: shard outputs, merged directories and bundles combined into one merged
directory or bundle, every blob verified on the way (the scale-out's last step)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from occystrap.commands.common import Context, progress_options, run, transfer_options, wrap_errors
from occystrap.errors import UsageError

if TYPE_CHECKING:
    import anyio

    from occystrap.engine import Item
    from occystrap.model import Descriptor
    from occystrap.shard.inputs import Input, Name


@click.command("merge")
@click.argument("paths", nargs=-1, required=True, metavar="INPUT... INTO")
@transfer_options
@progress_options
@wrap_errors
def merge_cmd(paths: tuple[str, ...], **opts: Any) -> None:
    """Combine INPUTs into INTO: a merged directory, or a bundle when INTO ends in .tar.

    Each INPUT is a shard's output (`mirror --shard I/N`), a merged directory, a
    bundle tarball or another image layout. Every name they hold goes into INTO
    once, with one catalog.json, index.json and manifest.json; every blob is
    stored once, taken from whichever input holds it, and verified on the way
    (digest, size, and each layer's diff_id), as any copy is. Before anything is
    written, names that two inputs point at different content are refused, all
    of them in one error line, and so are blobs no input holds (naming the
    shards that are not among the inputs). An existing merged directory INTO
    keeps what it holds (its names count in the conflict check). The inputs'
    lock files are combined into INTO's. Merging the shards of one plan gives
    what one `mirror` run of that plan would have written.

    \b
    Examples:
      occystrap merge shard-1/ shard-2/ shard-3/ shard-4/ mirror/
      occystrap merge shard-*/ bundle.tar
      occystrap merge site-a/ site-b.tar combined/
      occystrap merge --progress json shard-*/ mirror/ 2> merge.jsonl
    """
    if len(paths) < 2:
        raise UsageError("expected INPUT... INTO: at least one input, then where to write")
    inputs, into = [Path(p) for p in paths[:-1]], Path(paths[-1])
    check_paths(inputs, into)

    async def body(ctx: Context) -> None:
        await merge(ctx, inputs, into)

    run(opts, body)


def check_paths(inputs: list[Path], into: Path) -> None:
    from occystrap.mirror.lockfile import is_tarball
    from occystrap.shard.marker import MARKER_NAME

    seen: set[Path] = set()
    for path in inputs:
        if not path.exists():
            raise UsageError(f"input {path} does not exist")
        if path.resolve() in seen:
            raise UsageError(f"input {path} is named twice")
        seen.add(path.resolve())
    if into.resolve() in seen:
        raise UsageError(f"{into} is an input; merge into another directory or bundle")
    if is_tarball(into) and into.is_dir():
        raise UsageError(f"{into} is a directory")
    if not is_tarball(into) and into.exists() and not into.is_dir():
        raise UsageError(f"{into} exists and is not a directory")
    if (into / MARKER_NAME).exists():
        raise UsageError(f"{into} is a shard's output; merge into a new directory")


async def merge(ctx: Context, paths: list[Path], into: Path) -> None:
    from occystrap.events import Info, RunStarted
    from occystrap.layout.writer import streamed
    from occystrap.mirror.lockfile import lock_path, write_lock
    from occystrap.mirror.run import local_sink
    from occystrap.shard import inputs as merging
    from occystrap.shard.source import MergeSource

    opened: list[Input] = []
    for path in paths:
        inp = await merging.open_input(path, ctx.limits.resolves)
        ctx.stack.push_async_callback(inp.source.aclose)
        opened.append(inp)
    held = await _held(into, ctx.limits.resolves)
    lock, lock_clashes = merging.merged_lock(opened + held)
    # Content that disagrees disagrees in the locks too: those lines only when nothing else does.
    clashes = merging.conflicts(opened + held) or lock_clashes
    if clashes:
        raise merging.conflict_error(clashes)
    names = merging.union(opened)
    source = MergeSource([i.source for i in opened], {str(n.ref): i.source for n, i in names})
    ctx.reporter.emit(RunStarted(tuple(str(n.ref) for n, _ in names), str(into)))
    items = await _resolve(ctx, names)
    blobs = [l.descriptor for l in streamed([i.node for i in items])]
    missing = [d for d in blobs if source.holder(d) is None]
    if missing:
        raise merging.missing_error(missing, opened)
    await ctx.engine.copy(source, local_sink(into, ctx.platform), items)
    if lock is not None:
        write_lock(lock_path(into), lock, {})
    ctx.reporter.emit(Info(_summary(opened, into, len(items), blobs)))


async def _resolve(ctx: Context, names: list[tuple[Name, Input]]) -> list[Item]:
    """Each name's content, read from the input that names it (manifests and configs checked
    against their digests), with the platform that input's index.json gives it."""
    from occystrap.concurrency import gather
    from occystrap.engine import Item
    from occystrap.resolve import Resolver, resolved_event

    async def one(name: Name, inp: Input) -> Item:
        resolver = Resolver(inp.source, ctx.limits.resolves)
        node = await resolver.node(name.ref, await resolver.fetch(name.ref), name.platform)
        ctx.reporter.emit(resolved_event(node))
        return Item(name.ref, node)

    return await gather([lambda n=n, i=i: one(n, i) for n, i in names])  # type: ignore[misc]


async def _held(into: Path, limiter: anyio.CapacityLimiter) -> list[Input]:
    """What a merged directory INTO holds already: its names count in the conflict check."""
    from occystrap.shard.inputs import open_input

    if not (into / "index.json").is_file():
        return []
    held = await open_input(into, limiter)
    await held.source.aclose()
    return [held]


def _summary(inputs: list[Input], into: Path, names: int, blobs: list[Descriptor]) -> str:
    from occystrap.ui.units import human, plural

    def holders(d: Descriptor) -> int:
        return sum(i.source.reader.blob_size(d.digest) == d.size for i in inputs)

    shared = sum(1 for d in blobs if holders(d) > 1)
    return (
        f"merged {plural(len(inputs), 'input')} into {into}: {plural(names, 'name')},"
        f" {plural(len(blobs), 'blob')} ({human(sum(d.size for d in blobs))}) verified and stored once,"
        f" {shared} of them held by more than one input"
    )
