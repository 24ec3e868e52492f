"""`occystrap serve` judged by real clients: skopeo, podman, docker and occystrap itself.

Content comes from the real registry through `occystrap mirror` (a merged directory and
a bundle tarball), or is written directly (an OCI layout, docker-save tarballs); every
client must see the digests the source had.
"""

from __future__ import annotations

import signal
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ok
from tests.support import images
from tests.support.dockerd import DockerDaemon
from tests.support.images import BuiltImage, BuiltIndex, Entry
from tests.support.registry import Registry
from tests.support.serving import Served, serving, wait_for_line
from tests.support.validators import Podman, skopeo_copy, skopeo_inspect, skopeo_inspect_raw


@dataclass(frozen=True)
class Source:
    registry: Registry
    app_v1: BuiltImage
    app_v2: BuiltImage
    amd: BuiltImage
    arm: BuiltImage
    index: BuiltIndex
    merged: Path
    bundle: Path
    layout: Path


@pytest.fixture(scope="module")
def source(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Source:
    """Two tags of one repository and a two-platform index, mirrored from the registry."""
    work = tmp_path_factory.mktemp("serve-source")
    app_v1 = images.build_image([[Entry.file("app.txt", b"serve app v1\n")]], fmt="docker")
    app_v2 = images.build_image(
        [[Entry.file("app.txt", b"serve app v2\n")], [Entry.file("extra.txt", b"two\n" * 100)]], fmt="oci"
    )
    amd = images.build_image([[Entry.file("arch", b"serve amd64\n")]], fmt="oci", arch="amd64")
    arm = images.build_image([[Entry.file("arch", b"serve arm64\n")]], fmt="oci", arch="arm64", variant="v8")
    index = images.build_index([amd, arm])
    registry.push_image("serve/app", "v1", app_v1)
    registry.push_image("serve/app", "v2", app_v2)
    registry.push_index("serve/multi", "v1", index)
    spec = work / "spec.yaml"
    spec.write_text(
        f"images:\n  - name: {registry.host}/serve/app\n    tags: [v1, v2]\n"
        f"  - name: {registry.host}/serve/multi\n    tags: [v1]\n    platforms: all\n"
    )
    merged, bundle = work / "merged", work / "bundle.tar"
    ok("mirror", "-q", str(spec), str(merged))
    ok("mirror", "-q", str(spec), str(bundle))
    layout = images.write_oci_layout(work / "layout", index, "v1")
    return Source(registry, app_v1, app_v2, amd, arm, index, merged, bundle, layout)


@pytest.fixture(scope="module")
def merged(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    log = tmp_path_factory.mktemp("serve-merged") / "serve.log"
    with serving(source.merged, log=log) as served:
        yield served


@pytest.fixture(scope="module")
def bundle(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    log = tmp_path_factory.mktemp("serve-bundle") / "serve.log"
    with serving(source.bundle, log=log) as served:
        yield served


def _raw(served: Served, repo: str, reference: str) -> bytes:
    return skopeo_inspect_raw(f"docker://{served.ref(repo, reference)}")


@pytest.mark.parametrize("which", ["merged", "bundle"])
def test_skopeo_sees_the_source_digests(
    source: Source, which: str, request: pytest.FixtureRequest, skopeo: str, tmp_path: Path
) -> None:
    served: Served = request.getfixturevalue(which)
    # By tag, by manifest digest, by index digest and by each child's digest: the exact bytes.
    assert _raw(served, "serve/app", "v1") == source.app_v1.manifest
    assert _raw(served, "serve/app", source.app_v2.manifest_digest) == source.app_v2.manifest
    assert _raw(served, "serve/multi", "v1") == source.index.data
    assert _raw(served, "serve/multi", source.index.digest) == source.index.data
    for child in (source.amd, source.arm):
        assert _raw(served, "serve/multi", child.manifest_digest) == child.manifest
    ref = f"docker://{served.ref('serve/multi', 'v1')}"
    assert skopeo_inspect(ref)["Digest"] == source.index.digest
    out = tmp_path / "copy"
    skopeo_copy(ref, f"oci:{out}:v1", all_images=True)
    assert skopeo_inspect_raw(f"oci:{out}:v1") == source.index.data
    for child in (source.amd, source.arm):
        assert (out / "blobs" / "sha256" / child.config_digest[7:]).read_bytes() == child.config
        for layer in child.layers:
            assert (out / "blobs" / "sha256" / layer.digest[7:]).read_bytes() == layer.data
    tags = skopeo_inspect(f"docker://{served.ref('serve/app', 'v1')}")["RepoTags"]
    assert tags == ["v1", "v2"]


def test_skopeo_picks_each_platform(source: Source, merged: Served, skopeo: str) -> None:
    ref = f"docker://{merged.ref('serve/multi', 'v1')}"
    for child, arch in ((source.amd, "amd64"), (source.arm, "arm64")):
        args = [skopeo, "--override-arch", arch, "inspect", "--config", "--raw", "--tls-verify=false"]
        config = subprocess.run([*args, "--no-creds", ref], capture_output=True, check=True).stdout
        assert images.sha256_digest(config) == child.config_digest


def test_podman_pulls_by_tag_digest_and_platform(source: Source, merged: Served, podman: Podman) -> None:
    def pulled(ref: str, *options: str) -> str:
        image_id = podman("pull", "--tls-verify=false", *options, ref).stdout.strip().splitlines()[-1]
        return f"sha256:{image_id}"

    assert pulled(merged.ref("serve/app", "v1")) == source.app_v1.config_digest
    assert pulled(merged.ref("serve/app", source.app_v2.manifest_digest)) == source.app_v2.config_digest
    assert pulled(merged.ref("serve/multi", "v1"), "--arch", "arm64") == source.arm.config_digest
    assert pulled(merged.ref("serve/multi", "v1"), "--arch", "amd64") == source.amd.config_digest
    by_index_digest = merged.ref("serve/multi", source.index.digest)
    assert pulled(by_index_digest, "--arch", "arm64") == source.arm.config_digest
    [info] = podman.inspect(merged.ref("serve/app", "v1"))
    assert info["RootFS"]["Layers"] == source.app_v1.diff_ids


def test_podman_pulls_from_a_bundle_tarball_in_place(source: Source, bundle: Served, podman: Podman) -> None:
    before = sorted(p.name for p in source.bundle.parent.iterdir())
    out = podman("pull", "--tls-verify=false", bundle.ref("serve/app", "v2")).stdout.strip().splitlines()
    assert f"sha256:{out[-1]}" == source.app_v2.config_digest
    # Nothing was unpacked beside the tarball.
    assert sorted(p.name for p in source.bundle.parent.iterdir()) == before


def test_docker_pulls_by_tag_digest_and_platform(
    source: Source, merged: Served, docker: DockerDaemon
) -> None:
    tag_ref = merged.ref("serve/app", "v1")
    by_digest = merged.ref("serve/app", source.app_v2.manifest_digest)
    index_ref = merged.ref("serve/multi", "v1")
    try:
        assert docker.pull(tag_ref) == source.app_v1.manifest_digest
        assert docker.inspect(tag_ref)["Id"] == source.app_v1.config_digest
        assert docker.pull(by_digest) == source.app_v2.manifest_digest
        assert docker.inspect(by_digest)["Id"] == source.app_v2.config_digest
        assert docker.pull(index_ref) == source.index.digest
        assert docker.inspect(index_ref)["Id"] == source.amd.config_digest
        docker("pull", "--platform", "linux/arm64", index_ref)
        assert docker.inspect(index_ref)["Id"] == source.arm.config_digest
    finally:
        docker.rmi(tag_ref, by_digest, index_ref)


@pytest.mark.parametrize("which", ["merged", "bundle"])
def test_occystrap_fetches_from_serve(
    source: Source, which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    served: Served = request.getfixturevalue(which)
    out = tmp_path / "app.tar"
    ok("fetch-to-tarfile", "-q", f"{served.host}/serve/app", "v2", str(out))
    ok("verify", "-q", str(out))
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
    assert f"blobs/sha256/{source.app_v2.manifest_digest[7:]}" in names
    assert {f"blobs/sha256/{layer.digest[7:]}" for layer in source.app_v2.layers} <= names
    arm = tmp_path / "arm.tar"
    ok("fetch-to-tarfile", "-q", "--platform", "linux/arm64", f"{served.host}/serve/multi", "v1", str(arm))
    with tarfile.open(arm) as tf:
        assert f"blobs/sha256/{source.arm.config_digest[7:]}" in tf.getnames()
    pinned = tmp_path / "pinned.tar"
    ok("fetch-to-tarfile", "-q", f"{served.host}/serve/app", source.app_v1.manifest_digest, str(pinned))
    ok("verify", "-q", str(pinned))


def test_an_oci_layout_directory(source: Source, skopeo: str, tmp_path: Path) -> None:
    # Its tag is bare (`v1`): it is served under the directory's name, or --repository.
    with serving(source.layout, log=tmp_path / "a.log") as served:
        assert served.get("/v2/_catalog").json() == {"repositories": ["layout"]}
        assert _raw(served, "layout", "v1") == source.index.data
    with serving(source.layout, "--repository", "team/multi", log=tmp_path / "b.log") as served:
        assert _raw(served, "team/multi", source.arm.manifest_digest) == source.arm.manifest
        out = tmp_path / "copy"
        skopeo_copy(f"docker://{served.ref('team/multi', 'v1')}", f"oci:{out}:v1", all_images=True)
        assert skopeo_inspect_raw(f"oci:{out}:v1") == source.index.data


def test_docker_save_tarballs(source: Source, skopeo: str, tmp_path: Path) -> None:
    image = images.build_image([[Entry.file("c.txt", b"classic\n")], [Entry.file("d.txt", b"two\n")]])
    classic = images.write_docker_archive(tmp_path / "classic.tar", image, ["example.com/team/classic:v1"])
    with serving(classic, log=tmp_path / "classic.log") as served:
        # A classic save holds no registry manifest: the one served is made from its files,
        # with the image's config and uncompressed layers.
        ref = f"docker://{served.ref('team/classic', 'v1')}"
        info = skopeo_inspect(ref)
        assert info["Layers"] == image.diff_ids
        out = tmp_path / "classic-copy"
        skopeo_copy(ref, f"dir:{out}")  # dir: keeps every blob as served
        assert (out / image.config_digest[7:]).read_bytes() == image.config
        for layer in image.layers:
            assert (out / layer.diff_id[7:]).read_bytes() == layer.tar
    # Docker 25's save (what fetch-to-tarfile writes): the registry's manifest, byte for byte.
    fetched = tmp_path / "fetched.tar"
    ok("fetch-to-tarfile", "-q", f"{source.registry.host}/serve/app", "v1", str(fetched))
    with serving(fetched, log=tmp_path / "fetched.log") as served:
        assert _raw(served, "serve/app", "v1") == source.app_v1.manifest
        oci_tar = images.write_oci_archive(tmp_path / "oci.tar", source.app_v2, "v2")
    with serving(oci_tar, "--repository", "oci/archive", log=tmp_path / "oci.log") as served:
        assert _raw(served, "oci/archive", "v2") == source.app_v2.manifest


def test_sighup_reads_the_directory_again(source: Source, tmp_path: Path) -> None:
    registry = source.registry
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"images:\n  - name: {registry.host}/serve/app\n    tags: [v1]\n")
    merged = tmp_path / "merged"
    ok("mirror", "-q", str(spec), str(merged))
    with serving(merged, log=tmp_path / "serve.log") as served:
        assert served.get("/v2/serve/app/tags/list").json()["tags"] == ["v1"]
        # A broken catalog (a mirror run gone wrong): the re-read fails, the old content stays.
        catalog = merged / "catalog.json"
        good = catalog.read_bytes()
        catalog.write_text("{not json")
        served.proc.send_signal(signal.SIGHUP)
        wait_for_line(served, "occystrap: warning: re-reading failed")
        assert served.get("/v2/serve/app/manifests/v1").body == source.app_v1.manifest
        catalog.write_bytes(good)
        spec.write_text(f"images:\n  - name: {registry.host}/serve/app\n    tags: [v1, v2]\n")
        ok("mirror", "-q", str(spec), str(merged))
        served.proc.send_signal(signal.SIGHUP)
        wait_for_line(served, "occystrap: reloaded: serving")
        assert served.get("/v2/serve/app/tags/list").json()["tags"] == ["v1", "v2"]
        assert _raw(served, "serve/app", "v2") == source.app_v2.manifest
