"""fetch-to-tarfile and fetch-to-extracted: one image from a registry to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from occystrap.commands.common import Context, parse_ref, registry_options, run, wrap_errors
from occystrap.errors import UsageError
from occystrap.reference import Reference
from occystrap.sinks.base import Sink


async def fetch_one(ctx: Context, ref: Reference, sink: Sink, destination: str) -> None:
    """Resolve one image for the run's platform and copy it from its registry into sink."""
    from occystrap.commands.endpoints import registry_source
    from occystrap.engine import Item
    from occystrap.events import RunStarted
    from occystrap.resolve import require_image, resolve, resolved_event

    ctx.reporter.emit(RunStarted((str(ref),), destination))
    source = await registry_source(ctx, ref.registry)
    found = await resolve(source, ref, ctx.platform, ctx.limits.resolves)
    image = require_image(found.nodes[0])
    ctx.reporter.emit(resolved_event(image))
    await ctx.engine.copy(source, sink, [Item(ref, image)])


@click.command("fetch-to-tarfile")
@click.argument("image")
@click.argument("tag")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--uncompressed-layers",
    is_flag=True,
    help="Store plain tar layers (for old tooling) instead of as served.",
)
@registry_options
@wrap_errors
def fetch_to_tarfile(image: str, tag: str, output: Path, uncompressed_layers: bool, **opts: Any) -> None:
    """Fetch IMAGE:TAG into OUTPUT, a tarball `docker load` and `podman load` accept.

    TAG may be a digest (sha256:...). The tarball is Docker 25's `docker save`
    layout: an OCI image layout that is also docker-loadable. It appears only
    once complete and verified.

    \b
    Examples:
      occystrap fetch-to-tarfile library/busybox latest busybox.tar
      occystrap fetch-to-tarfile --platform linux/arm64 busybox latest busybox-arm64.tar
      occystrap fetch-to-tarfile --uncompressed-layers 127.0.0.1:5000/team/app v1 app.tar
    """
    ref = parse_ref(image, tag)
    if output.is_dir():
        raise UsageError(f"{output} is a directory")

    async def body(ctx: Context) -> None:
        from occystrap.sinks.tarball import TarballSink

        await fetch_one(ctx, ref, TarballSink(output, uncompressed_layers, ctx.platform), str(output))

    run(opts, body)


def expand_options(func: Any) -> Any:
    func = click.option(
        "--expand",
        is_flag=True,
        help="Also unpack each layer (whiteouts visible) into layers/<hex>/ and build the final "
        "filesystem, whiteouts applied, in rootfs/<manifest hex>/.",
    )(func)
    return click.option(
        "--use-unique-names",
        is_flag=True,
        help="Share DIR between many images: blobs stored once, a uniquely named manifest per image, "
        "catalog.json mapping image -> tag -> manifest.",
    )(func)


def check_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a directory")


@click.command("fetch-to-extracted")
@click.argument("image")
@click.argument("tag")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@expand_options
@registry_options
@wrap_errors
def fetch_to_extracted(
    image: str, tag: str, directory: Path, use_unique_names: bool, expand: bool, **opts: Any
) -> None:
    """Fetch IMAGE:TAG into DIRECTORY as files: the tarball's layout, unpacked.

    `cd DIRECTORY; tar -cf ../x.tar *` gives a tarball docker/podman load.
    Blobs already in DIRECTORY (verified by digest) are not downloaded again.

    \b
    Examples:
      occystrap fetch-to-extracted busybox latest busybox.d
      occystrap fetch-to-extracted --use-unique-names busybox latest mirror/
      occystrap fetch-to-extracted --use-unique-names --expand 127.0.0.1:5000/team/app v1 mirror/
    """
    ref = parse_ref(image, tag)
    check_directory(directory)

    async def body(ctx: Context) -> None:
        from occystrap.events import Info
        from occystrap.sinks.directory import DirectorySink

        def note(message: str) -> None:
            ctx.reporter.emit(Info(message))

        sink = DirectorySink(directory, use_unique_names, expand, note=note, platform=ctx.platform)
        await fetch_one(ctx, ref, sink, str(directory))

    run(opts, body)
