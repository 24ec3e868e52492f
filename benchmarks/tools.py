"""The tools under test and the checks of what they write, for scenarios to share.

A `Tool` is a name, a function giving the command line and where its output goes, and an optional
check of the warm-up round's output. The builders here cover the usual shapes:
`occystrap COMMAND [OPTIONS] REF TAG OUT` and `skopeo copy docker://REF:TAG DEST`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import MiB
from benchmarks.harness import BenchContext, Tool
from benchmarks.images import PushedImage

Verify = Callable[[PushedImage, Path], str | None]

SKOPEO_DA = "skopeo-docker-archive"
SKOPEO_OCI = "skopeo-oci"


def occystrap_tool(
    ctx: BenchContext,
    name: str,
    command: str,
    *options: str,
    output: str = "out.tar",
    verify: Verify | None = None,
) -> Tool:
    """`occystrap COMMAND OPTIONS... REF TAG RUNDIR/OUTPUT`."""

    def argv(image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / output
        return [ctx.occystrap, command, *options, image.ref, image.tag, str(out)], out

    return Tool(name, argv, verify)


def skopeo_copy_argv(image: PushedImage, dest: str) -> list[str]:
    """`skopeo copy` from the registry on loopback (plain HTTP) to DEST, a transport:path."""
    return ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{image.ref}:{image.tag}", dest]


def skopeo_docker_archive_tool(name: str = SKOPEO_DA) -> Tool:
    def argv(image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out.tar"
        return skopeo_copy_argv(image, f"docker-archive:{out}"), out

    # skopeo writes docker-archive layers uncompressed.
    return Tool(name, argv, verify_docker_tarball(layer_diff_ids))


def skopeo_oci_tool(name: str = SKOPEO_OCI) -> Tool:
    def argv(image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "outdir"
        return skopeo_copy_argv(image, f"oci:{out}:{image.tag}"), out

    return Tool(name, argv, verify_oci_dir)


def layer_digests(image: PushedImage) -> list[str]:
    return [layer.digest for layer in image.layers]


def layer_diff_ids(image: PushedImage) -> list[str]:
    return [layer.diff_id for layer in image.layers]


def verify_docker_tarball(
    expect: Callable[[PushedImage], list[str]],
) -> Verify:
    """Check a docker-loadable tarball: manifest.json lists the layers and each hashes as expected."""

    def check(image: PushedImage, path: Path) -> str | None:
        want = expect(image)
        try:
            with tarfile.open(path, "r:") as tf:
                member = tf.extractfile("manifest.json")
                if member is None:
                    return "no manifest.json"
                manifest = json.loads(member.read())
                if len(manifest) != 1:
                    return f"manifest.json lists {len(manifest)} images"
                names = manifest[0]["Layers"]
                if len(names) != len(want):
                    return f"{len(names)} layers, expected {len(want)}"
                for name, digest in zip(names, want, strict=True):
                    fh = tf.extractfile(name)
                    if fh is None:
                        return f"layer {name} missing"
                    h = hashlib.sha256()
                    while chunk := fh.read(4 * MiB):
                        h.update(chunk)
                    if "sha256:" + h.hexdigest() != digest:
                        return f"layer {name} hashes to sha256:{h.hexdigest()}, expected {digest}"
        except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
            return f"unreadable: {exc}"
        return None

    return check


def verify_oci_dir(image: PushedImage, path: Path) -> str | None:
    missing = [
        layer.digest for layer in image.layers if not (path / "blobs" / "sha256" / layer.digest[7:]).is_file()
    ]
    if not (path / "index.json").is_file():
        return "no index.json"
    return f"missing blobs {missing}" if missing else None


def verify_oci_tags(tags: Sequence[str]) -> Verify:
    """An OCI layout whose index names exactly these tags."""

    def check(_image: PushedImage, out: Path) -> str | None:
        try:
            index = json.loads((out / "index.json").read_text())
        except (OSError, ValueError) as exc:
            return f"no index.json: {exc}"
        key = "org.opencontainers.image.ref.name"
        names = {m.get("annotations", {}).get(key) for m in index["manifests"]}
        return None if names == set(tags) else f"index.json names {sorted(map(str, names))}"

    return check


def occystrap_verifies(ctx: BenchContext, output: Path) -> str | None:
    """`occystrap verify` (offline checks of a tarball or directory it wrote) passes."""
    proc = subprocess.run([ctx.occystrap, "verify", "--quiet", str(output)], capture_output=True, text=True,
                          check=False, env=ctx.env())  # fmt: skip
    return None if proc.returncode == 0 else f"occystrap verify: {(proc.stdout + proc.stderr).strip()[:500]}"
