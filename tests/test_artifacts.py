"""Artifacts are content, not obstacles: signatures, attestations, SBOMs, OCI 1.1 artifacts and
Helm charts are carried as blobs (never unpacked), listed as artifacts, and travel with their
images when asked (`referrers`), with their digests unchanged."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import fails, ok, read_lock
from tests.support import artifacts
from tests.support.artifacts import Built
from tests.support.images import BuiltImage
from tests.support.registry import Registry
from tests.support.validators import Podman


@pytest.fixture(scope="module")
def signed(registry: Registry) -> tuple[str, BuiltImage, dict[str, Built]]:
    """A repository whose image is signed, attested, SBOM'd (cosign tags) and has an OCI 1.1
    referrer listed in a tag-schema index; plus a Helm chart under its own tag."""
    repo = "wild/signed"
    image = artifacts.runnable_subject("signed")
    registry.push_image(repo, "v1", image)
    made: dict[str, Built] = {}
    for kind in ("sig", "att", "sbom"):
        made[kind] = artifacts.cosign(kind, image)
        made[kind].push(registry, repo, artifacts.cosign_tag(image, kind))
    made["referrer"] = artifacts.oci_referrer(image)
    made["referrer"].push(registry, repo)
    made["schema"] = artifacts.referrers_index([made["referrer"]])
    made["schema"].push(registry, repo, f"sha256-{image.manifest_digest[7:]}")
    made["chart"] = artifacts.helm_chart()
    made["chart"].push(registry, repo, "chart-0.1.0")
    return f"{registry.host}/{repo}", image, made


def _catalog(dest: Path) -> dict[str, dict[str, dict[str, object]]]:
    return json.loads((dest / "catalog.json").read_text())["images"]  # type: ignore[no-any-return]


def test_mirroring_every_tag_carries_artifacts(
    signed: tuple[str, BuiltImage, dict[str, Built]], tmp_path: Path
) -> None:
    name, image, made = signed
    spec = tmp_path / "s.yaml"
    spec.write_text(f"images:\n  - name: {name}\n    include: ['.*']\n")
    dest = tmp_path / "m"
    proc = ok("mirror", "--progress", "plain", str(spec), str(dest))
    tags = _catalog(dest)[name]
    assert tags["v1"]["kind"] == "image"
    sig = tags[artifacts.cosign_tag(image, "sig")]
    assert sig["kind"] == "artifact" and sig["manifest_digest"] == made["sig"].digest
    assert tags["chart-0.1.0"]["artifact_type"] == artifacts.HELM_CONFIG
    assert tags[f"sha256-{image.manifest_digest[7:]}"]["kind"] == "index"
    # Their blobs are stored as they are (never unpacked), and the whole layout verifies.
    for built in made.values():
        for digest, data in built.blobs.items():
            assert (dest / "blobs" / "sha256" / digest[7:]).read_bytes() == data
    assert "artifact" in proc.stderr
    ok("verify", str(dest))
    # A bundle too; and docker/podman load still see only the runnable image.
    bundle = tmp_path / "b.tar"
    ok("mirror", "-q", str(spec), str(bundle))
    ok("verify", str(bundle))
    doc = json.loads(
        ok("inspect", "--json", f"oci:{dest}:{name}:{artifacts.cosign_tag(image, 'att')}").stdout
    )
    assert doc["kind"] == "artifact" and doc["blobs"][1]["media_type"] == artifacts.DSSE


def test_fetching_an_artifact_as_an_image_says_what_it_is(
    signed: tuple[str, BuiltImage, dict[str, Built]], tmp_path: Path
) -> None:
    name, image, _ = signed
    proc = fails("fetch-to-tarfile", name, artifacts.cosign_tag(image, "sig"), str(tmp_path / "x.tar"))
    assert proc.returncode == 7
    assert "not a runnable image" in proc.stderr and "mirror" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_referrers_travel_with_their_image(
    signed: tuple[str, BuiltImage, dict[str, Built]],
    registry_factory: Callable[..., Registry],
    skopeo: str,
    tmp_path: Path,
) -> None:
    name, image, made = signed
    spec = tmp_path / "s.yaml"
    spec.write_text(f"referrers: true\nimages:\n  - name: {name}\n    tags: [v1]\n")
    bundle = tmp_path / "b.tar"
    ok("mirror", "-q", str(spec), str(bundle))
    lock = read_lock(tmp_path / "b.tar.lock")[name]
    assert set(lock) == {
        "v1",
        *(artifacts.cosign_tag(image, k) for k in ("sig", "att", "sbom")),
        f"sha256-{image.manifest_digest[7:]}",  # the tag schema's index, with the OCI 1.1 referrer in it
    }
    assert "chart-0.1.0" not in lock  # not a referrer: only what refers to v1 came along
    # Pushed on to another registry, every digest is unchanged (cosign verifies by them).
    dest = registry_factory()
    ok("push", "-q", str(bundle), f"docker://{dest.host}/site")
    repo = name.partition("/")[2]
    for tag, built in [(artifacts.cosign_tag(image, k), made[k]) for k in ("sig", "att", "sbom")]:
        raw = subprocess.run(
            [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{dest.host}/site/{repo}:{tag}"],
            capture_output=True,
            check=True,
        ).stdout
        assert raw == built.data
    assert dest.client.get_manifest(f"site/{repo}", made["referrer"].digest)[1] == made["referrer"].data


def test_buildx_attestations_stay_with_their_index(
    registry: Registry, podman: Podman, tmp_path: Path
) -> None:
    image = artifacts.runnable_subject("buildx")
    registry.push_image("wild/buildx", image.manifest_digest, image)
    index, attestation = artifacts.buildx_index(image)
    attestation.push(registry, "wild/buildx")
    index.push(registry, "wild/buildx", "v1")
    name = f"{registry.host}/wild/buildx"
    spec = tmp_path / "s.yaml"
    spec.write_text(f"images:\n  - name: {name}\n    tags: [v1]\n    platforms: all\n")
    dest = tmp_path / "m"
    ok("mirror", "-q", str(spec), str(dest))
    record = _catalog(dest)[name]["v1"]
    assert record["manifest_digest"] == index.digest
    assert list(record["artifacts"]) == [attestation.digest]  # type: ignore[call-overload]
    ok("verify", str(dest))
    bundle = tmp_path / "b.tar"
    ok("mirror", "-q", str(spec), str(bundle))
    assert f"{name}:v1" in {n.removeprefix("localhost/") for n in podman.load(bundle)}
    # Picking one platform leaves the attestation behind, and says so.
    proc = ok("copy", "--progress", "plain", f"docker://{name}:v1", str(tmp_path / "one.tar"))
    assert "--all copies all" in proc.stderr
