"""Looking inside images: files, search and diff, over any source, layers streamed and verified.

The answer goes to stdout, and only once every layer it depends on has been read and
verified (so a failure leaves stdout empty); progress goes to stderr. Text is for people
(control characters escaped: names come from untrusted layers), `--json` for machines with
the library's documented schemas (occystrap.forensics.files, .search, .diff).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from occystrap.commands.common import Context, registry_options, run, wrap_errors
from occystrap.errors import UsageError
from occystrap.events import ImageCommitted, Info, RunStarted

if TYPE_CHECKING:
    from occystrap.forensics.history import Event, PathRecord, Version
    from occystrap.forensics.layers import LayerRef, OpenLayer
    from occystrap.forensics.remote import Streams
    from occystrap.forensics.search import Match
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


_SHOWN = {i: f"\\x{i:02x}" for i in (*range(32), 127)}
_SCRIPT = {**_SHOWN, ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def shown(text: str) -> str:
    """A name from a layer, safe on a terminal (no escape sequences) and on one line."""
    return text.translate(_SHOWN)


def field(text: str) -> str:
    """A tab-separated field: backslash, tab, newline and control characters escaped."""
    return text.translate(_SCRIPT)


# -- files -------------------------------------------------------------------------------------

_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


def version_text(v: Version) -> str:
    """mode, owner, size (device numbers for a device): as `ls -l` shows them."""
    size = f"{v.device[0]},{v.device[1]}" if v.device else str(v.size)
    mode = stat.filemode(_TYPE_BITS.get(v.file_type, stat.S_IFREG) | v.mode)
    return f"{mode} {v.uid:>5} {v.gid:>5} {size:>10}"


def link_text(v: Version) -> str:
    if v.type == "symlink":
        return f" -> {shown(v.target or '')}"
    if v.type == "hardlink":
        return f" link to {shown(v.target or '')}"
    return ""


def record_line(r: PathRecord) -> str:
    line = f"{version_text(r.version)} L{r.version.layer:<3} {shown(r.path)}{link_text(r.version)}"
    if not r.present:
        gone = next(e for e in reversed(r.history) if e.action == "deleted")
        line += f"  [deleted in L{gone.layer}: {gone.cause}]"
    return line


def event_line(e: Event) -> str:
    if e.version is None:
        return f"    L{e.layer:<3} deleted   by {shown(e.by or '')} ({e.cause})"
    return f"    L{e.layer:<3} {e.action:<9} {version_text(e.version)}{link_text(e.version)}"


def files_text(records: list[PathRecord], history: bool, layer: int | None) -> str:
    lines = []
    for r in records:
        line = record_line(r)
        if layer is not None:  # what that layer did last to the path: Added, Modified, Deleted
            action = [e.action for e in r.history if e.layer == layer][-1]
            line = f"{action[0].upper()} {line}"
        lines.append(line)
        if history:
            lines.extend(event_line(e) for e in r.history)
    return "\n".join(lines)


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
            ctx.reporter.emit(Info("no path matches"))
        if as_json:
            write_json(table.to_json(records))
        else:
            write_stdout(files_text(records, history, chosen))

    run_forensics(opts, body)


# -- search ------------------------------------------------------------------------------------


def match_line(m: Match) -> str:
    if m.kind == "content":
        head = f"L{m.layer:<3} {shown(m.path)}:{m.line}: {shown(m.text or '')}"
    else:
        head = f"L{m.layer:<3} {'deleted' if m.type == 'whiteout' else m.type:<8} {shown(m.path)}"
    if m.present:
        return head
    if m.type == "whiteout":
        return f"{head}  [written again later]"
    return f"{head}  [not in the final filesystem]"


def match_fields(m: Match) -> str:
    """layer, digest, present|absent, type, path [, line, offset, text]: one line, tabs between."""
    out = [str(m.layer), m.digest, "present" if m.present else "absent", m.type, field(m.path)]
    if m.kind == "content":
        out += [str(m.line), str(m.offset), field(m.text or "")]
    return "\t".join(out)


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
            ctx.reporter.emit(Info("no matches"))
        if as_json:
            write_json(result.to_json())
        elif script_friendly:
            write_stdout("\n".join(match_fields(m) for m in result.matches))
        else:
            write_stdout("\n".join(match_line(m) for m in result.matches))

    run_forensics(opts, body, readers=workers)


# -- diff --------------------------------------------------------------------------------------


def diff_text(doc: dict[str, Any], a: Opened, b: Opened) -> str:
    from occystrap.ui.units import human, short

    layers = doc["layers"]
    lines = [
        f"layers: A has {len(a.layers)}, B has {len(b.layers)}; "
        f"the bottom {layers['common_base']} in common, {len(layers['shared'])} shared in all"
    ]
    for side, key in (("A", "only_a"), ("B", "only_b")):
        for r in layers[key]:
            lines.append(f"  only in {side}: L{r['index']:<3} {short(r['diff_id'])}  {human(r['size'])}")
    if doc["config"]:
        lines.append("config:")
        lines.extend(f"  {line}" for line in config_lines(doc["config"]))
    files = doc["files"]
    counts = {c: sum(1 for f in files if f["change"] == c) for c in ("added", "removed", "changed")}
    lines.append(f"files: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed")
    for f in files:
        letter = {"added": "A", "removed": "D", "changed": "M"}[f["change"]]
        detail = (
            f" ({', '.join(change_detail(name, f['a'], f['b']) for name in f['fields'])})"
            if f["fields"]
            else ""
        )
        lines.append(f"  {letter} {shown(f['path'])}{detail}")
    return "\n".join(lines)


def change_detail(name: str, a: dict[str, Any], b: dict[str, Any]) -> str:
    if name == "content":
        return "content"
    key = {"device": "device", "target": "target"}.get(name, name)
    return f"{name} {shown(str(a.get(key)))} -> {shown(str(b.get(key)))}"


def config_lines(config: dict[str, Any]) -> list[str]:
    out = []
    for group in ("env", "labels"):
        changes = config.get(group, {})
        for name, value in changes.get("added", {}).items():
            out.append(f"{group} {shown(name)}: added {shown(json.dumps(value))}")
        for name, value in changes.get("removed", {}).items():
            out.append(f"{group} {shown(name)}: removed {shown(json.dumps(value))}")
        for name, pair in changes.get("changed", {}).items():
            out.append(
                f"{group} {shown(name)}: {shown(json.dumps(pair['a']))} -> {shown(json.dumps(pair['b']))}"
            )
    for key in ("entrypoint", "cmd", "user", "workdir"):
        if key in config:
            out.append(
                f"{key}: {shown(json.dumps(config[key]['a']))} -> {shown(json.dumps(config[key]['b']))}"
            )
    return out


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
        from occystrap.events import BlobSkipped
        from occystrap.forensics.diff import ImageSide, diff_images

        a = await open_image(ctx, where_a, streams)
        b = await open_image(ctx, where_b, streams, announce=False)
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
        write_json(doc) if as_json else write_stdout(diff_text(doc, a, b))

    run_forensics(opts, body)
