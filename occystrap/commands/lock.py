"""lock SPEC.yaml: resolve the spec and write (or update) its lock file, fetching no layer, and
say which tags moved: `cargo update` for images. The lock then lives in a repository beside
the spec, and `mirror --locked --lock FILE SPEC.yaml DEST` replays it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from occystrap.commands.common import Context, registry_options, run, wrap_errors


@click.command("lock")
@click.argument(
    "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="SPEC.yaml"
)
@click.option(
    "--lock",
    "lock_option",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The lock file to write or update (default: SPEC.lock beside the spec).",
)
@click.option("--image", "image_refs", multiple=True, metavar="REF[:TAG]", help="Lock this image too.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when the lock is not up to date.")
@click.option("--referrers", is_flag=True, help="Also lock what refers to each image (signatures, SBOMs).")
@registry_options
@wrap_errors
def lock_cmd(
    spec_path: Path,
    lock_option: Path | None,
    image_refs: tuple[str, ...],
    check: bool,
    referrers: bool,
    **opts: Any,
) -> None:
    """Resolve SPEC.yaml and write or update its lock file; no layer is fetched.

    Every image, tag and platform the spec selects is resolved (tag lists,
    manifests, configs) exactly as `mirror` would, and the lock records the
    manifest digest of each. One line per tag that was added, removed or moved
    goes to stdout, then a count. The lock (format version 2, see the README) is
    sorted with one digest per line, so it reviews well in a diff.

    \b
    Examples:
      occystrap lock images.yaml                  # writes or updates images.lock
      occystrap lock images.yaml --lock site.lock
      occystrap lock --check images.yaml          # CI: fail when the lock is stale
      occystrap mirror --locked --lock images.lock images.yaml bundle.tar
    """
    from occystrap.commands.specs import spec_client_options, wanted_images
    from occystrap.mirror import lockfile

    wanted = wanted_images(spec_path, image_refs, referrers)
    path = lock_option or lockfile.spec_lock_path(spec_path)
    if path.resolve() == spec_path.resolve():
        raise click.BadParameter(
            "the lock file would overwrite the spec; give --lock FILE", param_hint="--lock"
        )
    old: lockfile.Lock = lockfile.read_lock(path) if path.exists() else {}
    stale: list[bool] = []

    async def body(ctx: Context) -> None:
        from occystrap.events import Info, RunStarted
        from occystrap.mirror import plan
        from occystrap.mirror.lockcheck import moved
        from occystrap.sources.registry import RegistrySource

        ctx.reporter.emit(RunStarted(tuple(s.name for s in wanted.images), str(path)))
        source = RegistrySource(await ctx.client())
        planner = plan.Planner(source, ctx.platform, ctx.limits.resolves)
        result = await plan.plan(planner, wanted, reporter=ctx.reporter)
        new = result.lock()
        changes = moved(old, new)
        for change in changes:
            click.echo(change.line())
        counts = {s: sum(c.status == s for c in changes) for s in ("moved", "added", "removed")}
        tags = sum(len(t) for t in new.values())
        # A lock of an older format is stale too, though no tag moved.
        stale.append(lockfile.lock_bytes(new) != _bytes(path))
        head = "up to date:" if not stale[0] else "would update" if check else "updated"
        click.echo(
            f"{head} {path}: {counts['moved']} moved, {counts['added']} added, {counts['removed']} removed,"
            f" {tags - counts['moved'] - counts['added']} unchanged"
        )
        if not check and stale[0]:
            lockfile.write_lock(path, new, {})
            ctx.reporter.emit(Info(f"locked {tags} tag(s) of {len(new)} image(s) in {path}"))

    run(opts, body, spec_client_options(opts, wanted))
    if check and stale and stale[0]:
        raise SystemExit(1)


def _bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
