"""A Location opened as a Source or a Sink: the one place that maps what the user typed to
an adapter, with the source's and the destination's credentials kept apart."""

from __future__ import annotations

from typing import Any

from occystrap.commands.common import Context, client_options
from occystrap.locations import Location
from occystrap.model import Node, walk
from occystrap.reference import Reference
from occystrap.sinks.base import Sink
from occystrap.sources.base import HasHead, Source


async def registry_source(ctx: Context, name: str = "registry") -> Source:
    """Registries to pull from, through their mirrors where any are configured."""
    from occystrap.sources.registry import RegistrySource

    client = await ctx.client()
    origin = RegistrySource(client, name)
    if not client.options.mirrors:
        return origin
    from occystrap.sources.mirrored import MirroredSource, mirror_options

    mirrors = RegistrySource(await ctx.client("mirrors", mirror_options(client.options)), "mirrors")
    return MirroredSource(origin, mirrors, client.options.mirrors, ctx.reporter)


async def open_source(ctx: Context, where: Location) -> tuple[Source, Reference]:
    """The source, and the reference it knows the wanted image by."""
    if where.kind == "registry":
        assert where.ref is not None
        return await registry_source(ctx, where.ref.registry), where.ref
    from occystrap.sources.layout import LayoutSource

    assert where.path is not None
    source = LayoutSource(where.path)
    ctx.stack.push_async_callback(source.aclose)
    return source, source.reference_for(where.name)


def side_options(opts: dict[str, Any], side: str) -> dict[str, Any]:
    """Options for one side of a copy: --src-username / --dest-username over --username."""
    out = dict(opts)
    for key in ("username", "password"):
        given = opts.get(f"{side}_{key}")
        if given is not None:
            out[key] = given
    return out


async def registry_sink(
    ctx: Context,
    opts: dict[str, Any],
    destination: str,
    nodes: list[Node],
    source: Source | None = None,
    source_ref: Reference | None = None,
    dry_run: bool = False,
) -> Sink:
    """A registry sink with the destination's own credentials. When the source is the same
    registry, every blob is known to be in the source's repository, so it is mounted."""
    from occystrap.layout.writer import streamed
    from occystrap.sinks.registry import RegistrySink
    from occystrap.sources.mirrored import MirroredSource
    from occystrap.sources.registry import RegistrySource

    client = await ctx.client("destination", client_options(side_options(opts, "dest")))
    known: dict[str, Reference] = {}
    if isinstance(source, (RegistrySource, MirroredSource)) and source_ref is not None:
        for root in nodes:
            for node in walk(root):
                if node.reference.registry == source_ref.registry:
                    for layer in streamed([node]):
                        known[layer.descriptor.digest] = source_ref
    return RegistrySink(
        client, ctx.reporter, destination, known, dry_run=dry_run, chunk_size=ctx.upload_chunk_size
    )


async def destination_first(ctx: Context, opts: dict[str, Any], source: Source, where: Location) -> Source:
    """A registry source planned against what the destination registry already holds (its
    own client and credentials), so copying what is already there spends no pull."""
    if where.kind != "registry" or where.ref is None or not isinstance(source, HasHead):
        return source
    from occystrap.sources.destfirst import DestinationFirst
    from occystrap.sources.registry import RegistrySource

    dest = where.ref
    client = await ctx.client("destination", client_options(side_options(opts, "dest")))

    def place(ref: Reference) -> Reference:
        return Reference(dest.registry, dest.repository, None, ref.digest)

    return DestinationFirst(source, RegistrySource(client, "destination"), place)


async def open_sink(
    ctx: Context,
    opts: dict[str, Any],
    where: Location,
    nodes: list[Node],
    source: Source,
    source_ref: Reference,
    dry_run: bool = False,
) -> Sink:
    if where.kind == "registry":
        return await registry_sink(ctx, opts, str(where), nodes, source, source_ref, dry_run)
    assert where.path is not None
    if where.kind == "archive":
        from occystrap.sinks.tarball import TarballSink

        return TarballSink(where.path, platform=ctx.platform)
    from occystrap.sinks.directory import DirectorySink

    return DirectorySink(where.path, unique_names=True, platform=ctx.platform)
