"""fetch-to-tarfile end to end: real registry in, real consumers (podman, skopeo) judging the output."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from tests.helpers import fails, leftovers, ok
from tests.support import images
from tests.support.images import BuiltImage
from tests.support.registry import Registry
from tests.support.validators import Podman, skopeo_inspect

PASSWORD = "s3cret-PASSWORD-marker"


def _members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _check_loaded(podman: Podman, tar: Path, image: BuiltImage, name: str) -> None:
    loaded = podman.load(tar)
    assert name in loaded, loaded
    [info] = podman.inspect(name)
    assert "sha256:" + info["Id"] == image.config_digest
    assert name in info["RepoTags"]
    assert info["RootFS"]["Layers"] == image.diff_ids


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("docker", "gzip"), ("oci", "gzip"), ("oci", "zstd"), ("oci", "none"), ("docker", "none")],
)
def test_fetch_loads_in_podman_and_skopeo(
    registry: Registry, podman: Podman, skopeo: str, tmp_path: Path, fmt: str, compression: str
) -> None:
    image = images.build_sample_image(fmt=fmt, compression=compression)  # type: ignore[arg-type]
    repo = f"team/{fmt}-{compression}"
    registry.push_image(repo, "v1", image)
    out = tmp_path / "out.tar"
    ok("fetch-to-tarfile", "--progress", "none", f"{registry.host}/{repo}", "v1", str(out))
    assert leftovers(tmp_path) == ["out.tar", "podman"]

    members = _members(out)
    # Layers are kept exactly as served, and the config and manifest hash to their names.
    for layer in image.layers:
        assert members[f"blobs/sha256/{layer.digest[7:]}"] == layer.data
    assert members[f"blobs/sha256/{image.config_digest[7:]}"] == image.config
    assert members[f"blobs/sha256/{image.manifest_digest[7:]}"] == image.manifest
    [entry] = json.loads(members["manifest.json"])
    assert entry["RepoTags"] == [f"{registry.host}/{repo}:v1"]

    for transport in ("docker-archive", "oci-archive"):
        info = skopeo_inspect(f"{transport}:{out}")
        assert info["Architecture"] == "amd64"
        assert len(info["Layers"]) == 3
    _check_loaded(podman, out, image, f"{registry.host}/{repo}:v1")


def test_uncompressed_layers(registry: Registry, podman: Podman, skopeo: str, tmp_path: Path) -> None:
    image = images.build_sample_image(fmt="oci", compression="zstd")
    registry.push_image("team/plain", "v1", image)
    out = tmp_path / "plain.tar"
    ok("fetch-to-tarfile", "--quiet", "--uncompressed-layers", f"{registry.host}/team/plain", "v1", str(out))
    members = _members(out)
    [entry] = json.loads(members["manifest.json"])
    for path, diff_id in zip(entry["Layers"], image.diff_ids, strict=True):
        data = members[path]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
        assert data[257:262] == b"ustar"  # a plain tar, not compressed
    skopeo_inspect(f"docker-archive:{out}")
    skopeo_inspect(f"oci-archive:{out}")
    _check_loaded(podman, out, image, f"{registry.host}/team/plain:v1")


def test_docker_hub_style_repo_tags_and_digest_refs(registry: Registry, tmp_path: Path) -> None:
    image = images.build_sample_image()
    registry.push_image("library/busybox", "1.36", image)
    out = tmp_path / "a.tar"
    ok("fetch-to-tarfile", "-q", f"{registry.host}/library/busybox", "1.36", str(out))
    [entry] = json.loads(_members(out)["manifest.json"])
    # Not reduced to the last path part: the registry host stays in the familiar name.
    assert entry["RepoTags"] == [f"{registry.host}/library/busybox:1.36"]

    by_tag_arg = tmp_path / "b.tar"
    ok("fetch-to-tarfile", "-q", f"{registry.host}/library/busybox", image.manifest_digest, str(by_tag_arg))
    at_digest = tmp_path / "c.tar"
    ok(
        "fetch-to-tarfile",
        "-q",
        f"{registry.host}/library/busybox@{image.manifest_digest}",
        "latest",
        str(at_digest),
    )
    for path in (by_tag_arg, at_digest):
        members = _members(path)
        assert members[f"blobs/sha256/{image.manifest_digest[7:]}"] == image.manifest
        [entry] = json.loads(members["manifest.json"])
        assert entry["RepoTags"] in ([], [f"{registry.host}/library/busybox:latest"])


def test_multi_platform_index(registry: Registry, tmp_path: Path) -> None:
    amd = images.build_sample_image(fmt="oci")
    arm = images.build_sample_image(fmt="oci", arch="arm64", variant="v8")
    index = images.build_index([amd, arm], fmt="oci")
    registry.push_index("team/multi", "v1", index)
    ref = f"{registry.host}/team/multi"

    default = tmp_path / "amd.tar"
    ok("fetch-to-tarfile", "-q", ref, "v1", str(default))
    assert f"blobs/sha256/{amd.config_digest[7:]}" in _members(default)

    arm_out = tmp_path / "arm.tar"
    ok("fetch-to-tarfile", "-q", "--platform", "linux/arm64", ref, "v1", str(arm_out))
    members = _members(arm_out)
    assert f"blobs/sha256/{arm.config_digest[7:]}" in members
    index_doc = json.loads(members["index.json"])
    assert index_doc["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}

    proc = fails("fetch-to-tarfile", "-q", "--platform", "linux/s390x", ref, "v1", str(tmp_path / "x.tar"))
    assert "linux/amd64" in proc.stderr and "linux/arm64/v8" in proc.stderr
    assert not (tmp_path / "x.tar").exists()


def test_docker_manifest_list(registry: Registry, tmp_path: Path) -> None:
    amd = images.build_sample_image(fmt="docker")
    arm = images.build_sample_image(fmt="docker", arch="arm", variant="v6")
    registry.push_index("team/dlist", "v1", images.build_index([amd, arm], fmt="docker"))
    out = tmp_path / "arm.tar"
    ok("fetch-to-tarfile", "-q", "--platform", "linux/arm/v7", f"{registry.host}/team/dlist", "v1", str(out))
    assert f"blobs/sha256/{arm.config_digest[7:]}" in _members(out)


def test_basic_auth(basic_registry: Registry, tmp_path: Path) -> None:
    image = images.build_sample_image()
    basic_registry.push_image("team/secret", "v1", image)
    ref = f"{basic_registry.host}/team/secret"
    out = tmp_path / "out.tar"
    ok("fetch-to-tarfile", "-q", "--username", "alice", "--password", PASSWORD, ref, "v1", str(out))
    assert out.exists()
    out.unlink()
    ok(
        "fetch-to-tarfile",
        "-q",
        ref,
        "v1",
        str(out),
        env={"OCCYSTRAP_USERNAME": "alice", "OCCYSTRAP_PASSWORD": PASSWORD},
    )
    out.unlink()

    config = tmp_path / "dockercfg"
    config.mkdir()
    import base64

    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {basic_registry.host: {"auth": encoded}}}))
    ok("fetch-to-tarfile", "-q", ref, "v1", str(out), env={"DOCKER_CONFIG": str(config)})
    out.unlink()

    proc = fails("fetch-to-tarfile", "-q", ref, "v1", str(out), env={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert "credentials" in proc.stderr
    proc = fails("fetch-to-tarfile", "-q", "--username", "alice", "--password", "wrong", ref, "v1", str(out))
    assert "refused" in proc.stderr and "wrong" not in proc.stderr
    assert leftovers(tmp_path) == ["dockercfg"]


def test_token_auth_anonymous_and_with_credentials(token_registry: Registry, tmp_path: Path) -> None:
    image = images.build_sample_image(fmt="oci")
    token_registry.push_image("team/tok", "v1", image)
    ref = f"{token_registry.host}/team/tok"
    before = token_registry.token_requests
    out = tmp_path / "anon.tar"
    ok("fetch-to-tarfile", "-q", ref, "v1", str(out), env={"DOCKER_CONFIG": str(tmp_path)})
    # One token for the repository's pull scope serves the manifest, config and every layer.
    assert token_registry.token_requests - before == 1
    assert _members(out)[f"blobs/sha256/{image.config_digest[7:]}"] == image.config

    out2 = tmp_path / "creds.tar"
    ok("fetch-to-tarfile", "-q", "--username", "alice", "--password", PASSWORD, ref, "v1", str(out2))
    proc = fails(
        "fetch-to-tarfile",
        "-q",
        "--username",
        "alice",
        "--password",
        "nope",
        ref,
        "v1",
        str(tmp_path / "x.tar"),
    )
    assert "refused" in proc.stderr
    assert not (tmp_path / "x.tar").exists()


def test_unknown_tag_repo_and_registry(
    registry: Registry, sample_image: tuple[Registry, BuiltImage], tmp_path: Path
) -> None:
    out = tmp_path / "out.tar"
    proc = fails("fetch-to-tarfile", "-q", f"{registry.host}/test/sample", "nosuchtag", str(out))
    assert "nosuchtag" in proc.stderr and "not found" in proc.stderr
    proc = fails("fetch-to-tarfile", "-q", f"{registry.host}/no/such/repo", "v1", str(out))
    assert "not found" in proc.stderr
    proc = fails("fetch-to-tarfile", "-q", "--retries", "0", "127.0.0.1:9/x/y", "v1", str(out))
    assert "127.0.0.1:9" in proc.stderr
    proc = fails("fetch-to-tarfile", "-q", "Not/Valid", "v1", str(out))
    assert "invalid" in proc.stderr
    assert leftovers(tmp_path) == []


def _storage_blob(reg: Registry, digest: str) -> Path:
    hexpart = digest.split(":")[1]
    return reg.workdir / "storage" / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def test_corrupt_blob_is_refused_and_nothing_left(registry_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg = registry_factory()
    image = images.build_sample_image()
    reg.push_image("team/corrupt", "v1", image)
    blob = _storage_blob(reg, image.layers[1].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = tmp_path / "out" / "x.tar"
    out.parent.mkdir()
    proc = fails("fetch-to-tarfile", "-q", f"{reg.host}/team/corrupt", "v1", str(out))
    assert image.layers[1].digest in proc.stderr
    assert leftovers(out.parent) == []


def test_diff_id_mismatch_is_refused(registry: Registry, tmp_path: Path) -> None:
    image = images.build_sample_image()
    config = json.loads(image.config)
    config["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    bad = images.build_image(image.layers, fmt="docker", extra_config={"rootfs": config["rootfs"]})
    registry.push_image("team/baddiff", "v1", bad)
    proc = fails("fetch-to-tarfile", "-q", f"{registry.host}/team/baddiff", "v1", str(tmp_path / "x.tar"))
    assert "diff" in proc.stderr or "uncompresses" in proc.stderr
    assert leftovers(tmp_path) == []


def test_layer_count_mismatch_is_refused(registry: Registry, tmp_path: Path) -> None:
    image = images.build_sample_image()
    config = json.loads(image.config)
    config["rootfs"]["diff_ids"].pop()
    bad = images.build_image(image.layers, fmt="docker", extra_config={"rootfs": config["rootfs"]})
    registry.push_image("team/badcount", "v1", bad)
    proc = fails("fetch-to-tarfile", "-q", f"{registry.host}/team/badcount", "v1", str(tmp_path / "x.tar"))
    assert "diff_ids" in proc.stderr
    assert leftovers(tmp_path) == []


def _push_raw(reg: Registry, repo: str, config: bytes, layer: bytes, layer_type: str) -> None:
    config_digest = reg.push_blob(repo, config)
    layer_digest = reg.push_blob(repo, layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                   "digest": config_digest},
        "layers": [{"mediaType": layer_type, "size": len(layer), "digest": layer_digest}],
    }  # fmt: skip
    reg.push_manifest(repo, "v1", json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")


@pytest.mark.parametrize(
    ("case", "needle"),
    [("corrupt-gzip", "corrupt"), ("corrupt-zstd", "corrupt"), ("config-not-json", "malformed JSON")],
)
def test_bad_content_with_correct_digests(registry: Registry, tmp_path: Path, case: str, needle: str) -> None:
    good = images.build_layer([images.file("a.txt", b"hello\n" * 1000)], compression="gzip")
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                         "diff_ids": [good.diff_id]}}).encode()  # fmt: skip
    layer, layer_type = good.data, "application/vnd.oci.image.layer.v1.tar+gzip"
    if case == "corrupt-gzip":
        # Digest and size are honest; the bytes inside are not valid deflate.
        layer = good.data[:10] + b"\xff" * 40 + good.data[50:]
    elif case == "corrupt-zstd":
        layer, layer_type = b"\x28\xb5\x2f\xfd" + b"\xff" * 200, "application/vnd.oci.image.layer.v1.tar+zstd"
    else:
        config = b"{not json"
    repo = f"bad/{case}"
    _push_raw(registry, repo, config, layer, layer_type)
    out = tmp_path / "x.tar"
    proc = fails("fetch-to-tarfile", "-q", f"{registry.host}/{repo}", "v1", str(out))
    assert needle in proc.stderr
    assert leftovers(tmp_path) == []
