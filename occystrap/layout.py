"""The Docker 25 `docker save` layout: an OCI image layout that docker load also reads.

    oci-layout, index.json, manifest.json, blobs/sha256/<hex>

Pure functions from the image model to file names and exact bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from occystrap.model import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_LAYER,
    Descriptor,
    Image,
    load_json,
    sha256_digest,
)

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def blob_path(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


@dataclass(frozen=True)
class StoredImage:
    """An image as written: the registry's manifest, or one rewritten for uncompressed layers."""

    image: Image
    manifest: Descriptor
    manifest_bytes: bytes
    layers: tuple[Descriptor, ...]

    @property
    def ref_name(self) -> str:
        return str(self.image.reference)


def as_served(image: Image) -> StoredImage:
    return StoredImage(image, image.manifest, image.manifest_bytes, tuple(l.descriptor for l in image.layers))


def with_uncompressed_layers(image: Image, plain_sizes: dict[str, int]) -> StoredImage:
    """A new manifest whose layers are the plain tars; their digests are the diff_ids."""
    media = DOCKER_LAYER_TAR if image.manifest.media_type == DOCKER_MANIFEST else OCI_LAYER
    layers = tuple(Descriptor(media, l.diff_id, plain_sizes[l.diff_id]) for l in image.layers)
    doc = load_json(image.manifest_bytes, f"manifest of {image.reference}")
    doc["layers"] = [d.to_json() for d in layers]
    data = json.dumps(doc, indent=3).encode()
    manifest = Descriptor(image.manifest.media_type, sha256_digest(data), len(data))
    return StoredImage(image, manifest, data, layers)


def index_entry(stored: StoredImage) -> dict[str, Any]:
    entry = stored.manifest.to_json()
    ref = stored.image.reference
    entry["annotations"] = {
        CONTAINERD_NAME: ref.full_name + (f":{ref.tag}" if ref.tag else f"@{stored.manifest.digest}"),
        # podman and skopeo name the image from this; a bare tag would lose the repository.
        REF_NAME: stored.ref_name,
    }
    if stored.image.platform is not None:
        plat = stored.image.platform
        entry["platform"] = {"architecture": plat.architecture, "os": plat.os}
        if plat.variant:
            entry["platform"]["variant"] = plat.variant
    return entry


def index_json(entries: list[dict[str, Any]]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(doc, indent=2, sort_keys=False).encode() + b"\n"


def docker_manifest_entry(stored: StoredImage) -> dict[str, Any]:
    tag = stored.image.reference.repo_tag
    return {
        "Config": blob_path(stored.image.config.digest),
        "RepoTags": [tag] if tag else [],
        "Layers": [blob_path(d.digest) for d in stored.layers],
    }


def manifest_json(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps(entries, indent=2).encode() + b"\n"


def image_files(stored: list[StoredImage]) -> list[tuple[str, bytes]]:
    """The small files of a layout holding these images, blobs of manifests and configs included."""
    files: dict[str, bytes] = {}
    for s in stored:
        files[blob_path(s.image.config.digest)] = s.image.config_bytes
        files[blob_path(s.manifest.digest)] = s.manifest_bytes
    files["oci-layout"] = OCI_LAYOUT
    files["index.json"] = index_json([index_entry(s) for s in stored])
    files["manifest.json"] = manifest_json([docker_manifest_entry(s) for s in stored])
    return list(files.items())
