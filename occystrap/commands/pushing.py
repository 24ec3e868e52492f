"""Putting resolved items into a registry: what push and mirror share. Tags that already
name the same content are left alone (one HEAD each), the rest go through the engine."""

from __future__ import annotations

import click

from occystrap.commands.common import Context
from occystrap.commands.copy import preview_lines
from occystrap.concurrency import gather
from occystrap.digest import Digest
from occystrap.engine import Item
from occystrap.events import ImageCommitted, Info
from occystrap.mirror.changes import Changes
from occystrap.mirror.plan import Plan
from occystrap.model import Node
from occystrap.naming import Placement
from occystrap.registry.client import RegistryClient
from occystrap.sinks.registry import RegistrySink
from occystrap.sources.base import Source


async def holdings(ctx: Context, sink: RegistrySink, nodes: list[Node]) -> list[Digest | None]:
    """What each node's destination tag (or digest) names now: HEADs, at once, bounded."""
    calls = [lambda n=n: sink.holds(n) for n in nodes]
    return await gather(calls, ctx.limits.resolves)


async def changed(ctx: Context, sink: RegistrySink, items: list[Item]) -> list[Item]:
    """The items whose destination tag (or digest) does not already name their content; the
    others are complete there already, and reported so."""
    held = await holdings(ctx, sink, [i.node for i in items])
    out = []
    for item, digest in zip(items, held, strict=True):
        if digest == item.node.manifest.digest:
            ctx.reporter.emit(Info(f"{item.node.reference}: unchanged"))
            ctx.reporter.emit(ImageCommitted(str(item.node.reference), sink.destination))
        else:
            out.append(item)
    return out


def registry_sink(ctx: Context, client: RegistryClient, destination: str, dry_run: bool) -> RegistrySink:
    """The sink for items whose tags were HEADed already (holdings): no second look."""
    return RegistrySink(
        client,
        ctx.reporter,
        destination,
        dry_run=dry_run,
        tags_checked=True,
        chunk_size=ctx.upload_chunk_size,
    )


async def push_items(ctx: Context, source: Source, items: list[Item], destination: str, dry_run: bool) -> str:
    """Move items into the registry their nodes are named for; a line saying what changed."""
    sink = registry_sink(ctx, await ctx.client(), destination, dry_run)
    todo = await changed(ctx, sink, items)
    if dry_run:
        preview = await ctx.engine.preview(sink, todo)
        for line in preview_lines([i.node for i in todo], preview, destination):
            click.echo(line)
        click.echo(f"{len(items) - len(todo)} tag(s) unchanged")
    elif todo:
        await ctx.engine.copy(source, sink, todo)
    return f"{len(todo)} written, {len(items) - len(todo)} unchanged"


async def mirror_into(
    ctx: Context,
    source: Source,
    result: Plan,
    placement: Placement,
    destination: str,
    keep_going: bool,
    dry_run: bool,
) -> Changes:
    """A mirror plan into a registry: tags that already name the same content are skipped
    (so an up-to-date mirror sends no blob and no manifest), the rest copied in one run."""
    from occystrap.mirror import changes, run
    from occystrap.model import with_reference

    client = await ctx.client()

    def sink() -> RegistrySink:
        return registry_sink(ctx, client, destination, dry_run)

    def place(node: Node) -> Node:
        return with_reference(node, placement.place(node.reference))

    held = await holdings(ctx, sink(), [place(p.node) for p in result.items])
    found = changes.changes(
        result, {str(p.node.reference): d for p, d in zip(result.items, held, strict=True) if d}, bundle=False
    )
    todo = [p for p, d in zip(result.items, held, strict=True) if d != p.manifest_digest]
    for p, d in zip(result.items, held, strict=True):
        if d == p.manifest_digest:
            ctx.reporter.emit(ImageCommitted(str(place(p.node).reference), destination))
    if dry_run:
        todo_items = [Item(p.source_ref, place(p.node)) for p in todo]
        preview = await ctx.engine.preview(sink(), todo_items)
        for line in preview_lines([i.node for i in todo_items], preview, destination):
            click.echo(line)
        click.echo(f"{len(result.items) - len(todo)} tag(s) unchanged")
        return found
    part = Plan(todo, result.failures)
    await run.fetch(ctx.engine, source, part, sink, keep_going, whole=False, place=place)
    result.items[:] = [p for p in result.items if p.source not in result.failures]
    return found
