"""prune DIR: remove from a merged directory the images no longer wanted, and every blob that
no remaining image references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from occystrap.commands.common import Context, progress_options, run, wrap_errors


@click.command("prune")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR")
@click.argument(
    "spec_path", required=False, type=click.Path(dir_okay=False, path_type=Path), metavar="[SPEC.yaml]"
)
@click.option(
    "--lock",
    "lock_option",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Keep what this lock file names.",
)
@click.option(
    "--keep",
    "keep_refs",
    multiple=True,
    metavar="IMAGE:TAG",
    help="Keep this image (repeatable; IMAGE@DIGEST too).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print what would be removed and the bytes freed; change nothing."
)
@progress_options
@wrap_errors
def prune_cmd(
    directory: Path,
    spec_path: Path | None,
    lock_option: Path | None,
    keep_refs: tuple[str, ...],
    dry_run: bool,
    **opts: Any,
) -> None:
    """Remove from the merged directory DIR every image the spec, the lock or --keep
    does not name, then every blob nothing left references.

    What to keep is read offline: a spec's filters (include, exclude, range,
    latest) choose among the tags DIR holds; a kept tag keeps its other
    platforms (as DIR's occystrap.lock records them) and whatever refers to it
    (signatures, attestations, SBOMs). The catalog, index.json and manifest.json
    are rewritten first, under DIR's lock; blobs, expanded trees and per-tag
    manifests are deleted after, so a crash leaves only unreferenced files for
    the next prune. Fails at once if another occystrap run is writing DIR.

    \b
    Examples:
      occystrap prune mirror/ images.yaml
      occystrap prune --dry-run mirror/ --lock images.lock
      occystrap prune site/ --keep 127.0.0.1:5000/team/app:v3 --keep busybox:1.36
    """
    from occystrap import reference
    from occystrap.errors import UsageError
    from occystrap.layout import catalog
    from occystrap.mirror import keep, lockfile, spec
    from occystrap.prune import plan, prune

    wanted = keep.Wanted(
        tuple(reference.parse(r) for r in keep_refs),
        spec.load(spec_path) if spec_path is not None else None,
        lockfile.read_lock(lock_option) if lock_option is not None else None,
    )
    if wanted.empty:
        raise UsageError(
            "say what to keep: SPEC.yaml, --lock FILE or --keep IMAGE:TAG (prune never empties DIR)"
        )
    if dry_run:
        opts["quiet"] = True  # the preview goes to stdout

    def choose(images: catalog.Images, dir_lock: lockfile.Lock | None) -> set[tuple[str, str]]:
        return keep.kept(images, wanted, dir_lock)

    async def body(ctx: Context) -> None:
        import anyio

        from occystrap.commands.airgap import FromThread
        from occystrap.events import Info, RunStarted

        if dry_run:
            found = await anyio.to_thread.run_sync(plan, directory, choose)
            for line in found.lines():
                click.echo(line)
            return
        ctx.reporter.emit(RunStarted((), str(directory)))
        done = await anyio.to_thread.run_sync(prune, directory, choose, FromThread(ctx.reporter))
        held = done.shared.images
        for name in keep.not_held(held, wanted):
            ctx.reporter.emit(Info(f"not in {directory}, so nothing kept for it: {name}"))
        ctx.reporter.emit(Info(done.lines("removed")[-1]))

    run(opts, body)
