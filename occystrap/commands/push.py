"""push BUNDLE|DIR REGISTRY[/PREFIX]: everything a bundle or merged directory holds, into a
registry: the airgapped site's import step. Tags that already name the same content are
left alone (one HEAD each), so a re-run sends nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from occystrap.commands.common import (
    Context,
    progress_options,
    run,
    transfer_options,
    upload_option,
    wrap_errors,
)


def placement_options(func: Any) -> Any:
    func = click.option(
        "--map",
        "maps",
        multiple=True,
        metavar="OLD=NEW",
        help="Rewrite a repository prefix (repeatable): --map team=apps puts team/app at apps/app.",
    )(func)
    return click.option(
        "--keep-host", is_flag=True, help="Keep the source registry host as the first path component."
    )(func)


def dest_credentials(func: Any) -> Any:
    func = click.option(
        "--dest-password", envvar="OCCYSTRAP_DEST_PASSWORD", help="Password for the registry."
    )(func)
    return click.option("--dest-username", envvar="OCCYSTRAP_DEST_USERNAME", help="User for the registry.")(
        func
    )


def destination_options(func: Any) -> Any:
    """What a command writing into a registry (but reading nothing from one) needs to reach it."""
    func = click.option(
        "--retries", type=click.IntRange(0, 100), default=5, show_default=True, help="Retries per request."
    )(func)
    func = click.option(
        "--ca-cert", type=click.Path(dir_okay=False, path_type=Path), help="Extra CA bundle (PEM)."
    )(func)
    func = click.option(
        "--insecure-registry", "insecure", multiple=True, metavar="HOST", help="Allow plain HTTP for HOST."
    )(func)
    return dest_credentials(func)


@click.command("push")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("destination")
@placement_options
@click.option(
    "--dry-run", is_flag=True, help="Say what would be sent (looks at the registry; writes nothing)."
)
@upload_option
@destination_options
@transfer_options
@progress_options
@wrap_errors
def push_cmd(
    source: Path, destination: str, keep_host: bool, maps: tuple[str, ...], dry_run: bool, **opts: Any
) -> None:
    """Push every image and tag SOURCE (a bundle tarball or merged directory) holds into a registry.

    DESTINATION is REGISTRY[/PREFIX] (docker:// optional): `127.0.0.1:5000/team/app:v1`
    from the bundle lands at `REGISTRY/PREFIX/team/app:v1`. Multi-platform indexes,
    artifacts and their digests travel unchanged; blobs the registry has are skipped,
    tags already naming the same content are not rewritten: run it again after an
    interruption and it finishes the job.

    \b
    Examples:
      occystrap push bundle.tar docker://registry.site:5000
      occystrap push --map team=apps mirror/ registry.site:5000/imported
      occystrap push --dry-run bundle.tar registry.site:5000
    """
    from occystrap import locations
    from occystrap.naming import Placement, parse_maps

    registry, prefix = locations.parse_registry_prefix(destination)
    placement = Placement(registry, prefix, keep_host, parse_maps(maps))
    if dry_run:
        opts["quiet"] = True
    opts["username"], opts["password"] = opts.pop("dest_username"), opts.pop("dest_password")

    async def body(ctx: Context) -> None:
        from occystrap.commands.local import resolve_all
        from occystrap.commands.pushing import push_items
        from occystrap.events import Info, RunStarted
        from occystrap.sources.layout import LayoutSource

        layout = LayoutSource(source)
        ctx.stack.push_async_callback(layout.aclose)
        refs = layout.references()
        ctx.reporter.emit(RunStarted(tuple(str(placement.place(r)) for r in refs), destination, upload=True))
        items = await resolve_all(ctx, layout, refs, placement.place)
        sent = await push_items(ctx, layout, items, destination, dry_run)
        if not dry_run:
            ctx.reporter.emit(Info(f"pushed {len(items)} tag(s) from {source} into {destination}: {sent}"))

    run(opts, body)
