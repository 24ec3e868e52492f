"""copy SRC DST: any source to any destination (registry, tarball, directory, OCI layout),
digests preserved: manifests, indexes and configs travel byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from occystrap.commands.common import (
    Context,
    client_options,
    registry_options,
    run,
    upload_option,
    wrap_errors,
)
from occystrap.locations import Location
from occystrap.model import Node
from occystrap.reference import Reference
from occystrap.ui.units import human, plural


def side_credentials(func: Callable[..., Any]) -> Callable[..., Any]:
    for side, what in (("dest", "destination"), ("src", "source")):
        func = click.option(
            f"--{side}-password",
            envvar=f"OCCYSTRAP_{side.upper()}_PASSWORD",
            help=f"Password for the {what}.",
        )(func)
        func = click.option(
            f"--{side}-username", envvar=f"OCCYSTRAP_{side.upper()}_USERNAME", help=f"User for the {what}."
        )(func)
    return func


def destination_ref(dst: Location, src_ref: Reference) -> Reference:
    """The name at the destination: the one given, else the source's tag (or digest) there."""
    if dst.kind == "registry":
        assert dst.ref is not None
        if dst.explicit:
            return dst.ref
        return Reference(
            dst.ref.registry, dst.ref.repository, src_ref.tag, None if src_ref.tag else src_ref.digest
        )
    if dst.name:
        from occystrap.layout.reader import parse_name

        named = parse_name(dst.name)
        if named is not None:
            return named
        return Reference(src_ref.registry, src_ref.repository, dst.name)
    return src_ref


@click.command("copy")
@click.argument("source")
@click.argument("destination")
@click.option(
    "--all", "all_platforms", is_flag=True, help="Copy a whole multi-platform index (every platform)."
)
@click.option(
    "--dry-run", is_flag=True, help="Say what would be sent (looks at the destination; writes nothing)."
)
@upload_option
@side_credentials
@registry_options
@wrap_errors
def copy_cmd(source: str, destination: str, all_platforms: bool, dry_run: bool, **opts: Any) -> None:
    """Copy an image (or with --all a whole index) from SOURCE to DESTINATION.

    Each side is a registry (`docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`, or a bare
    name that is not a local path), `docker-archive:FILE[:REF]`,
    `oci-archive:FILE[:REF]`, `oci:DIR[:REF]`, or an existing file or directory
    (its kind sniffed). Manifests, indexes and configs are copied byte for byte,
    so the destination serves the same digests. Into a registry, blobs it holds
    are skipped, blobs in another repository of it are mounted, the rest are
    streamed through (verified on the way), and the tag is written last.

    \b
    Examples:
      occystrap copy docker://127.0.0.1:5000/team/app:v1 docker://10.0.0.5:5000/team/app:v1
      occystrap copy --all 127.0.0.1:5000/team/app:v1 docker://10.0.0.5:5000/mirror/app
      occystrap copy app.tar docker://10.0.0.5:5000/team/app:v1
      occystrap copy docker://127.0.0.1:5000/team/app:v1 oci:layout-dir
      occystrap copy --dry-run bundle.tar:127.0.0.1:5000/team/app:v1 docker://10.0.0.5:5000/team/app
    """
    from occystrap import locations

    src = locations.parse(source)
    dst = locations.parse_destination(destination)
    if dry_run:
        opts["quiet"] = True

    async def body(ctx: Context) -> None:
        from occystrap.commands.endpoints import destination_first, open_sink, open_source
        from occystrap.engine import Item
        from occystrap.events import Info, RunStarted
        from occystrap.model import with_reference
        from occystrap.platform import ALL
        from occystrap.resolve import resolve, resolved_event

        src_source, src_ref = await open_source(ctx, src)
        planning = await destination_first(ctx, opts, src_source, dst)
        found = await resolve(planning, src_ref, ALL if all_platforms else ctx.platform, ctx.limits.resolves)
        node = with_reference(found.nodes[0], destination_ref(dst, src_ref))
        sink = await open_sink(ctx, opts, dst, [node], src_source, src_ref, dry_run)
        if found.skipped and not all_platforms:
            ctx.reporter.emit(
                Info(f"{src_ref}: copying {node.platform or 'one platform'} of the index; --all copies all")
            )
        if dry_run:
            preview = await ctx.engine.preview(sink, [Item(src_ref, node)])
            for line in preview_lines([node], preview, str(dst)):
                click.echo(line)
            return
        ctx.reporter.emit(RunStarted((str(node.reference),), str(dst), upload=dst.kind == "registry"))
        ctx.reporter.emit(resolved_event(node))
        await ctx.engine.copy(planning, sink, [Item(src_ref, node)])

    from occystrap.commands.endpoints import side_options

    run(opts, body, client_options(side_options(opts, "src")))


def preview_lines(nodes: list[Node], preview: Any, destination: str) -> list[str]:
    """A dry run's answer: what would be sent, mounted or skipped, and what would be written."""
    from occystrap.model import walk

    reasons: dict[str, int] = {}
    for _, reason in preview.skipped.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) or "none skipped"
    sending = f"{plural(len(preview.move), 'blob')} ({human(preview.move_bytes)})"
    lines = [f"would send {sending} to {destination}; {skipped}"]
    lines += [f"  send     {l.descriptor.digest} ({human(l.descriptor.size)})" for l in preview.move]
    lines += [f"  {why:<8} {digest}" for digest, (_, why) in sorted(preview.skipped.items())]
    for node in nodes:
        count = plural(len(walk(node)), "manifest")
        tag = f", then tag {node.reference.tag}" if node.reference.tag else ""
        lines.append(f"would write {count} for {node.reference}{tag}")
    return lines
