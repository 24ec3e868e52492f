"""The flattened root filesystem of an image, over any source: `export` (one tar stream, to a
file or stdout) and `fetch-to-oci-bundle` (a directory `runc run` starts).

Both appear only complete: the tar file and the bundle directory are written under a
temporary name beside their destination and renamed once every layer has been verified.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from occystrap.commands.common import Context, registry_options, wrap_errors
from occystrap.commands.forensics import done, open_image, run_forensics
from occystrap.errors import OccystrapError, UsageError

if TYPE_CHECKING:
    from occystrap.forensics.remote import Streams


def partial_name(dest: Path) -> Path:
    """A hidden name beside dest, on the same filesystem, so the final rename is atomic."""
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.occystrap-partial")


@click.command("export")
@click.argument("image")
@click.argument("output", metavar="OUT.tar|-")
@registry_options
@wrap_errors
def export_cmd(image: str, output: str, **opts: Any) -> None:
    """Write the flattened root filesystem of IMAGE[:TAG] as one tar stream.

    Layers are applied as a container runtime would (whiteouts and opaque
    directories honoured, hardlinks kept) and streamed once each, top layer
    first; nothing is unpacked to disk. OUT.tar appears only once complete and
    verified; `-` streams to stdout (a failure then cuts the stream short, so
    the consumer fails too), for `tar -x`, `podman import` or `docker import`.

    IMAGE is a registry reference or a local layout, as for `occystrap files`.

    \b
    Examples:
      occystrap export busybox busybox-rootfs.tar
      occystrap export 127.0.0.1:5000/team/app:v3 - | tar -x -C rootfs/
      occystrap export -q app.tar - | podman import - app-flat:v3
    """
    from occystrap import locations

    where = locations.parse(image)
    to_stdout = output == "-"
    dest = Path(output)
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write a tar stream to a terminal: redirect stdout, or name a file")
    if not to_stdout and dest.is_dir():
        raise UsageError(f"{dest} is a directory")
    if not to_stdout and not dest.parent.is_dir():
        raise UsageError(f"{dest.parent} is not a directory")

    async def body(ctx: Context, streams: Streams) -> None:
        from occystrap.forensics.export import export_rootfs

        opened = await open_image(ctx, where, streams)
        if to_stdout:
            out = sys.stdout.buffer
            try:
                await streams.call(lambda: export_rootfs(opened.layers, opened.open_layer, out))
                out.flush()
            except BrokenPipeError:
                raise OccystrapError("stdout was closed before the export was complete") from None
            done(ctx, opened.image, "stdout")
            return
        partial = partial_name(dest)

        def write() -> None:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as fh:
                export_rootfs(opened.layers, opened.open_layer, fh, spool_dir=dest.parent)
            os.replace(partial, dest)

        try:
            await streams.call(write)
        finally:
            partial.unlink(missing_ok=True)
        done(ctx, opened.image, str(dest))

    run_forensics(opts, body)


@click.command("fetch-to-oci-bundle")
@click.argument("image")
@click.argument("tag")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--readonly", is_flag=True, help="Make the container's root filesystem read-only.")
@click.option("--hostname", help="The container's hostname (default: the short image ID).")
@registry_options
@wrap_errors
def fetch_to_oci_bundle(
    image: str, tag: str, directory: Path, readonly: bool, hostname: str | None, **opts: Any
) -> None:
    """Fetch IMAGE:TAG as an OCI runtime bundle in DIRECTORY, ready for `runc run`.

    DIRECTORY gets config.json (the image's entrypoint, command, environment,
    working directory and user, with runc's default namespaces, mounts and
    capabilities) and rootfs/ (every layer applied, whiteouts honoured, owners
    kept: run as root to keep them). It is built under a temporary name and
    appears only complete; it must not exist yet (or be an empty directory).

    TAG may be a digest (sha256:...). IMAGE may also be a local layout (oci:DIR,
    docker-archive:FILE, a path); TAG then names the image inside it, as REF in
    oci:DIR:REF, or is `-` when it holds one image.

    \b
    Examples:
      occystrap fetch-to-oci-bundle busybox latest bundle/ && runc run -b bundle/ box1
      occystrap fetch-to-oci-bundle --readonly --hostname web 127.0.0.1:5000/team/app v3 app/
      occystrap fetch-to-oci-bundle app.tar - app/
    """
    from dataclasses import replace

    from occystrap import locations

    where = locations.parse(image, None if tag == "-" else tag)
    if where.is_local and where.name is None and tag != "-":
        where = replace(where, name=tag)
    elif not where.is_local and tag == "-":
        raise UsageError("TAG `-` (the only image) is for a local layout; name a tag or digest")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} already exists")

    async def body(ctx: Context, streams: Streams) -> None:
        import tempfile

        from occystrap.events import Warning_
        from occystrap.forensics.bundle import _remove_tree, write_bundle

        opened = await open_image(ctx, where, streams)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".occystrap-partial", dir=directory.parent)
        )

        def build() -> None:
            write_bundle(
                opened.image.config_bytes,
                opened.layers,
                opened.open_layer,
                staging,
                readonly=readonly,
                hostname=hostname,
                warn=lambda message: streams.emit(Warning_(message)),
            )
            os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the bundle from other users
            # Over an empty directory, rename replaces it; a non-empty one appeared meanwhile: refuse.
            try:
                os.rename(staging, directory)
            except OSError as exc:
                raise UsageError(f"{directory} already exists: {exc.strerror}") from None

        try:
            await streams.call(build)
        except BaseException:
            _remove_tree(staging)
            raise
        done(ctx, opened.image, str(directory))

    run_forensics(opts, body)
