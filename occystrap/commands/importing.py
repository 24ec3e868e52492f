"""import BUNDLE DEST: a bundle, full or delta, into the merged directory or registry that holds
its base: the airgapped site's step after verify."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from occystrap.commands.common import (
    Context,
    progress_options,
    run,
    transfer_options,
    upload_option,
    wrap_errors,
)
from occystrap.commands.push import destination_options, placement_options

if TYPE_CHECKING:
    from occystrap.delta.apply import BaseAware
    from occystrap.delta.meta import DeltaMeta
    from occystrap.engine import Item
    from occystrap.naming import Placement
    from occystrap.sources.layout import LayoutSource


@click.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("destination")
@placement_options
@destination_options
@transfer_options
@upload_option
@progress_options
@wrap_errors
def import_cmd(bundle: Path, destination: str, keep_host: bool, maps: tuple[str, ...], **opts: Any) -> None:
    """Apply BUNDLE (a delta bundle, or a full one) to DESTINATION.

    DESTINATION is a merged directory (created for a full bundle) or a registry,
    docker://HOST[:PORT][/PREFIX] (registry:// too), where images land as `push`
    places them. A delta leaves out the layer blobs its base held: every one of
    them must already be at DESTINATION (re-hashed in a directory, HEAD in a
    registry), else one error line names what is missing and nothing is
    written. Then the new content is added and verified as every copy is:
    blobs first, catalog.json (or, in a registry, the tags) last.

    \b
    Examples:
      occystrap import v1.tar site/                       # the first, full bundle
      occystrap import v2.tar site/                       # a delta over v1.tar
      occystrap import v2.tar docker://registry.site:5000/mirror
    """
    from occystrap import locations
    from occystrap.errors import UsageError
    from occystrap.naming import Placement, parse_maps

    placement: Placement | None = None
    if destination.startswith(locations.REGISTRY_SCHEMES):
        registry, prefix = locations.parse_registry_prefix(destination)
        placement = Placement(registry, prefix, keep_host, parse_maps(maps))
        opts["username"], opts["password"] = opts.pop("dest_username"), opts.pop("dest_password")
    elif keep_host or maps:
        raise UsageError(
            "--keep-host and --map place images in a registry DESTINATION (docker://HOST/PREFIX)"
        )
    elif Path(destination).exists() and not Path(destination).is_dir():
        raise UsageError(f"{destination} exists and is not a directory")

    async def body(ctx: Context) -> None:
        from occystrap.commands.local import resolve_all
        from occystrap.delta.apply import read_meta
        from occystrap.events import Info, RunStarted
        from occystrap.sources.layout import LayoutSource
        from occystrap.ui.units import human

        layout = LayoutSource(bundle)
        ctx.stack.push_async_callback(layout.aclose)
        meta = read_meta(layout.reader)
        refs = layout.references()
        place = placement.place if placement is not None else None
        shown = tuple(str(place(r) if place else r) for r in refs)
        ctx.reporter.emit(RunStarted(shown, destination, upload=placement is not None))
        items = await resolve_all(ctx, layout, refs, place)
        if placement is None:
            sink = await _into_directory(ctx, layout, meta, items, Path(destination))
        else:
            sink = await _into_registry(ctx, layout, meta, items, placement, destination)
        added = sum(sink.added.values())
        based = sum(sink.from_base.values())
        reused = f"{len(sink.from_base)} blobs ({human(based)}) reused from the base"
        ctx.reporter.emit(
            Info(
                f"imported {len(items)} tag(s) from {bundle} into {destination}:"
                f" {human(added)} added ({len(sink.added)} blobs), {reused}"
            )
        )

    run(opts, body)


async def _into_directory(
    ctx: Context, layout: LayoutSource, meta: DeltaMeta | None, items: list[Item], root: Path
) -> BaseAware:
    from occystrap.delta.apply import BaseAware, DeltaSource, missing_in_dir, refusal
    from occystrap.layout import dirlock
    from occystrap.sinks.directory import DirectorySink

    base = meta.base_digests if meta is not None else frozenset()
    # Held from the check to the commit: no prune may take the base away in between.
    with dirlock.shared(root):
        if meta is not None and meta.base_blobs:
            missing = await missing_in_dir(root, meta.base_blobs, ctx.limits.resolves)
            if missing:
                raise refusal(meta, missing, layout.name, str(root))
        sink = BaseAware(DirectorySink(root, unique_names=True, platform=ctx.platform), base, checked=True)
        source = DeltaSource(layout, layout.reader, meta, str(root))
        await ctx.engine.copy(source, sink, items)
    return sink


async def _into_registry(
    ctx: Context,
    layout: LayoutSource,
    meta: DeltaMeta | None,
    items: list[Item],
    placement: Placement,
    destination: str,
) -> BaseAware:
    from occystrap import reference
    from occystrap.commands.pushing import changed
    from occystrap.delta.apply import BaseAware, DeltaSource, missing_in_registry, refusal
    from occystrap.model import Descriptor
    from occystrap.registry.upload import Uploader
    from occystrap.sinks.registry import RegistrySink

    client = await ctx.client()
    known: dict[str, reference.Reference] = {}
    base = meta.base_digests if meta is not None else frozenset()
    if meta is not None and meta.base_blobs:
        elsewhere = [placement.place(reference.parse(name)) for name in meta.base_repositories]
        missing, known = await missing_in_registry(
            Uploader(client), items, meta.base_blobs, elsewhere, ctx.limits.resolves
        )
        if missing:
            raise refusal(meta, missing, layout.name, destination)

    async def from_registry(desc: Descriptor, offset: int) -> AsyncIterator[bytes]:
        # A base blob this registry holds in another repository and would not mount: copied across.
        async for chunk in client.blob_chunks(known[desc.digest], desc, offset):
            yield chunk

    inner = RegistrySink(client, ctx.reporter, destination, known=known, chunk_size=ctx.upload_chunk_size)
    sink = BaseAware(inner, base, checked=False)
    todo = await changed(ctx, inner, items)
    if todo:
        source = DeltaSource(layout, layout.reader, meta, destination, from_registry)
        await ctx.engine.copy(source, sink, todo)
    return sink
