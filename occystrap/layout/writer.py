"""The Docker 25 `docker save` layout: an OCI image layout that docker load also reads.

    oci-layout, index.json, manifest.json, blobs/sha256/<hex>

Pure functions from the content model to file names and exact bytes. index.json names
what each tag points at (an image, an artifact, or a whole index: an OCI layout may nest
indexes); manifest.json lists every runnable image for `docker load`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from occystrap import digest as digests
from occystrap.mediatypes import DOCKER_LAYER_TAR, DOCKER_MANIFEST, OCI_INDEX, OCI_LAYER
from occystrap.model import Artifact, Descriptor, Image, Index, Layer, Node, load_json, walk
from occystrap.platform import Platform, choose

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def blob_path(digest: str) -> str:
    return digests.Digest.parse(digest).path


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


Rewrite = Callable[[Image], StoredImage]


def as_served(image: Image) -> StoredImage:
    return StoredImage(image, image.manifest, image.manifest_bytes, tuple(l.descriptor for l in image.layers))


def with_uncompressed_layers(image: Image, plain_sizes: Mapping[str, int]) -> StoredImage:
    """A new manifest whose layers are the plain tars; their digests are the diff_ids."""
    media = DOCKER_LAYER_TAR if image.manifest.media_type == DOCKER_MANIFEST else OCI_LAYER
    layers = tuple(Descriptor(media, d, plain_sizes[d]) for d in diff_ids(image))
    doc = load_json(image.manifest_bytes, f"manifest of {image.reference}")
    doc["layers"] = [d.to_json() for d in layers]
    data = json.dumps(doc, indent=3).encode()
    manifest = Descriptor(image.manifest.media_type, digests.of(data), len(data))
    return StoredImage(image, manifest, data, layers)


def diff_ids(image: Image) -> list[digests.Digest]:
    """An image's diff_ids (an Image's layers always have one)."""
    out = [l.diff_id for l in image.layers if l.diff_id is not None]
    assert len(out) == len(image.layers)
    return out


def streamed(nodes: Sequence[Node]) -> list[Layer]:
    """The blobs that travel as streams (layers, artifact blobs), each once, in order."""
    out: dict[str, Layer] = {}
    for root in nodes:
        for node in walk(root):
            if isinstance(node, Image):
                for layer in node.layers:
                    out.setdefault(layer.descriptor.digest, layer)
            elif isinstance(node, Artifact):
                for desc in node.blobs:
                    out.setdefault(desc.digest, Layer(desc, None))
    return list(out.values())


def index_entry(node: Node, manifest: Descriptor | None = None) -> dict[str, Any]:
    """The index.json entry naming a root; `manifest`: the descriptor as stored, if rewritten."""
    entry = (manifest or node.manifest).to_json()
    entry.pop("platform", None)
    ref = node.reference
    entry["annotations"] = {
        CONTAINERD_NAME: ref.full_name + (f":{ref.tag}" if ref.tag else f"@{node.manifest.digest}"),
        # podman and skopeo name the image from this; a bare tag would lose the repository.
        REF_NAME: str(ref),
    }
    if isinstance(node, Artifact):
        entry["artifactType"] = node.artifact_type
    if node.platform is not None and not isinstance(node, Index):
        entry["platform"] = node.platform.to_json()
    return entry


def index_json(entries: list[dict[str, Any]]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(doc, indent=2, sort_keys=False).encode() + b"\n"


def docker_manifest_entry(stored: StoredImage, tagged: bool = True) -> dict[str, Any]:
    tag = stored.image.reference.repo_tag if tagged else None
    return {
        "Config": blob_path(stored.image.config.digest),
        "RepoTags": [tag] if tag else [],
        "Layers": [blob_path(d.digest) for d in stored.layers],
    }


def manifest_json(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps(entries, indent=2).encode() + b"\n"


def tagged_image(root: Node, primary: Platform | None) -> Image | None:
    """Which runnable image of a root `docker load` should tag: the root itself, or for an
    index the child for the run's platform (else its first runnable one)."""
    if isinstance(root, Image):
        return root
    if not isinstance(root, Index):
        return None
    images = [c for c in root.children if isinstance(c, Image)]
    if not images:
        return None
    pick = choose([i.platform for i in images], primary) if primary is not None else None
    return images[pick if pick is not None else 0]


def docker_entries(
    root: Node, primary: Platform | None, rewrite: Rewrite = as_served
) -> list[dict[str, Any]]:
    """manifest.json entries for a root: each runnable image, the tagged one named."""
    tagged = tagged_image(root, primary)
    out = []
    for node in walk(root):
        if isinstance(node, Image):
            entry = docker_manifest_entry(rewrite(node), tagged=node is tagged)
            if node is tagged and isinstance(root, Index):
                entry["RepoTags"] = [root.reference.repo_tag] if root.reference.repo_tag else []
            out.append(entry)
    return out


def documents(root: Node, rewrite: Rewrite = as_served) -> dict[str, bytes]:
    """The small blobs of a root, by layout path: manifests, indexes and image configs."""
    files: dict[str, bytes] = {}
    for node in walk(root):
        if isinstance(node, Image):
            stored = rewrite(node)
            files[blob_path(node.config.digest)] = node.config_bytes
            files[blob_path(stored.manifest.digest)] = stored.manifest_bytes
        else:
            files[blob_path(node.manifest.digest)] = node.manifest_bytes
    return files


def image_files(
    roots: Sequence[Node], primary: Platform | None = None, rewrite: Rewrite = as_served
) -> list[tuple[str, bytes]]:
    """The small files of a layout holding these roots, blobs of manifests and configs included."""
    files: dict[str, bytes] = {}
    for root in roots:
        files.update(documents(root, rewrite))
    files["oci-layout"] = OCI_LAYOUT
    entries = []
    for root in roots:
        stored = rewrite(root).manifest if isinstance(root, Image) else None
        entries.append(index_entry(root, stored))
    files["index.json"] = index_json(entries)
    files["manifest.json"] = manifest_json([e for r in roots for e in docker_entries(r, primary, rewrite)])
    return list(files.items())
