"""verify: offline checks of a tarball or directory, as an airgapped site would run them."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import click

from occystrap.commands.common import wrap_errors
from occystrap.tuning import DEFAULT_VERIFY_WORKERS


@click.command("verify")
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
    from occystrap import verify

    def note(message: str) -> None:
        if verbose:
            click.echo(message, err=True)

    async def main() -> verify.Result:
        return await verify.verify(path, anyio.CapacityLimiter(parallel), note)

    try:
        result = anyio.run(main)
    except KeyboardInterrupt:
        click.echo("occystrap: error: interrupted", err=True)
        sys.exit(130)
    if as_json:
        click.echo(verify.report_json(result))
    else:
        for problem in result.problems:
            click.echo(str(problem))
        if result.ok and not quiet:
            click.echo(result.summary())
    if not result.ok:
        raise verify.VerifyFailedError(f"{path}: {len(result.problems)} problem(s) found")
