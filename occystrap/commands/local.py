"""Commands over local layouts: recreate-image (merged dir → tarball) and tarfile-to-extracted.

Both are copies like any other: a LayoutSource, a sink, the engine (parallel, verified,
resumable, with progress).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from occystrap.engine import Item

from occystrap.commands.common import Context, parse_ref, progress_options, run, transfer_options, wrap_errors
from occystrap.commands.fetch import check_directory, expand_options
from occystrap.concurrency import gather
from occystrap.platform import ALL
from occystrap.reference import Reference
from occystrap.sinks.base import Sink
from occystrap.sources.base import Source


async def resolve_all(
    ctx: Context,
    source: Source,
    refs: list[Reference],
    rename: Callable[[Reference], Reference] | None = None,
) -> list[Item]:
    """Each name resolved with its index kept whole, announced, named for the destination."""
    from occystrap.engine import Item
    from occystrap.model import with_reference
    from occystrap.resolve import resolve, resolved_event

    async def one(ref: Reference) -> Item:
        node = (await resolve(source, ref, ALL, ctx.limits.resolves)).nodes[0]
        if rename is not None:
            node = with_reference(node, rename(ref))
        ctx.reporter.emit(resolved_event(node))
        return Item(ref, node)

    return await gather([lambda r=r: one(r) for r in refs])  # type: ignore[misc]


async def copy_local(ctx: Context, path: Path, wanted: list[Reference] | None, sink: Sink) -> list[str]:
    """Copy what the layout at path holds (wanted: these names; None: everything), indexes whole."""
    from occystrap.events import RunStarted
    from occystrap.sources.layout import LayoutSource

    source = LayoutSource(path)
    try:
        refs = [source.reference_for(r) for r in wanted] if wanted is not None else source.references()
        ctx.reporter.emit(RunStarted(tuple(str(r) for r in refs), sink.destination))
        await ctx.engine.copy(source, sink, await resolve_all(ctx, source, refs))
    finally:
        await source.aclose()
    return [str(r) for r in refs]


@click.command("recreate-image")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("image")
@click.argument("tag")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@transfer_options
@progress_options
@wrap_errors
def recreate_image(directory: Path, image: str, tag: str, output: Path, **opts: Any) -> None:
    """Write one image from a merged DIRECTORY back out as a loadable tarball.

    Every blob is re-verified on the way. A tag that holds a multi-platform index
    comes out whole (the index and every platform; docker load tags the one for
    --platform).

    \b
    Example:
      occystrap recreate-image mirror/ busybox latest busybox.tar
    """
    ref = parse_ref(image, tag)

    async def body(ctx: Context) -> None:
        from occystrap.events import Info
        from occystrap.sinks.tarball import TarballSink

        await copy_local(ctx, directory, [ref], TarballSink(output, platform=ctx.platform))
        ctx.reporter.emit(Info(f"wrote {ref} to {output}"))

    run(opts, body)


@click.command("tarfile-to-extracted")
@click.argument("tarball", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@expand_options
@transfer_options
@progress_options
@wrap_errors
def tarfile_to_extracted(
    tarball: Path, directory: Path, use_unique_names: bool, expand: bool, **opts: Any
) -> None:
    """Import a `docker save` tarball (classic, Docker 25 / OCI form, or a bundle) into DIRECTORY.

    Every blob is verified on the way; an interrupted import resumes when run again.

    \b
    Examples:
      occystrap tarfile-to-extracted busybox.tar busybox.d
      occystrap tarfile-to-extracted --use-unique-names --expand saved.tar mirror/
    """
    check_directory(directory)

    async def body(ctx: Context) -> None:
        from occystrap.events import Info
        from occystrap.sinks.directory import DirectorySink

        def note(message: str) -> None:
            ctx.reporter.emit(Info(message))

        sink = DirectorySink(directory, use_unique_names, expand, note=note, platform=ctx.platform)
        for name in await copy_local(ctx, tarball, None, sink):
            ctx.reporter.emit(Info(f"imported {name}"))

    run(opts, body)
