"""mirror --shard I/N: the options, their checks, and one shard's run.

Every shard resolves the whole plan (manifests and configs: small), then moves only its share
of the blobs (occystrap/shard/split.py). Into a merged directory a shard writes every manifest,
config and catalog.json, its own blobs and occystrap-shard.json; `occystrap merge` combines the
shards' directories. Into a registry a shard pushes its blobs and nothing else; a normal mirror
run of the same spec afterwards finds them all by HEAD and writes the manifests and tags.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from occystrap.errors import UsageError
from occystrap.shard.split import Shard

if TYPE_CHECKING:
    from occystrap.commands.common import Context
    from occystrap.events import Event, Reporter
    from occystrap.mirror.changes import Changes
    from occystrap.mirror.plan import Plan
    from occystrap.model import Descriptor
    from occystrap.naming import Placement
    from occystrap.shard.marker import ShardMeta
    from occystrap.sources.base import Source

F = TypeVar("F", bound=Callable[..., Any])

# mirror's options that a shard cannot take, and why (one error line each).
REFUSED = {
    "since": "--since makes a delta bundle; a shard writes a merged directory (merge them into a bundle)",
    "prune": "--prune removes what a run did not mirror; prune the merged result instead",
    "keep_going": "--keep-going: every shard must resolve the same whole plan, so a shard fails whole",
    "as_json": "--json: a shard's dry run prints lines",
}


def shard_options(func: F) -> F:
    """--shard I/N | auto/N, --shard-index/--shard-count; the command gets `shard: Shard | None`."""

    @functools.wraps(func)
    def inner(
        *args: Any, shard_text: str | None, shard_index: int | None, shard_count: int | None, **kwargs: Any
    ) -> Any:
        from occystrap.shard import split

        shard = split.parse(shard_text, shard_index, shard_count)
        if shard is not None:
            check_options(shard, kwargs)
        return func(*args, shard=shard, **kwargs)

    options = [
        click.option(
            "--shard",
            "shard_text",
            metavar="I/N",
            help="Fetch only shard I of N (from 1) of the plan's blobs; auto/N takes I from"
            " JOB_COMPLETION_INDEX + 1 (Kubernetes Indexed Jobs). Combine with `occystrap merge`.",
        ),
        click.option(
            "--shard-index", type=int, metavar="I", help="The same as --shard I/N, with --shard-count."
        ),
        click.option(
            "--shard-count", type=int, metavar="N", help="The number of shards, with --shard-index."
        ),
    ]
    wrapped: Any = inner
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]


def check_options(shard: Shard, kwargs: dict[str, Any]) -> None:
    """Contradictions are one error line before anything runs; so is a DEST another shard wrote."""
    from occystrap import locations
    from occystrap.mirror.lockfile import is_tarball

    for name, why in REFUSED.items():
        if kwargs.get(name):
            raise UsageError(f"--shard {shard}: {why}")
    dest_text = kwargs["paths"][-1]
    if dest_text.startswith(locations.REGISTRY_SCHEMES):
        return
    dest = Path(dest_text)
    if is_tarball(dest):
        raise UsageError(
            f"--shard {shard} writes a merged directory (or into a registry), not {dest.name}:"
            " `occystrap merge SHARD_DIR... BUNDLE.tar` makes the bundle"
        )
    held = _held_marker(dest)
    if held is not None and held.shard != shard:
        raise UsageError(f"{dest} holds {held.describe()}, not shard {shard}: give each shard its own DEST")


def _held_marker(dest: Path) -> ShardMeta | None:
    from occystrap.shard.marker import MARKER_NAME, parse

    try:
        data = (dest / MARKER_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {dest / MARKER_NAME}: {exc}") from None
    return parse(data, str(dest / MARKER_NAME))


async def mirror_shard(
    ctx: Context,
    source: Source,
    result: Plan,
    shard: Shard,
    dest_text: str,
    placement: Placement | None,
    dry_run: bool,
) -> Changes:
    """One shard of the plan into DEST: what mirror does, for this shard's blobs only."""
    from occystrap import digest as digests
    from occystrap.events import Info
    from occystrap.layout.writer import streamed
    from occystrap.mirror import changes, lockfile
    from occystrap.shard import split
    from occystrap.shard.marker import ShardMeta

    shares = split.split([l.descriptor for l in streamed(result.nodes)], shard.count)
    own = shares[shard.index - 1]
    others = [d for i, s in enumerate(shares) if i != shard.index - 1 for d in s]
    meta = ShardMeta.of(shard, digests.of(lockfile.lock_bytes(result.lock())), own, others)
    if dry_run:
        for line in dry_run_lines(meta, shares):
            click.echo(line)
        return changes.Changes([], {})
    if placement is None:
        found = await _into_directory(ctx, source, result, meta, Path(dest_text))
    else:
        found = await _into_registry(ctx, source, result, meta, placement, dest_text)
    ctx.reporter.emit(Info(done_line(meta, registry=placement is not None)))
    return found


async def _into_directory(ctx: Context, source: Source, result: Plan, meta: ShardMeta, dest: Path) -> Changes:
    from occystrap.mirror import changes, run
    from occystrap.shard.marker import MARKER_NAME
    from occystrap.shard.sink import ShardSink
    from occystrap.sinks.base import write_atomic
    from occystrap.sinks.directory import DirectorySink

    found = changes.changes(result, changes.held_manifests(dest), bundle=False)
    own = frozenset(b.digest for b in meta.blobs)

    def marker() -> None:
        write_atomic(dest / MARKER_NAME, meta.to_bytes())

    def make_sink() -> ShardSink:
        return ShardSink(DirectorySink(dest, unique_names=True, platform=ctx.platform), own, first=marker)

    await run.fetch(ctx.engine, source, result, make_sink)
    return found


async def _into_registry(
    ctx: Context, source: Source, result: Plan, meta: ShardMeta, placement: Placement, destination: str
) -> Changes:
    """Only this shard's blobs, into every repository that needs them; no manifest, no tag.
    Images whose tag already names the same content are complete there: nothing to push."""
    from occystrap.commands.pushing import holdings
    from occystrap.engine import Engine
    from occystrap.mirror import changes, run
    from occystrap.mirror.plan import Plan
    from occystrap.model import Node, with_reference
    from occystrap.shard.sink import ShardSink
    from occystrap.sinks.registry import RegistrySink

    client = await ctx.client()
    own = frozenset(b.digest for b in meta.blobs)

    def place(node: Node) -> Node:
        return with_reference(node, placement.place(node.reference))

    def make_sink() -> ShardSink:
        inner = RegistrySink(client, ctx.reporter, destination, tags_checked=True)
        return ShardSink(inner, own, commits=False)

    probe = RegistrySink(client, ctx.reporter, destination, tags_checked=True)
    held = await holdings(ctx, probe, [place(p.node) for p in result.items])
    todo = [p for p, d in zip(result.items, held, strict=True) if d != p.manifest_digest]
    # Its own engine, whose reporter is not told of commits: no image is written here.
    engine = Engine(BlobsOnly(ctx.reporter), ctx.limits, ctx.options.retries)
    await run.fetch(engine, source, Plan(todo, result.failures), make_sink, place=place)
    return changes.Changes([], {})


class BlobsOnly:
    """A reporter that passes on everything but the commit's events (a registry shard has none)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def emit(self, event: Event) -> None:
        from occystrap.events import CommitStarted, ImageCommitted

        if not isinstance(event, (CommitStarted, ImageCommitted)):
            self.reporter.emit(event)


def _sum(blobs: list[Descriptor]) -> int:
    return sum(d.size for d in blobs)


def dry_run_lines(meta: ShardMeta, shares: list[list[Descriptor]]) -> list[str]:
    from occystrap.ui.units import human, plural

    total = sum(_sum(s) for s in shares)
    count = sum(len(s) for s in shares)
    own = shares[meta.shard.index - 1]
    lines = [
        f"{meta.describe()}: would fetch {plural(len(own), 'blob')}, {human(_sum(own))} ({_sum(own)} bytes),"
        f" of the plan's {count} unique blobs, {human(total)} ({total} bytes)"
    ]
    for i, share in enumerate(shares, 1):
        this = "  <- this shard" if i == meta.shard.index else ""
        lines.append(
            f"  shard {i}/{meta.shard.count}: {plural(len(share), 'blob')}, {human(_sum(share))}{this}"
        )
    return lines


def done_line(meta: ShardMeta, registry: bool) -> str:
    from occystrap.ui.units import human

    mine, theirs = sum(b.size for b in meta.blobs), sum(b.size for b in meta.elsewhere)
    head = (
        f"{meta.describe()}: its {len(meta.blobs)} of the plan's {len(meta.blobs) + len(meta.elsewhere)}"
        f" blobs, {human(mine)} of {human(mine + theirs)}"
    )
    if registry:
        return (
            f"{head}; no manifest or tag written: once every shard is done, `occystrap mirror` of the same"
            " spec without --shard finds the blobs by HEAD and writes them"
        )
    return f"{head}; the other shards hold the rest: `occystrap merge` all {meta.shard.count} outputs"
