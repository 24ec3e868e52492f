"""Commands for many images at once (mirror) and for looking before fetching (list-tags, inspect)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from occystrap.cli import main, parse_ref, registry_options, run, wrap_errors
from occystrap.errors import ManifestError, PlatformNotFoundError, UsageError
from occystrap.events import Info, RunStarted, Warning_
from occystrap.model import (
    INDEX_TYPES,
    Descriptor,
    Platform,
    build_image,
    choose_platform,
    load_json,
    parse_index,
    parse_manifest,
)
from occystrap.tuning import DEFAULT_VERIFY_WORKERS

if TYPE_CHECKING:
    # Imported where used, so `verify` and `--help` start without aiohttp.
    from occystrap import mirror, spec
    from occystrap.engine import Engine
    from occystrap.registry import RegistryClient


@main.command("mirror")
@click.argument("paths", nargs=-1, required=True, metavar="[SPEC.yaml] DEST")
@click.option(
    "--image",
    "image_refs",
    multiple=True,
    metavar="REF[:TAG]",
    help="Mirror this image too (repeatable); alone, no spec file is needed.",
)
@click.option(
    "--dry-run", is_flag=True, help="Resolve everything, print what would be fetched, write nothing."
)
@click.option(
    "--locked",
    is_flag=True,
    help="Fetch exactly the digests the lock file names (DEST/occystrap.lock, or DEST.lock for a .tar).",
)
@click.option("--keep-going", is_flag=True, help="Mirror the other images when one fails; exit non-zero.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as one JSON document.")
@registry_options
@wrap_errors
def mirror_cmd(
    paths: tuple[str, ...],
    image_refs: tuple[str, ...],
    dry_run: bool,
    locked: bool,
    keep_going: bool,
    as_json: bool,
    **opts: Any,
) -> None:
    """Mirror many images, tags and platforms into DEST in one run.

    DEST ending in .tar is one bundle tarball (docker/podman load it, every tag
    included); anything else is a merged directory: blobs stored once,
    catalog.json, and a multi-image OCI layout. Blobs shared between images are
    fetched once; blobs DEST already holds are not fetched again. A lock file
    ({image: {tag: {platform: digest}}}) is written beside the result. Each
    image's tags are reported as new, updated or unchanged in DEST.

    \b
    SPEC.yaml:
      images:
        - name: 127.0.0.1:5000/team/app
          tags: [v1, v2]            # explicit tags
          include: ['^v1\\.']        # regexes over the registry's tag list
          exclude: ['-rc']
          latest: 3                 # newest N by semver of the filtered tags
          digests: ['sha256:...']   # pinned
          platforms: all            # or [linux/amd64, linux/arm64]

    \b
    Examples:
      occystrap mirror images.yaml mirror/
      occystrap mirror images.yaml bundle.tar
      occystrap mirror --image busybox:1.36 --image alpine:3.20 mirror/
      occystrap mirror --dry-run images.yaml mirror/
      occystrap mirror --dry-run --json images.yaml mirror/ | jq .fetch
      occystrap mirror --locked mirror/          # replay mirror/occystrap.lock
    """
    if len(paths) > 2:
        raise UsageError("expected [SPEC.yaml] DEST")
    dest = Path(paths[-1])
    spec_path = Path(paths[0]) if len(paths) == 2 else None
    from occystrap import mirror, spec

    lock_file = mirror.lock_path(dest)
    lock: mirror.Lock = {}
    wanted: spec.MirrorSpec | None = None
    if locked:
        if spec_path or image_refs:
            raise UsageError("--locked replays the lock file; give only DEST")
        lock = mirror.read_lock(lock_file)
    else:
        if spec_path is None and not image_refs:
            raise UsageError("give a SPEC.yaml, --image REF, or --locked")
        parts: list[spec.ImageSpec] = []
        registries: dict[str, spec.RegistrySettings] = {}
        if spec_path is not None:
            loaded = spec.load(spec_path)
            parts.extend(loaded.images)
            registries = loaded.registries
        parts.extend(spec.from_refs(image_refs).images)
        wanted = spec.MirrorSpec(tuple(parts), registries)
    if as_json and not dry_run:
        raise UsageError("--json prints the plan of a --dry-run; add --dry-run")
    if dry_run:
        opts["quiet"] = True  # the plan goes to stdout; there is no transfer to show
    if mirror.is_tarball(dest) and dest.is_dir():
        raise UsageError(f"{dest} is a directory")
    if not mirror.is_tarball(dest) and dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory")

    async def body(client: RegistryClient, engine: Engine, platform: Platform) -> None:
        # Everything for the user goes through the reporter while the live display runs.
        reporter = engine.reporter
        names = [s.name for s in wanted.images] if wanted is not None else sorted(lock)
        reporter.emit(RunStarted(tuple(names), str(dest)))
        if wanted is not None:
            result = await mirror.plan(client, wanted, platform, keep_going, reporter, dest)
        else:
            result = await mirror.plan_from_lock(client, lock, platform, keep_going, reporter, dest)
        if dry_run:
            if as_json:
                click.echo(json.dumps(mirror.dry_run_json(result, dest), indent=2))
            else:
                for line in mirror.dry_run_report(result, dest):
                    click.echo(line)
        else:
            found = mirror.changes(result, dest)
            await mirror.fetch(engine, result, dest, keep_going)
            if not locked:
                mirror.write_lock(lock_file, result.lock(), result.failures)
            for line in mirror.change_lines(result, found):
                reporter.emit(Info(line))
            tags = {(p.source, p.key) for p in result.items}
            reporter.emit(Info(f"mirrored {len(tags)} tag(s), {len(result.items)} image(s) into {dest}"))
        if result.failures:
            for name, why in sorted(result.failures.items()):
                reporter.emit(Warning_(f"failed: {name}: {why}"))
            raise mirror.MirrorFailedError(mirror.failure_message(result.failures))

    settings = wanted.registries if wanted is not None else {}
    run(
        opts,
        body,
        credentials={h: (s.username, s.password or "") for h, s in settings.items() if s.username},
        insecure=frozenset(h for h, s in settings.items() if s.insecure),
    )


@main.command("list-tags")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of one tag a line.")
@registry_options
@wrap_errors
def list_tags(image: str, as_json: bool, **opts: Any) -> None:
    """Print every tag of IMAGE's repository on stdout, one a line, sorted.

    \b
    Examples:
      occystrap list-tags 127.0.0.1:5000/team/app
      occystrap list-tags --json library/busybox | jq '.[-5:]'
    """
    ref = parse_ref(image, None)
    opts["quiet"] = True

    async def body(client: RegistryClient, engine: Engine, platform: Platform) -> None:
        tags = sorted(await client.list_tags(ref))
        if as_json:
            click.echo(json.dumps(tags))
        else:
            for tag in tags:
                click.echo(tag)

    run(opts, body)


def _config_summary(config_bytes: bytes, what: str) -> dict[str, Any]:
    doc = load_json(config_bytes, f"config of {what}")
    if not isinstance(doc, dict):
        raise ManifestError(f"config of {what} is not an object")
    inner_raw = doc.get("config")
    inner: dict[str, Any] = inner_raw if isinstance(inner_raw, dict) else {}
    return {
        "os": doc.get("os"),
        "architecture": doc.get("architecture"),
        "variant": doc.get("variant"),
        "created": doc.get("created"),
        "entrypoint": inner.get("Entrypoint"),
        "cmd": inner.get("Cmd"),
    }


@main.command("inspect")
@click.argument("image")
@click.option("--raw", is_flag=True, help="Print the exact manifest (or index) bytes the registry serves.")
@click.option("--config", "config", is_flag=True, help="Print the exact config bytes (for --platform).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@registry_options
@wrap_errors
def inspect(image: str, raw: bool, config: bool, as_json: bool, **opts: Any) -> None:
    """Describe IMAGE[:TAG] without fetching its layers: digest, platforms, layers, config.

    For an index, the platforms are listed and the one --platform picks is described.

    \b
    Examples:
      occystrap inspect 127.0.0.1:5000/team/app:v1
      occystrap inspect --platform linux/arm64 --json busybox:1.36
      occystrap inspect --raw busybox | jq .
      occystrap inspect --config busybox | jq .config.Cmd
    """
    if raw and config:
        raise UsageError("--raw and --config each print exact bytes; pick one")
    ref = parse_ref(image, None)
    opts["quiet"] = True

    async def body(client: RegistryClient, engine: Engine, platform: Platform) -> None:
        data, media, digest = await client.get_manifest(ref)
        if raw:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        out: dict[str, Any] = {"reference": str(ref), "digest": digest, "media_type": media}
        chosen: Platform | None = None
        mdata, mmedia, mdigest = data, media, digest
        if media in INDEX_TYPES:
            entries = parse_index(data, str(ref))
            out["platforms"] = [
                {"platform": str(e.platform) if e.platform else None, "digest": e.digest, "size": e.size}
                for e in entries
            ]
            entry = choose_platform(entries, platform)
            if entry is None:
                raise PlatformNotFoundError(
                    str(platform), sorted({str(e.platform) for e in entries if e.platform})
                )
            chosen = entry.platform
            mdata, mmedia, mdigest = await client.get_manifest(ref, entry.digest)
            if mmedia in INDEX_TYPES:
                raise ManifestError(f"{ref}: nested index for platform {platform} is not supported")
        config_desc, _ = parse_manifest(mdata, mmedia, str(ref))
        config_bytes = await client.get_small_blob(ref, config_desc)
        if config:
            sys.stdout.buffer.write(config_bytes)
            sys.stdout.buffer.flush()
            return
        img = build_image(ref, Descriptor(mmedia, mdigest, len(mdata)), mdata, config_bytes, chosen)
        out["manifest"] = {
            "digest": mdigest,
            "media_type": mmedia,
            "platform": str(chosen) if chosen else None,
        }
        out["config"] = {
            "digest": img.config.digest,
            "size": img.config.size,
            "media_type": img.config.media_type,
            **_config_summary(config_bytes, str(ref)),
        }
        out["layers"] = [
            {"digest": l.descriptor.digest, "size": l.descriptor.size, "media_type": l.descriptor.media_type}
            for l in img.layers
        ]
        out["size"] = sum(l.descriptor.size for l in img.layers)
        if as_json:
            click.echo(json.dumps(out, indent=2))
        else:
            click.echo("\n".join(_inspect_lines(out)))

    run(opts, body)


def _inspect_lines(out: dict[str, Any]) -> list[str]:
    lines = [out["reference"], f"  digest:     {out['digest']}", f"  media type: {out['media_type']}"]
    if "platforms" in out:
        lines.append("  platforms:")
        lines.extend(f"    {p['platform'] or '-':<20} {p['digest']}" for p in out["platforms"])
        m = out["manifest"]
        lines.append(f"  {m['platform']} manifest: {m['digest']} ({m['media_type']})")
    c = out["config"]
    plat = "/".join(str(x) for x in (c["os"], c["architecture"], c["variant"]) if x)
    lines.append(f"  config:     {c['digest']} ({c['size']} bytes)")
    lines.append(f"    platform:   {plat}")
    lines.append(f"    created:    {c['created']}")
    lines.append(f"    entrypoint: {json.dumps(c['entrypoint'])}")
    lines.append(f"    cmd:        {json.dumps(c['cmd'])}")
    lines.append(f"  layers ({len(out['layers'])}, {out['size']} bytes):")
    lines.extend(f"    {l['digest']}  {l['size']:>12}  {l['media_type']}" for l in out["layers"])
    return lines


@main.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "-j",
    "--parallel",
    type=click.IntRange(1, 64),
    default=DEFAULT_VERIFY_WORKERS,
    show_default=True,
    help="Blobs checked at once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems, not the OK line.")
@click.option("-v", "--verbose", is_flag=True, help="Also name each blob as it is checked (on stderr).")
@wrap_errors
def verify_cmd(path: Path, parallel: int, as_json: bool, quiet: bool, verbose: bool) -> None:
    """Check PATH offline: a tarball, an extracted directory or a merged directory.

    Every blob is re-hashed (digest and size), every layer decompressed and
    compared with its diff_id, and every manifest that index.json,
    manifest.json and catalog.json name must be present and agree with the
    others (config, layer list, RepoTags). Sound: one OK line and exit 0.
    Otherwise one line per problem on stdout and exit 6.

    \b
    Examples:
      occystrap verify busybox.tar
      occystrap verify mirror/
      occystrap verify --json bundle.tar | jq '.problems[].message'
    """

    from occystrap import check

    def note(message: str) -> None:
        if verbose:
            click.echo(message, err=True)

    try:
        result = check.verify(path, parallel, note)
    except KeyboardInterrupt:
        click.echo("occystrap: error: interrupted", err=True)
        sys.exit(130)
    if as_json:
        click.echo(check.report_json(result))
    else:
        for problem in result.problems:
            click.echo(str(problem))
        if result.ok and not quiet:
            click.echo(result.summary())
    if not result.ok:
        raise check.VerifyFailedError(f"{path}: {len(result.problems)} problem(s) found")
