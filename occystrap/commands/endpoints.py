"""A Location opened as a Source (and, for copies, as a Sink): the one place that maps
what the user typed to an adapter."""

from __future__ import annotations

from occystrap.commands.common import Context
from occystrap.locations import Location
from occystrap.reference import Reference
from occystrap.sources.base import Source


async def open_source(ctx: Context, where: Location) -> tuple[Source, Reference]:
    """The source, and the reference it knows the wanted image by."""
    if where.kind == "registry":
        from occystrap.sources.registry import RegistrySource

        assert where.ref is not None
        return RegistrySource(await ctx.client(), where.ref.registry), where.ref
    from occystrap.sources.layout import LayoutSource

    assert where.path is not None
    source = LayoutSource(where.path)
    ctx.stack.push_async_callback(source.aclose)
    return source, source.reference_for(where.name)
