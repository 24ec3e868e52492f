"""Registries as destinations: copy, push and mirror into the real CNCF registry, judged by
skopeo (same digests on both sides), podman pull, and the registry's own access log."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import fails, occystrap, ok, read_lock, settled
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import BuiltImage, Entry
from tests.support.registry import PASSWORD, USERNAME, Registry
from tests.support.validators import Podman

Factory = Callable[..., Registry]


def _image(tag: str, fmt: str = "docker", compression: str = "gzip") -> BuiltImage:
    return images.build_image(
        [
            [Entry.file(f"base-{tag}.txt", f"base {tag}\n".encode() * 500)],
            [Entry.file(f"app-{tag}", b"app\n")],
        ],
        fmt=fmt,  # type: ignore[arg-type]
        compression=compression,  # type: ignore[arg-type]
    )


def _raw(skopeo: str, ref: str) -> bytes:
    return subprocess.run(
        [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True, check=True
    ).stdout


def _uploads(reg: Registry) -> int:
    """Blob bytes sent into a registry: its upload requests (POST/PATCH/PUT on blobs/uploads)."""
    return settled(lambda: reg.request_count("/blobs/uploads/", "PUT"))


def _manifest_puts(reg: Registry) -> int:
    return settled(lambda: reg.request_count("/manifests/", "PUT"))


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("docker", "gzip"), ("oci", "zstd"), ("oci", "none")],
    ids=["docker-gzip", "oci-zstd", "oci-plain"],
)
def test_copy_between_registries_keeps_every_digest(
    registry: Registry,
    registry_factory: Factory,
    skopeo: str,
    podman: Podman,
    tmp_path: Path,
    fmt: str,
    compression: str,
) -> None:
    built = _image(f"{fmt}{compression}", fmt, compression)
    registry.push_image(f"push/{fmt}-{compression}", "v1", built)
    dest = registry_factory()
    src_ref, dst_ref = f"{registry.host}/push/{fmt}-{compression}:v1", f"{dest.host}/copied/app:v1"
    ok("copy", "-q", f"docker://{src_ref}", f"docker://{dst_ref}")
    assert _raw(skopeo, dst_ref) == built.manifest == _raw(skopeo, src_ref)
    # A real client pulls it, and skopeo copies it back out.
    pulled = podman.pull(dst_ref)
    assert pulled["Id"].removeprefix("sha256:") == built.config_digest.removeprefix("sha256:")
    subprocess.run(
        [
            skopeo,
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{dst_ref}",
            f"oci:{tmp_path / 'back'}:v1",
        ],
        check=True,
        capture_output=True,
    )
    # Again: nothing is sent, nothing is rewritten.
    uploads, puts = _uploads(dest), _manifest_puts(dest)
    ok("copy", "-q", f"docker://{src_ref}", f"docker://{dst_ref}")
    assert (_uploads(dest), _manifest_puts(dest)) == (uploads, puts)


def test_copy_all_keeps_the_index_digest(registry: Registry, registry_factory: Factory, skopeo: str) -> None:
    amd = images.build_image([[Entry.file("arch", b"amd64 push\n")]], fmt="oci", arch="amd64")
    arm = images.build_image([[Entry.file("arch", b"arm64 push\n")]], fmt="oci", arch="arm64", variant="v8")
    index = images.build_index([amd, arm])
    registry.push_index("push/multi", "v1", index)
    dest = registry_factory()
    ok("copy", "-q", "--all", f"{registry.host}/push/multi:v1", f"docker://{dest.host}/copied/multi")
    assert _raw(skopeo, f"{dest.host}/copied/multi:v1") == index.data
    assert _raw(skopeo, f"{dest.host}/copied/multi@{arm.manifest_digest}") == arm.manifest
    # Without --all: the platform's own manifest, as skopeo copies by default.
    ok(
        "copy",
        "-q",
        "--platform",
        "linux/arm64",
        f"{registry.host}/push/multi:v1",
        f"docker://{dest.host}/one/arm",
    )
    assert _raw(skopeo, f"{dest.host}/one/arm:v1") == arm.manifest


def test_copy_within_a_registry_mounts(registry_factory: Factory) -> None:
    reg = registry_factory()
    built = _image("mount")
    reg.push_image("team/app", "v1", built)
    before = _uploads(reg)
    proc = ok(
        "copy", "--progress", "json", f"docker://{reg.host}/team/app:v1", f"docker://{reg.host}/other/app:v2"
    )
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    reasons = {e["reason"] for e in events if e["event"] == "BlobSkipped"}
    assert reasons == {"mounted"}
    assert _uploads(reg) == before + 1  # only the config, held in memory, is uploaded
    assert settled(lambda: reg.request_count("mount=", "POST")) >= 2
    summary = events[-1]
    assert summary["mounted_blobs"] == 2 and summary["tags_written"] == 1


def test_push_a_bundle_then_pull_every_tag(
    registry: Registry, registry_factory: Factory, podman: Podman, skopeo: str, tmp_path: Path
) -> None:
    one, two = _image("bundle-one"), _image("bundle-two", "oci", "zstd")
    registry.push_image("site/one", "v1", one)
    registry.push_image("site/two", "v1", two)
    registry.push_image("site/two", "v2", one)
    bundle = tmp_path / "bundle.tar"
    ok("mirror", "-q", "--image", f"{registry.host}/site/one:v1", "--image", f"{registry.host}/site/two:v1",
       "--image", f"{registry.host}/site/two:v2", str(bundle))  # fmt: skip
    dest = registry_factory()
    ok("push", "-q", str(bundle), f"docker://{dest.host}/imported")
    for repo, tag, built in (("one", "v1", one), ("two", "v1", two), ("two", "v2", one)):
        ref = f"{dest.host}/imported/site/{repo}:{tag}"
        assert _raw(skopeo, ref) == built.manifest
        assert podman.pull(ref)["Id"].removeprefix("sha256:") == built.config_digest.removeprefix("sha256:")
    # Idempotent: a second push sends no blob and writes no manifest.
    uploads, puts = _uploads(dest), _manifest_puts(dest)
    proc = ok("push", "--progress", "plain", str(bundle), f"{dest.host}/imported")
    assert "0 written, 3 unchanged" in proc.stderr
    assert (_uploads(dest), _manifest_puts(dest)) == (uploads, puts)
    # --map rewrites a repository prefix; --dry-run writes nothing.
    proc = ok("push", "--dry-run", "--map", "site=apps", str(bundle), f"{dest.host}/imported")
    assert f"{dest.host}/imported/apps/one:v1" in proc.stdout and _manifest_puts(dest) == puts
    ok("push", "-q", "--map", "site=apps", "--keep-host", str(bundle), f"{dest.host}/kept")
    host = registry.host.replace(":", "_")
    assert _raw(skopeo, f"{dest.host}/kept/{host}/apps/one:v1") == one.manifest


def test_mirror_into_a_registry(
    registry: Registry, registry_factory: Factory, skopeo: str, tmp_path: Path
) -> None:
    base = images.build_layer([Entry.file("shared-base", b"shared base layer\n" * 4000)])
    tagged = [
        images.build_image([base, images.build_layer([Entry.file("v", str(i).encode())])]) for i in range(3)
    ]
    for i, built in enumerate(tagged):
        registry.push_image("mirrored/app", f"v{i}", built)
    amd = images.build_image([[Entry.file("arch", b"amd64 mirrored\n")]], fmt="oci", arch="amd64")
    arm = images.build_image(
        [[Entry.file("arch", b"arm64 mirrored\n")]], fmt="oci", arch="arm64", variant="v8"
    )
    index = images.build_index([amd, arm])
    registry.push_index("mirrored/multi", "v1", index)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"images:\n  - name: {registry.host}/mirrored/app\n    include: ['^v']\n"
        f"  - name: {registry.host}/mirrored/multi\n    tags: [v1]\n    platforms: all\n"
    )
    dest = registry_factory()
    lock = tmp_path / "site.lock"
    proc = ok("mirror", "--progress", "plain", "--lock", str(lock), str(spec), f"docker://{dest.host}/mirror")
    assert f"{registry.host}/mirrored/app: 3 new" in proc.stderr
    for i, built in enumerate(tagged):
        assert _raw(skopeo, f"{dest.host}/mirror/mirrored/app:v{i}") == built.manifest
    assert _raw(skopeo, f"{dest.host}/mirror/mirrored/multi:v1") == index.data
    # The shared base went up once; the other repositories' copies of it were not uploaded again.
    assert settled(lambda: dest.request_count(f"digest={base.digest}", "PUT")) == 1
    assert read_lock(lock)[f"{registry.host}/mirrored/multi"]["v1"] == {"index": index.digest}
    uploads, puts = _uploads(dest), _manifest_puts(dest)
    proc = ok("mirror", "--progress", "plain", str(spec), f"registry://{dest.host}/mirror")
    assert f"{registry.host}/mirrored/app: 3 unchanged" in proc.stderr
    assert (_uploads(dest), _manifest_puts(dest)) == (uploads, puts)
    ok("mirror", "-q", "--locked", "--lock", str(lock), f"docker://{dest.host}/again")
    assert _raw(skopeo, f"{dest.host}/again/mirrored/multi:v1") == index.data


def test_destination_refusing_push(registry: Registry, token_registry: Registry) -> None:
    built = _image("refused")
    registry.push_image("push/refused", "v1", built)
    src = f"docker://{registry.host}/push/refused:v1"
    dst = f"docker://{token_registry.host}/refused/app:v1"
    proc = fails("copy", "-q", src, dst)
    assert proc.returncode == 4
    assert "refused/app" in proc.stderr and "push" in proc.stderr
    # Nothing was tagged at the destination.
    status, _, _ = token_registry.client.request(
        "GET", "/v2/refused/app/manifests/v1", scope="repository:refused/app:pull"
    )
    assert status == 404
    ok("copy", "-q", "--dest-username", USERNAME, "--dest-password", PASSWORD, src, dst)
    assert token_registry.client.get_manifest("refused/app", "v1")[1] == built.manifest


@pytest.fixture
def image() -> BuiltImage:
    return _image("faults")


@pytest.mark.parametrize(
    "fault",
    [
        Fault(match="/blobs/uploads/", method="PUT", cut_upload_after=20_000),
        Fault(match="/blobs/uploads/", method="PUT", status=503),
        Fault(match="/blobs/uploads/", method="POST", status=429, retry_after=0),
        Fault(match="/manifests/", method="PUT", status=502),
    ],
    ids=["cut-put", "503-put", "429-post", "502-manifest"],
)
def test_uploads_survive_faults(registry: Registry, image: BuiltImage, skopeo: str, fault: Fault) -> None:
    registry.push_image("faults/source", "v1", image)
    with FaultProxy(registry.url) as proxy:
        proxy.add(fault)
        ok(
            "copy",
            "-q",
            f"docker://{registry.host}/faults/source:v1",
            f"docker://{proxy.host}/faults/dest-{id(fault)}:v1",
        )
        assert proxy.seen(fault.match, fault.method)  # the fault did happen
    assert _raw(skopeo, f"{registry.host}/faults/dest-{id(fault)}:v1") == image.manifest


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        (Fault(match="/blobs/uploads/", method="PUT", status=413, times=None), 5, "quota"),
        (
            Fault(match="/manifests/", method="PUT", status=400, error_code="MANIFEST_INVALID", times=None),
            7,
            "MANIFEST_INVALID",
        ),
        (
            Fault(match="/blobs/uploads/", method="POST", status=403, error_code="DENIED", times=None),
            4,
            "denied",
        ),
    ],
    ids=["413-quota", "manifest-invalid", "denied"],
)
def test_refusals_are_one_line_and_leave_no_tag(
    registry: Registry, image: BuiltImage, fault: Fault, code: int, words: str
) -> None:
    registry.push_image("faults/refusal", "v1", image)
    repo = f"faults/refused-{code}"
    with FaultProxy(registry.url) as proxy:
        proxy.add(fault)
        proc = fails(
            "copy", "-q", f"docker://{registry.host}/faults/refusal:v1", f"docker://{proxy.host}/{repo}:v1"
        )
    assert proc.returncode == code, proc.stderr
    assert words.lower() in proc.stderr.lower()
    assert repo in proc.stderr
    # No tag names anything at the destination.
    status, _, _ = registry.client.request("GET", f"/v2/{repo}/manifests/v1", scope=f"repository:{repo}:pull")
    assert status == 404


def test_chunked_uploads_for_capped_request_bodies(registry: Registry, skopeo: str) -> None:
    big = images.build_image([[Entry.file("big.bin", bytes(range(256)) * 4000)]], compression="none")
    registry.push_image("push/chunked", "v1", big)
    layer = big.layers[0]
    with FaultProxy(registry.url) as proxy:
        ok("copy", "-q", "--upload-chunk-size", "100kB", f"docker://{registry.host}/push/chunked:v1",
           f"docker://{proxy.host}/push/chunked-copy:v1")  # fmt: skip
        patches = proxy.seen("/blobs/uploads/", "PATCH")
    # Every chunk at most 100 kB, the registry confirming each one (its Range checked), then one closing PUT.
    assert len(patches) == -(-layer.size // 100_000)
    assert _raw(skopeo, f"{registry.host}/push/chunked-copy:v1") == big.manifest
    bad = occystrap(
        "copy", "--upload-chunk-size", "lots", f"docker://{registry.host}/push/chunked:v1", "docker://x/y"
    )
    assert bad.returncode == 2 and "64MiB" in bad.stderr
