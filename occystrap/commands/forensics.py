"""Looking inside images: files, search and diff, over any source, layers streamed and verified.

The answer goes to stdout, and only once every layer it depends on has been read and
verified (so a failure leaves stdout empty); progress goes to stderr. Text is for people
(control characters escaped: names come from untrusted layers), `--json` for machines with
the library's documented schemas (occystrap.forensics.files, .search, .diff).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from occystrap.commands.common import Context, registry_options, run, wrap_errors
from occystrap.commands.forensics_text import diff_text, files_text, match_fields, match_line
from occystrap.errors import UsageError

if TYPE_CHECKING:
    from occystrap.forensics.layers import LayerRef, OpenLayer
    from occystrap.forensics.remote import Streams
    from occystrap.locations import Location
    from occystrap.model import Image


# -- shared by every forensics command ----------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """An image ready for the forensics library: its layers and how to read them."""

    image: Image
    layers: list[LayerRef]
    open_layer: OpenLayer


async def open_image(ctx: Context, where: Location, streams: Streams, announce: bool = True) -> Opened:
    """Resolve the image `where` names (for the run's platform); with `announce`, tell the
    display that all its layers will be read."""
    from occystrap.commands.endpoints import open_source
    from occystrap.forensics.layers import layer_refs
    from occystrap.resolve import require_image, resolve, resolved_event

    source, ref = await open_source(ctx, where)
    from occystrap.events import RunStarted

    ctx.reporter.emit(RunStarted((str(ref),)))
    found = await resolve(source, ref, ctx.platform, ctx.engine.limits.resolves)
    image = require_image(found.nodes[0])
    ctx.reporter.emit(resolved_event(image))
    if announce:
        streams.queue(image)
    return Opened(image, layer_refs(image), streams.opener(source, ref, image))


def run_forensics(
    opts: dict[str, Any], body: Callable[[Context, Streams], Awaitable[None]], readers: int = 1
) -> None:
    """`run`, with layer streams open for the body (`readers`: layers it reads at once)."""

    async def main(ctx: Context) -> None:
        from occystrap.forensics.remote import layer_streams

        async with layer_streams(ctx.reporter, ctx.engine.limits, readers) as streams:
            await body(ctx, streams)

    run(opts, main)


def done(ctx: Context, image: Image, where: str) -> None:
    from occystrap.events import ImageCommitted

    ctx.reporter.emit(ImageCommitted(str(image.reference), where))


def write_stdout(text: str) -> None:
    """The answer on stdout. A reader that went away (`| head`) has what it wanted: the rest
    is dropped quietly, and stdout pointed at /dev/null so the exit flush cannot fail."""
    if not text:
        return
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def write_json(doc: Any) -> None:
    write_stdout(json.dumps(doc))


# -- files -------------------------------------------------------------------------------------


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "/" or path == p or path.startswith(p + "/") for p in prefixes)


def layer_index(n: int, count: int) -> int:
    index = n + count if n < 0 else n
    if not 0 <= index < count:
        raise UsageError(f"--layer {n}: the image has {count} layers (0..{count - 1}, or -1 for the top)")
    return index


@click.command("files")
@click.argument("image")
@click.argument("paths", nargs=-1)
@click.option("--history", is_flag=True, help="Under each path, what every layer did to it.")
@click.option(
    "--layer",
    type=int,
    metavar="N",
    help="Only paths layer N added (A), modified (M) or deleted (D); 0 is the bottom, -1 the top.",
)
@click.option("--deleted", is_flag=True, help="Only paths some layer deleted.")
@click.option("--shadowed", is_flag=True, help="Only paths some layer overwrote.")
@click.option("--sha256", "digests", is_flag=True, help="Also hash every file's contents (shown in --json).")
@click.option(
    "--json", "as_json", is_flag=True, help="The records as JSON (see README: Looking inside images)."
)
@registry_options
@wrap_errors
def files_cmd(
    image: str,
    paths: tuple[str, ...],
    history: bool,
    layer: int | None,
    deleted: bool,
    shadowed: bool,
    digests: bool,
    as_json: bool,
    **opts: Any,
) -> None:
    """List every path the layers of IMAGE[:TAG] wrote, with the layer that wrote it.

    One line per path: mode, owner, size, the layer (L0 is the bottom) that
    wrote the version shown, and the path; one the final filesystem no longer
    holds is marked with the layer that deleted it. PATHS keep only those paths
    and what is below them; filters combine. Layers are streamed and verified,
    never stored.

    IMAGE is a registry reference (HOST[:PORT]/REPO[:TAG|@DIGEST], docker://...,
    a bare name) or a local layout (oci:DIR[:REF], docker-archive:FILE[:REF],
    oci-archive:FILE[:REF], or a path).

    \b
    Examples:
      occystrap files busybox
      occystrap files --history 127.0.0.1:5000/team/app:v3 /usr/bin/x   # who put it there
      occystrap files --layer -1 oci:layout:v3                           # what the top layer did
      occystrap files --deleted --json app.tar | jq -r '.[].path'
    """
    from occystrap import locations

    where = locations.parse(image)
    prefixes = tuple("/" + p.strip("/") if p.strip("/") else "/" for p in paths)

    async def body(ctx: Context, streams: Streams) -> None:
        from occystrap.forensics.files import file_table

        opened = await open_image(ctx, where, streams)
        chosen = None if layer is None else layer_index(layer, len(opened.layers))
        table = await streams.call(
            lambda: file_table(opened.layers, opened.open_layer, content_digests=digests)
        )
        records = table.select(layer=chosen, deleted=deleted, shadowed=shadowed)
        if prefixes:
            records = [r for r in records if under(r.path, prefixes)]
        done(ctx, opened.image, "stdout")
        if not records:
            from occystrap.events import Info

            ctx.reporter.emit(Info("no path matches"))
        if as_json:
            write_json(table.to_json(records))
        else:
            write_stdout(files_text(records, history, chosen))

    run_forensics(opts, body)


# -- search ------------------------------------------------------------------------------------


@click.command("search")
@click.argument("image")
@click.argument("pattern", required=False)
@click.option("--regex", is_flag=True, help="PATTERN is a regular expression (re.search on the path).")
@click.option(
    "--content", metavar="REGEX", help="Search regular files' contents for REGEX (bytes, Python syntax)."
)
@click.option(
    "--binary", is_flag=True, help="With --content, search binary files too (a NUL in the first 8 KiB)."
)
@click.option(
    "--script-friendly",
    is_flag=True,
    help="One tab-separated line per match: layer, layer digest, present|absent, type, path "
    "[, line, byte offset, text]; tabs, newlines and backslashes escaped.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="The matches as JSON (see README: Looking inside images)."
)
@registry_options
@wrap_errors
def search_cmd(
    image: str,
    pattern: str | None,
    regex: bool,
    content: str | None,
    binary: bool,
    script_friendly: bool,
    as_json: bool,
    **opts: Any,
) -> None:
    """Find paths (PATTERN) or file contents (--content) in every layer of IMAGE[:TAG].

    Deleted and overwritten versions are found too, each marked when the final
    filesystem no longer holds it. PATTERN is a glob matched against the end of
    each absolute path (`/usr/bin/x`, `*.conf`, `busybox`; `*` also crosses `/`),
    or with --regex a regular expression. With --content, PATTERN (if given)
    limits which files are searched. Layers are read in parallel (-j).

    IMAGE is a registry reference or a local layout, as for `occystrap files`.

    \b
    Examples:
      occystrap search 127.0.0.1:5000/team/app:v3 /usr/bin/x      # every layer that had it
      occystrap search --regex busybox '^/etc/.*\\.conf$'
      occystrap search --content 'BEGIN (RSA|EC) PRIVATE KEY' app.tar
      occystrap search --script-friendly --content password oci:layout '*.env' | cut -f5,6
    """
    from occystrap import locations
    from occystrap.forensics.search import Query

    if as_json and script_friendly:
        raise UsageError("--json and --script-friendly each choose the output; pick one")
    where = locations.parse(image)
    query = Query(
        path_glob=pattern if pattern is not None and not regex else None,
        path_regex=pattern if regex else None,
        content=content,
        include_binary=binary,
    )
    if regex and pattern is None:
        raise UsageError("--regex needs a PATTERN")
    query.compiled()  # a bad pattern fails here, before anything is fetched
    workers = opts.get("parallel") or 1

    async def body(ctx: Context, streams: Streams) -> None:
        from occystrap.forensics.search import search

        opened = await open_image(ctx, where, streams)
        result = await streams.call(lambda: search(opened.layers, opened.open_layer, query, workers=workers))
        done(ctx, opened.image, "stdout")
        if not result.matches:
            from occystrap.events import Info

            ctx.reporter.emit(Info("no matches"))
        if as_json:
            write_json(result.to_json())
        elif script_friendly:
            write_stdout("\n".join(match_fields(m) for m in result.matches))
        else:
            write_stdout("\n".join(match_line(m) for m in result.matches))

    run_forensics(opts, body, readers=workers)


# -- diff --------------------------------------------------------------------------------------


@click.command("diff")
@click.argument("image_a", metavar="A")
@click.argument("image_b", metavar="B")
@click.option(
    "--json", "as_json", is_flag=True, help="The difference as JSON (see README: Looking inside images)."
)
@registry_options
@wrap_errors
def diff_cmd(image_a: str, image_b: str, as_json: bool, **opts: Any) -> None:
    """Show what changed from image A to image B: files, layers and config.

    Files are compared by type, content (sha256), mode, owner, link target and
    device numbers, not mtime: A = added in B, D = removed, M = changed (what
    and how). Layers both images share are read once. Each of A and B is a
    registry reference or a local layout, as for `occystrap files`.

    \b
    Examples:
      occystrap diff 127.0.0.1:5000/team/app:v2 127.0.0.1:5000/team/app:v3
      occystrap diff app-v2.tar docker://127.0.0.1:5000/team/app:v3
      occystrap diff --json oci:layout:v2 oci:layout:v3 | jq '.files[] | select(.change == "added") | .path'
    """
    from occystrap import locations

    where_a, where_b = locations.parse(image_a), locations.parse(image_b)

    async def body(ctx: Context, streams: Streams) -> None:
        from occystrap.concurrency import gather
        from occystrap.events import BlobSkipped
        from occystrap.forensics.diff import ImageSide, diff_images

        a, b = await gather(
            [lambda: open_image(ctx, where_a, streams), lambda: open_image(ctx, where_b, streams, False)]
        )
        in_a = {r.diff_id for r in a.layers}
        streams.queue(b.image, [r for r in b.layers if r.diff_id not in in_a])
        for r in b.layers:
            if r.diff_id in in_a:
                ctx.reporter.emit(BlobSkipped(r.digest, r.size, str(b.image.reference), "shared"))
        result = await streams.call(
            lambda: diff_images(
                ImageSide(a.image.config_bytes, a.layers, a.open_layer),
                ImageSide(b.image.config_bytes, b.layers, b.open_layer),
            )
        )
        done(ctx, a.image, "stdout")
        done(ctx, b.image, "stdout")
        doc = result.to_json()
        write_json(doc) if as_json else write_stdout(diff_text(doc, len(a.layers), len(b.layers)))

    run_forensics(opts, body)
