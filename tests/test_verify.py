"""occystrap verify: what fetch, mirror and other tools write verifies OK; each kind of damage is named."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fails, flip_byte, ok
from tests.support import images
from tests.support.images import BuiltImage, Entry
from tests.support.registry import Registry
from tests.support.validators import Podman, skopeo_copy

INTEGRITY_EXIT = 6


def _mixed_image() -> BuiltImage:
    """One OCI image with a gzip, a zstd and a plain layer: every decoder verify needs."""
    layers = [
        images.build_layer([Entry.file("a.txt", b"gzip layer\n" * 500)], "gzip", "oci"),
        images.build_layer([Entry.file("b.txt", b"zstd layer\n" * 500)], "zstd", "oci"),
        images.build_layer([Entry.file("c.txt", b"plain layer\n" * 50)], "none", "oci"),
    ]
    return images.build_image(layers, fmt="oci")


@pytest.fixture(scope="module")
def pushed(registry: Registry) -> dict[str, BuiltImage]:
    """verify/mixed:v1 (gzip + zstd + plain layers), verify/sample:v1 and :v2 (docker, shared base)."""
    mixed = _mixed_image()
    registry.push_image("verify/mixed", "v1", mixed)
    base = images.build_layer([Entry.file("base.txt", b"shared base\n" * 400)])
    out = {"mixed": mixed}
    for tag in ("v1", "v2"):
        image = images.build_image([base, [Entry.file("app.txt", f"app {tag}\n".encode())]])
        registry.push_image("verify/sample", tag, image)
        out[tag] = image
    return out


def _verify_ok(path: Path) -> dict[str, Any]:
    proc = ok("verify", str(path))
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"OK: {path} ("), proc.stdout
    assert proc.stderr == ""
    doc: dict[str, Any] = json.loads(ok("verify", "--json", str(path)).stdout)
    assert doc["ok"] and doc["problems"] == []
    return doc


def _verify_fails(path: Path) -> list[str]:
    """The problems verify prints (one per line on stdout); it exits with the integrity code."""
    proc = fails("verify", str(path))
    assert proc.returncode == INTEGRITY_EXIT, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines, "no problem reported"
    doc = json.loads(fails("verify", "--json", str(path)).stdout)
    assert [f"{p['where']}: {p['message']}" for p in doc["problems"]] == lines
    return lines


def _blob(directory: Path, digest: str) -> Path:
    return directory / "blobs" / "sha256" / digest.removeprefix("sha256:")


# --- sound outputs --------------------------------------------------------------


def test_fetch_outputs_verify_ok(registry: Registry, pushed: dict[str, BuiltImage], tmp_path: Path) -> None:
    ref = f"{registry.host}/verify/mixed"
    tar = tmp_path / "one.tar"
    ok("fetch-to-tarfile", "-q", ref, "v1", str(tar))
    doc = _verify_ok(tar)
    assert doc["layout"] == "tarball" and doc["images"] == 1 and doc["manifests"] == 1
    assert doc["diff_ids"] == 3 and doc["blobs"] == 5  # 3 layers, config, manifest

    plain = tmp_path / "plain.tar"
    ok("fetch-to-tarfile", "-q", "--uncompressed-layers", ref, "v1", str(plain))
    assert _verify_ok(plain)["diff_ids"] == 3

    extracted = tmp_path / "extracted"
    ok("fetch-to-extracted", "-q", ref, "v1", str(extracted))
    assert _verify_ok(extracted)["layout"] == "directory"


def test_merged_directory_and_mirror_outputs_verify_ok(
    registry: Registry, pushed: dict[str, BuiltImage], tmp_path: Path
) -> None:
    merged = tmp_path / "merged"
    for repo, tag in (("verify/sample", "v1"), ("verify/sample", "v2"), ("verify/mixed", "v1")):
        ok("fetch-to-extracted", "-q", "--use-unique-names", f"{registry.host}/{repo}", tag, str(merged))
    ok("fetch-to-extracted", "-q", "--use-unique-names", "--expand", f"{registry.host}/verify/sample", "v1",
       str(merged))  # fmt: skip
    doc = _verify_ok(merged)
    assert doc["layout"] == "merged directory" and doc["images"] == 3 and doc["diff_ids"] == 6

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"images:\n  - name: {registry.host}/verify/sample\n    tags: [v1, v2]\n"
        f"  - name: {registry.host}/verify/mixed:v1\n"
    )
    bundle = tmp_path / "bundle.tar"
    ok("mirror", "-q", str(spec_file), str(bundle))
    doc = _verify_ok(bundle)
    assert doc["layout"] == "tarball" and doc["images"] == 3
    mirrored = tmp_path / "mirrored"
    ok("mirror", "-q", str(spec_file), str(mirrored))
    assert _verify_ok(mirrored)["layout"] == "merged directory"


def test_layouts_other_tools_write_verify_ok(tmp_path: Path) -> None:
    image = images.build_sample_image(fmt="oci", compression="zstd")
    # skopeo-style OCI layout (a bare tag as ref name, no manifest.json) and a classic docker save.
    layout_dir = images.write_oci_layout(tmp_path / "oci", image, "v1")
    assert _verify_ok(layout_dir)["diff_ids"] == 3
    classic = images.write_docker_archive(tmp_path / "classic.tar", image, ["team/app:v1"])
    doc = _verify_ok(classic)
    assert doc["images"] == 1 and doc["diff_ids"] == 3


def test_what_podman_and_skopeo_write_verifies_ok(
    registry: Registry, pushed: dict[str, BuiltImage], podman: Podman, skopeo: str, tmp_path: Path
) -> None:
    ref = f"{registry.host}/verify/sample:v1"
    tar = tmp_path / "fetched.tar"
    ok("fetch-to-tarfile", "-q", f"{registry.host}/verify/sample", "v1", str(tar))
    podman.load(tar)
    for fmt in ("docker-archive", "oci-archive", "oci-dir"):
        out = tmp_path / fmt
        podman("save", "--format", fmt, "-o", str(out), ref)
        assert _verify_ok(out)["diff_ids"] == 2, fmt
    skopeo_copy(f"docker://{ref}", f"dir:{tmp_path / 'skopeo-dir'}")  # what `skopeo sync --dest dir` writes
    assert _verify_ok(tmp_path / "skopeo-dir")["diff_ids"] == 2
    os.truncate(tmp_path / "skopeo-dir" / pushed["v1"].layers[0].digest[7:], 10)
    [line] = _verify_fails(tmp_path / "skopeo-dir")
    assert line.startswith(f"{pushed['v1'].layers[0].digest[7:]}: is 10 bytes, layer 1 of manifest.json")


# --- damage ------------------------------------------------------------------------


@pytest.fixture
def extracted(registry: Registry, pushed: dict[str, BuiltImage], tmp_path: Path) -> Path:
    target = tmp_path / "d"
    ok("fetch-to-extracted", "-q", f"{registry.host}/verify/mixed", "v1", str(target))
    return target


def test_flipped_byte_in_a_layer(extracted: Path, pushed: dict[str, BuiltImage]) -> None:
    for i, layer in enumerate(pushed["mixed"].layers):
        path = _blob(extracted, layer.digest)
        flip_byte(path, layer.size // 2, mask=0x40)
        [line] = _verify_fails(extracted)
        assert line.startswith(f"blobs/sha256/{layer.digest[7:]}: content hashes to sha256:")
        assert f"layer {i + 1} of" in line
        flip_byte(path, layer.size // 2, mask=0x40)
    _verify_ok(extracted)


def test_flipped_byte_inside_a_tarball(
    registry: Registry, pushed: dict[str, BuiltImage], tmp_path: Path
) -> None:
    tar = tmp_path / "one.tar"
    ok("fetch-to-tarfile", "-q", f"{registry.host}/verify/mixed", "v1", str(tar))
    layer = pushed["mixed"].layers[1]
    with tarfile.open(tar) as tf:
        offset = tf.getmember(f"blobs/sha256/{layer.digest[7:]}").offset_data
    flip_byte(tar, offset + 10, mask=0x40)
    [line] = _verify_fails(tar)
    assert line.startswith(f"blobs/sha256/{layer.digest[7:]}: content hashes to")


def test_missing_blob(extracted: Path, pushed: dict[str, BuiltImage]) -> None:
    layer = pushed["mixed"].layers[0]
    _blob(extracted, layer.digest).unlink()
    [line] = _verify_fails(extracted)
    assert line.startswith(f"blobs/sha256/{layer.digest[7:]}: missing (layer 1 of ")
    assert "+1 more" in line  # named by index.json's manifest and by manifest.json


def test_truncated_layer(extracted: Path, pushed: dict[str, BuiltImage]) -> None:
    layer = pushed["mixed"].layers[1]
    os.truncate(_blob(extracted, layer.digest), layer.size - 7)
    [line] = _verify_fails(extracted)
    assert line.startswith(f"blobs/sha256/{layer.digest[7:]}: is {layer.size - 7} bytes, layer 2 of ")
    assert line.endswith(f"should be {layer.size} (truncated)")


def test_catalog_entry_whose_manifest_file_is_gone(
    registry: Registry, pushed: dict[str, BuiltImage], tmp_path: Path
) -> None:
    merged = tmp_path / "m"
    for tag in ("v1", "v2"):
        ok(
            "fetch-to-extracted",
            "-q",
            "--use-unique-names",
            f"{registry.host}/verify/sample",
            tag,
            str(merged),
        )
    catalog = json.loads((merged / "catalog.json").read_text())["images"]
    gone = catalog[f"{registry.host}/verify/sample"]["v2"]["manifest"]
    (merged / gone).unlink()
    [line] = _verify_fails(merged)
    assert line == f"catalog.json {registry.host}/verify/sample:v2: its manifest file {gone} is missing"


def test_manifest_json_naming_a_missing_config(extracted: Path, pushed: dict[str, BuiltImage]) -> None:
    entries = json.loads((extracted / "manifest.json").read_text())
    bogus = "blobs/sha256/" + "0" * 64
    entries[0]["Config"] = bogus
    (extracted / "manifest.json").write_text(json.dumps(entries))
    lines = _verify_fails(extracted)
    assert f"{bogus}: missing (Config of manifest.json[0] ({entries[0]['RepoTags'][0]}))" in lines


def test_missing_config_blob_is_one_line(extracted: Path, pushed: dict[str, BuiltImage]) -> None:
    config = pushed["mixed"].config_digest
    _blob(extracted, config).unlink()
    [line] = _verify_fails(extracted)
    assert line.startswith(f"blobs/sha256/{config[7:]}: missing (config of ") and "+1 more" in line


def test_layer_that_does_not_match_its_diff_id(extracted: Path, pushed: dict[str, BuiltImage]) -> None:
    """Digests all consistent, but the config lies about a layer's diff_id."""
    image = pushed["mixed"]
    config = json.loads(image.config)
    config["rootfs"]["diff_ids"][2] = "sha256:" + "1" * 64
    config_bytes = json.dumps(config).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    _blob(extracted, config_digest).write_bytes(config_bytes)
    manifest = json.loads(image.manifest)
    manifest["config"].update(digest=config_digest, size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    _blob(extracted, manifest_digest).write_bytes(manifest_bytes)
    index = json.loads((extracted / "index.json").read_text())
    index["manifests"][0].update(digest=manifest_digest, size=len(manifest_bytes))
    (extracted / "index.json").write_text(json.dumps(index))
    entries = json.loads((extracted / "manifest.json").read_text())
    entries[0]["Config"] = f"blobs/sha256/{config_digest[7:]}"
    (extracted / "manifest.json").write_text(json.dumps(entries))
    [line] = _verify_fails(extracted)
    layer = image.layers[2]
    assert line.startswith(
        f"blobs/sha256/{layer.digest[7:]}: uncompresses to {layer.diff_id}, but the config"
    )
    assert f"says sha256:{'1' * 64} for layer 3 of " in line


def test_inconsistent_listings(registry: Registry, pushed: dict[str, BuiltImage], tmp_path: Path) -> None:
    target = tmp_path / "d"
    ok("fetch-to-extracted", "-q", f"{registry.host}/verify/sample", "v1", str(target))
    entries = json.loads((target / "manifest.json").read_text())
    entries[0]["Layers"].reverse()
    entries[0]["RepoTags"] = ["verify/other:v9"]
    (target / "manifest.json").write_text(json.dumps(entries))
    lines = _verify_fails(target)
    assert any("its Layers differ from the layers of manifest" in line for line in lines), lines
    assert any(f"no entry has RepoTags {registry.host}/verify/sample:v1" in line for line in lines), lines


def test_not_a_layout(tmp_path: Path) -> None:
    proc = fails("verify", str(tmp_path / "absent"))
    assert proc.returncode == 3 and proc.stdout == ""
    (tmp_path / "empty").mkdir()
    proc = fails("verify", str(tmp_path / "empty"))
    assert "not an image layout" in proc.stderr and proc.returncode == 7
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    assert fails("verify", str(tmp_path / "junk.tar")).returncode == 7
