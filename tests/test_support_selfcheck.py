"""Quick checks that the test-support fixtures themselves work."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import settled
from tests.support.images import (
    BuiltImage,
    build_image,
    build_index,
    build_layer,
    build_sample_image,
    file,
    merge_layers,
    sample_layers,
    whiteout,
    write_docker_archive,
    write_oci_layout,
)
from tests.support.registry import PASSWORD, SAMPLE_REPO, SAMPLE_TAG, USERNAME, Registry, RegistryClient
from tests.support.validators import (
    Podman,
    skopeo_inspect,
    skopeo_inspect_raw,
    umoci_unpack,
)

CREDS = f"{USERNAME}:{PASSWORD}"


def _get(reg: Registry, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection(reg.host, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


# -- images ----------------------------------------------------------------


def test_images_are_deterministic() -> None:
    a, b = build_sample_image(), build_sample_image()
    assert a.manifest == b.manifest and a.config == b.config
    assert [layer.data for layer in a.layers] == [layer.data for layer in b.layers]
    oci = build_sample_image(fmt="oci", compression="zstd")
    assert oci.diff_ids == a.diff_ids  # same tars, different compression
    assert oci.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert a.layers[0].media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert json.loads(a.config)["rootfs"]["diff_ids"] == a.diff_ids


def test_zstd_requires_oci() -> None:
    with pytest.raises(ValueError):
        build_layer([file("a", b"x")], "zstd", "docker")


def test_merge_layers_whiteout_is_component_wise() -> None:
    fs = merge_layers(sample_layers())
    assert "usr/share/locale/de_CH/x" in fs
    assert "usr/share/locale/de" not in fs and "usr/share/locale/de/x" not in fs
    assert "usr/lib/libfoo.so.1" not in fs  # opaque dir
    assert fs["etc/motd"].content == b"motd is back in layer 3\n"
    assert fs["opt/app/config.yml"].content == b"key: layer3\n"
    assert not any(".wh." in p for p in fs)
    assert merge_layers([[file("a/b", b"1")], [whiteout("a/b")]]) == {}


# -- registries --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["registry", "basic_registry", "token_registry"])
def test_push_and_inspect(
    kind: str, request: pytest.FixtureRequest, sample_built_image: BuiltImage, skopeo: str
) -> None:
    reg: Registry = request.getfixturevalue(kind)
    digest = reg.push_image(SAMPLE_REPO, SAMPLE_TAG, sample_built_image)
    assert digest == sample_built_image.manifest_digest

    ref = f"docker://{reg.host}/{SAMPLE_REPO}:{SAMPLE_TAG}"
    info = skopeo_inspect(ref, creds=CREDS if reg.auth else None)
    assert info["Digest"] == sample_built_image.manifest_digest
    assert info["Layers"] == [layer.digest for layer in sample_built_image.layers]
    assert skopeo_inspect_raw(ref, creds=CREDS if reg.auth else None) == sample_built_image.manifest


def test_sample_image_fixture(sample_image: tuple[Registry, BuiltImage]) -> None:
    reg, image = sample_image
    content_type, body = reg.client.get_manifest(SAMPLE_REPO, SAMPLE_TAG)
    assert (content_type, body) == (image.manifest_media_type, image.manifest)


def test_token_registry_anonymous_pull(
    token_registry: Registry, sample_built_image: BuiltImage, skopeo: str
) -> None:
    token_registry.push_image(SAMPLE_REPO, SAMPLE_TAG, sample_built_image)
    before = token_registry.token_requests
    info = skopeo_inspect(f"docker://{token_registry.host}/{SAMPLE_REPO}:{SAMPLE_TAG}")
    assert info["Digest"] == sample_built_image.manifest_digest
    assert token_registry.token_requests > before
    assert token_registry.token_server is not None
    last = token_registry.token_server.requests[-1]
    assert last.user is None and all(g["actions"] == ["pull"] for g in last.granted)

    # Anonymous tokens never allow push.
    anon = RegistryClient(token_registry.host)
    status, headers, _ = anon.request(
        "POST", f"/v2/{SAMPLE_REPO}/blobs/uploads/", b"", scope=f"repository:{SAMPLE_REPO}:pull,push"
    )
    assert status == 401 and headers["www-authenticate"].startswith("Bearer ")


def test_token_server_rejects_wrong_password(token_registry: Registry) -> None:
    assert token_registry.token_server is not None
    auth = base64.b64encode(b"alice:wrong").decode()
    conn = http.client.HTTPConnection(f"127.0.0.1:{token_registry.token_server.port}", timeout=10)
    conn.request(
        "GET",
        "/token?service=test-registry&scope=repository:x:pull",
        headers={"Authorization": f"Basic {auth}"},
    )
    assert conn.getresponse().status == 401
    conn.close()


def test_basic_registry_refuses_anonymous(
    basic_registry: Registry, sample_built_image: BuiltImage, skopeo: str
) -> None:
    basic_registry.push_image(SAMPLE_REPO, SAMPLE_TAG, sample_built_image)
    status, headers = _get(basic_registry, "/v2/")
    assert status == 401 and headers["www-authenticate"].startswith("Basic realm=")
    with pytest.raises(AssertionError):
        skopeo_inspect(f"docker://{basic_registry.host}/{SAMPLE_REPO}:{SAMPLE_TAG}")


def test_oci_index_roundtrip(registry: Registry, skopeo: str) -> None:
    spec = [[file("hello", b"hi\n")]]
    amd64 = build_image(spec, fmt="oci", arch="amd64")
    arm64 = build_image(spec, fmt="oci", arch="arm64", variant="v8")
    index = build_index([amd64, arm64], fmt="oci")
    assert registry.push_index("test/multi", "v1", index) == index.digest

    ref = f"docker://{registry.host}/test/multi:v1"
    assert skopeo_inspect_raw(ref) == index.data
    platforms = [m["platform"] for m in json.loads(index.data)["manifests"]]
    assert platforms[1] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    # skopeo resolves the index to the arm64/v8 child (its "Digest" stays the index's).
    out = subprocess.run(
        [skopeo, "--override-arch", "arm64", "--override-variant", "v8",
         "inspect", "--config", "--raw", "--tls-verify=false", "--no-creds", ref],
        capture_output=True, check=True,
    )  # fmt: skip
    assert out.stdout == arm64.config


def test_registry_log_counts(
    registry_factory: Callable[..., Registry], sample_built_image: BuiltImage
) -> None:
    reg = registry_factory()
    reg.push_image("count/me", "v1", sample_built_image)
    layer = sample_built_image.layers[0]
    assert reg.client.get_blob("count/me", layer.digest) == layer.data
    assert settled(lambda: reg.bytes_served(layer.digest)) == layer.size
    assert settled(lambda: reg.request_count(f"/blobs/{layer.digest}", method="GET")) == 1


# -- validators --------------------------------------------------------------


def test_podman_loads_docker_archive(podman: Podman, tmp_path: Path, sample_built_image: BuiltImage) -> None:
    tar = write_docker_archive(tmp_path / "img.tar", sample_built_image, ["127.0.0.1:5000/test/sample:v1"])
    loaded = podman.inspect(*podman.load(tar))
    assert len(loaded) == 1
    assert "sha256:" + loaded[0]["Id"] == sample_built_image.config_digest
    assert loaded[0]["RootFS"]["Layers"] == sample_built_image.diff_ids
    assert loaded[0]["RepoTags"] == ["127.0.0.1:5000/test/sample:v1"]


def test_umoci_matches_merge_model(umoci: str, tmp_path: Path) -> None:
    layers = sample_layers()
    image = build_image(layers, fmt="oci")
    rootfs = umoci_unpack(write_oci_layout(tmp_path / "oci", image, "ref"), "ref", tmp_path / "bundle")
    on_disk = {p.relative_to(rootfs).as_posix() for p in rootfs.rglob("*")}
    assert on_disk == set(merge_layers(layers))
    assert (rootfs / "usr/bin/busybox-hl").stat().st_ino == (rootfs / "bin/busybox").stat().st_ino
