"""mirror: many images, tags and platforms into one destination in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from occystrap.commands.common import Context, registry_options, upload_option, wrap_errors
from occystrap.commands.common import run as run_command
from occystrap.commands.push import placement_options
from occystrap.commands.sharding import shard_options
from occystrap.errors import OccystrapError, UsageError
from occystrap.shard.split import Shard
from occystrap.sources.base import Source

if TYPE_CHECKING:
    from occystrap.naming import Placement


@click.command("mirror")
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
    help="Fetch exactly the digests the lock file names (DEST/occystrap.lock, or DEST.lock for a .tar);"
    " with a spec or --image, first check that the lock covers exactly those images and tags.",
)
@click.option("--keep-going", is_flag=True, help="Mirror the other images when one fails; exit non-zero.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as one JSON document.")
@click.option(
    "--lock",
    "lock_option",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The lock file to write (with --locked: to replay); default DEST/occystrap.lock or DEST.lock.",
)
@click.option(
    "--since",
    type=click.Path(path_type=Path),
    metavar="OLD",
    help="Write a delta bundle: only the layer blobs OLD (a bundle, merged directory or lock file) lacks.",
)
@click.option("--prune", is_flag=True, help="Then remove from the merged DEST what this run did not mirror.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JSON account of the run: each tag's outcome, digests, bytes, sources, and what failed.",
)
@placement_options
@click.option(
    "--referrers", is_flag=True, help="Also carry what refers to each image: signatures, attestations, SBOMs."
)
@click.option(
    "--rate-limit-reserve",
    type=click.IntRange(0),
    metavar="N",
    help="Stop cleanly (exit 5) before a registry's reported pull quota (Docker Hub's) would fall "
    "below N; what was mirrored is kept, and running again later carries on.",
)
@upload_option
@registry_options
@wrap_errors
@shard_options
def mirror_cmd(
    paths: tuple[str, ...],
    image_refs: tuple[str, ...],
    dry_run: bool,
    locked: bool,
    keep_going: bool,
    as_json: bool,
    lock_option: Path | None,
    since: Path | None,
    prune: bool,
    keep_host: bool,
    maps: tuple[str, ...],
    referrers: bool,
    report_path: Path | None,
    shard: Shard | None,
    **opts: Any,
) -> None:
    """Mirror many images, tags and platforms into DEST in one run.

    DEST ending in .tar is one bundle tarball (docker/podman load it, every tag
    included); docker://HOST[:PORT][/PREFIX] (or registry://) is a registry, where
    each image lands at PREFIX/<its repository path>; anything else is a merged
    directory: blobs stored once, catalog.json, and a multi-image OCI layout.
    Blobs shared between images are moved once; blobs DEST already holds are not
    moved again, and in a registry tags that already name the same content are
    left alone. A lock file ({"version": 2, "images": {image: {tag: {platform:
    digest}}}}) is written beside a local result (or where --lock says). Each
    image's tags are reported as new, updated or unchanged in DEST. With --since
    OLD the bundle is a delta: every manifest and config, but only the layers OLD
    lacks (`occystrap import` applies it where OLD was imported; it does not load
    on its own).

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
      occystrap mirror images.yaml docker://10.0.0.5:5000/mirror
      occystrap mirror --image busybox:1.36 --image alpine:3.20 mirror/
      occystrap mirror --dry-run images.yaml mirror/
      occystrap mirror --dry-run --json images.yaml mirror/ | jq .fetch
      occystrap mirror --locked mirror/          # replay mirror/occystrap.lock
      occystrap mirror --locked --lock images.lock images.yaml bundle.tar
      occystrap mirror --since v1.tar images.yaml v2.tar   # a delta over v1.tar
      occystrap mirror --prune images.yaml mirror/
      occystrap mirror --rate-limit-reserve 10 images.yaml mirror/   # keep 10 Docker Hub pulls
      occystrap mirror --shard 1/4 images.yaml shard-1/   # then: occystrap merge shard-*/ mirror/

    \b
    SPEC.yaml's `registries:` (and ~/.config/occystrap/config.yaml) may name mirrors, tried
    first for pulls:  docker.io: {mirrors: [mirror.example:5000, 10.0.0.5:5000/hub]}
    """
    if len(paths) > 2:
        raise UsageError("expected [SPEC.yaml] DEST")
    from occystrap import locations
    from occystrap.commands import airgap, sharding, specs
    from occystrap.mirror import lockfile, spec
    from occystrap.naming import Placement, parse_maps

    dest_text = paths[-1]
    into_registry = dest_text.startswith(locations.REGISTRY_SCHEMES)
    placement: Placement | None = None
    if into_registry:
        registry, prefix = locations.parse_registry_prefix(dest_text)
        placement = Placement(registry, prefix, keep_host, parse_maps(maps))
    elif keep_host or maps:
        raise UsageError("--keep-host and --map place images in a registry DEST (docker://HOST/PREFIX)")
    dest = Path(dest_text)
    spec_path = Path(paths[0]) if len(paths) == 2 else None
    lock_file = lock_option or (None if into_registry else lockfile.lock_path(dest))
    lock: lockfile.Lock = {}
    wanted: spec.MirrorSpec | None = None
    if locked:
        if lock_file is None:
            raise UsageError("--locked into a registry needs --lock FILE")
        lock = lockfile.read_lock(lock_file)
    elif spec_path is None and not image_refs:
        raise UsageError("give a SPEC.yaml, --image REF, or --locked")
    if spec_path is not None or image_refs:
        wanted = specs.wanted_images(spec_path, image_refs, referrers)
    airgap.check_options(None if into_registry else dest, since, prune)
    if as_json and not dry_run:
        raise UsageError("--json prints the plan of a --dry-run; add --dry-run")
    if as_json and into_registry:
        raise UsageError("--json is for local destinations; a registry DEST's dry run prints lines")
    if dry_run:
        opts["quiet"] = True  # the plan goes to stdout; there is no transfer to show
    if not into_registry:
        if lockfile.is_tarball(dest) and dest.is_dir():
            raise UsageError(f"{dest} is a directory")
        if not lockfile.is_tarball(dest) and dest.exists() and not dest.is_dir():
            raise UsageError(f"{dest} exists and is not a directory")

    reserve = opts.get("rate_limit_reserve")

    async def body(ctx: Context) -> None:
        from occystrap.commands import reserve as reserve_
        from occystrap.commands.endpoints import registry_source
        from occystrap.commands.reporting import SourceRecorder
        from occystrap.events import Info, RunStarted, Warning_
        from occystrap.mirror import changes, dryrun, plan, run

        # Everything for the user goes through the reporter while the live display runs.
        reporter = ctx.reporter = SourceRecorder(ctx.reporter)
        reporter_of_run.append(reporter)
        names = [s.name for s in wanted.images] if wanted is not None else sorted(lock)
        reporter.emit(RunStarted(tuple(names), dest_text, upload=into_registry))
        pulled = await registry_source(ctx)
        if placement is not None:
            source = await _destination_first(ctx, pulled, placement)
        else:
            source = await _planning_source(ctx, pulled, dest, keep=not dry_run)
        budget = (await ctx.client()).budget
        make_planner = reserve_.ReservePlanner if reserve is not None else plan.Planner
        planner = make_planner(source, ctx.platform, ctx.limits.resolves)
        if not locked and wanted is not None:
            result = await plan.plan(planner, wanted, keep_going, reporter)
        else:
            if wanted is not None:
                from occystrap.mirror.lockcheck import check_covers

                await check_covers(planner, wanted, lock, str(lock_file))
            # A lock is replayed image by image: one the reserve holds back must not stop the rest.
            result = await plan.plan_from_lock(planner, lock, keep_going or reserve is not None, reporter)
        held = reserve_.held_back(planner, result.failures, budget)
        if result.failures and not keep_going:
            raise run.MirrorFailedError(run.failure_message(result.failures))
        if held and (dry_run or lockfile.is_tarball(dest)):
            # A bundle is written whole: one without the held-back tags would drop them.
            raise reserve_.stopped(budget, held)
        planned = list(result.items)
        base = None
        if since is not None:
            from occystrap.delta.base import load

            base = await load(since, planner)
        found = None
        try:
            if shard is not None:
                found = await sharding.mirror_shard(ctx, source, result, shard, dest_text, placement, dry_run)
            elif placement is not None:
                from occystrap.commands.pushing import mirror_into

                found = await mirror_into(ctx, source, result, placement, dest_text, keep_going, dry_run)
            elif dry_run:
                if as_json:
                    doc = dryrun.dry_run_json(result, dest) | airgap.dry_run_json(dest, result, base, prune)
                    click.echo(json.dumps(doc, indent=2))
                else:
                    for line in [
                        *dryrun.dry_run_report(result, dest),
                        *airgap.dry_run_lines(dest, result, base, prune),
                    ]:
                        click.echo(line)
            else:
                found = changes.changes(result, changes.held_manifests(dest), lockfile.is_tarball(dest))
                whole = lockfile.is_tarball(dest)
                make_sink = airgap.sink_factory(dest, ctx.platform, base, result)
                await run.fetch(ctx.engine, source, result, make_sink, keep_going, whole)
                await airgap.after_run(dest, result, base, prune, reporter)
        except OccystrapError as err:
            for name in dict.fromkeys(p.source for p in result.items):
                result.fail(name, err)
            account(planned, result, found)
            raise
        if not dry_run:
            account(planned, result, found)
            if not locked and lock_file is not None:
                reserve_.write_lock(lock_file, result.lock(), result.failures, held)
            elif locked and placement is None and lock_file != lockfile.lock_path(dest):
                # A lock replayed from elsewhere (a repository): DEST still gets its own record.
                lockfile.write_lock(lockfile.lock_path(dest), result.lock(), result.failures)
            tags = {(p.source, p.key) for p in result.items}
            if shard is None or placement is None:  # a registry shard writes no manifest, no tag
                assert found is not None
                for line in changes.change_lines(result, found):
                    reporter.emit(Info(line))
                reporter.emit(
                    Info(f"mirrored {len(tags)} tag(s), {len(result.items)} image(s) into {dest_text}")
                )
        if result.failures:
            for name, why in sorted(result.failures.items()):
                reporter.emit(Warning_(f"failed: {name}: {why}"))
            raise run.MirrorFailedError(run.failure_message(result.failures))
        if held:
            raise reserve_.stopped(budget, held)

    def account(planned: list[Any], result: Any, found: Any) -> None:
        """The run report: as an event (for --progress json) and, with --report, a file."""
        from occystrap.commands.reporting import emit_report

        emit_report(reporter_of_run[0], report_path, planned, result, found, dest_text, into_registry)

    reporter_of_run: list[Any] = []
    run_command(opts, body, specs.spec_client_options(opts, wanted))


async def _planning_source(ctx: Context, source: Source, dest: Path, keep: bool) -> Source:
    """What a merged directory DEST already holds is read from it, not fetched again: configs,
    manifests by digest, and tags whose HEAD names a manifest DEST holds (see LocalFirst).
    keep: DEST may be written (not a dry run)."""
    from occystrap.mirror.lockfile import is_tarball

    if is_tarball(dest) or not (dest / "index.json").is_file():
        return source
    from occystrap.layout.reader import LayoutReader
    from occystrap.sources.localfirst import LocalFirst

    held = LayoutReader.open(dest)
    ctx.stack.callback(held.close)
    return LocalFirst(source, held, dest if keep else None)


async def _destination_first(ctx: Context, source: Source, placement: Placement) -> Source:
    """A registry DEST is asked for the manifests it already holds (see DestinationFirst)."""
    from occystrap.sources.destfirst import DestinationFirst
    from occystrap.sources.registry import RegistrySource

    return DestinationFirst(source, RegistrySource(await ctx.client(), "destination"), placement.place)
