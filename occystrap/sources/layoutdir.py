"""Images read back out of a merged directory, verified against their digests."""

from __future__ import annotations

from pathlib import Path

from occystrap import catalog, layout
from occystrap.errors import IntegrityError, ManifestError, NotFoundError
from occystrap.model import DOCKER_MANIFEST, Descriptor, Image, Platform, build_image, load_json
from occystrap.reference import Reference
from occystrap.verify import file_digest


def read_blob(root: Path, digest: str) -> bytes:
    path = root / layout.blob_path(digest)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{root} is missing blob {digest}") from None
    if file_digest(path)[0] != digest:
        raise IntegrityError(f"{path} does not match its digest")
    return data


def load_image(root: Path, ref: Reference) -> Image:
    entry = catalog.lookup(root, ref)
    digest = entry.get("manifest_digest")
    if not isinstance(digest, str):
        raise ManifestError(f"catalog entry for {ref} in {root} has no manifest_digest")
    manifest = read_blob(root, digest)
    media = load_json(manifest, f"manifest {digest}").get("mediaType") or DOCKER_MANIFEST
    platform = Platform.parse(entry["platform"]) if isinstance(entry.get("platform"), str) else None
    descriptor = Descriptor(media, digest, len(manifest))
    config_digest = load_json(manifest, f"manifest {digest}")["config"]["digest"]
    return build_image(ref, descriptor, manifest, read_blob(root, config_digest), platform)


def verify_layers(root: Path, image: Image) -> None:
    for layer in image.layers:
        path = root / layout.blob_path(layer.descriptor.digest)
        if not path.exists():
            raise NotFoundError(f"{root} is missing layer {layer.descriptor.digest} of {image.reference}")
        if file_digest(path) != (layer.descriptor.digest, layer.descriptor.size):
            raise IntegrityError(f"{path} does not match digest {layer.descriptor.digest}")
