"""The image model every source and sink shares. Raw bytes are kept, never re-serialized."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from occystrap.errors import IntegrityError, ManifestError, UnsupportedMediaTypeError
from occystrap.reference import Reference

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
SCHEMA1_TYPES = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, "application/json")
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

# Manifests are small; anything bigger is hostile or broken, and we hold manifests in memory.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compression_of(media_type: str) -> str:
    """'gzip', 'zstd' or 'none' as the media type says; magic bytes get the last word."""
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        return "zstd"
    if media_type.endswith("gzip"):
        return "gzip"
    return "none"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform must be os/arch[/variant], not {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Descriptor:
        try:
            plat = raw.get("platform")
            platform = (
                Platform(plat["os"], plat["architecture"], plat.get("variant") or None)
                if isinstance(plat, dict)
                else None
            )
            digest = raw["digest"]
            size = raw["size"]
            media_type = raw.get("mediaType", "")
            annotations = tuple(sorted((raw.get("annotations") or {}).items()))
        except (AttributeError, KeyError, TypeError) as exc:
            raise ManifestError(f"malformed descriptor in {where}: {exc}") from None
        if not isinstance(digest, str) or ":" not in digest:
            raise ManifestError(f"malformed digest {digest!r} in {where}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"malformed size {size!r} in {where}")
        return cls(media_type, digest, size, platform, annotations)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: str

    @property
    def compression(self) -> str:
        return compression_of(self.descriptor.media_type)


@dataclass(frozen=True)
class Image:
    """One platform's image: exact manifest and config bytes, and its layers."""

    reference: Reference
    manifest: Descriptor
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layers: tuple[Layer, ...]
    platform: Platform | None = field(default=None)

    @property
    def image_id(self) -> str:
        return self.config.digest

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *(layer.descriptor for layer in self.layers))


def load_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"malformed JSON in {what}: {exc}") from None


def check_media_type(media_type: str, what: str) -> None:
    if media_type in SCHEMA1_TYPES:
        raise UnsupportedMediaTypeError(
            f"{what} is a Docker schema1 manifest, which is deprecated and not supported;"
            " push the image again with a current client"
        )
    if media_type not in MANIFEST_TYPES and media_type not in INDEX_TYPES:
        raise UnsupportedMediaTypeError(f"{what} has unsupported media type {media_type!r}")


def parse_manifest(data: bytes, media_type: str, what: str) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest."""
    doc = load_json(data, what)
    if not isinstance(doc, dict):
        raise ManifestError(f"malformed manifest for {what}: not an object")
    if doc.get("schemaVersion") == 1:
        check_media_type(DOCKER_SCHEMA1, what)
    config = Descriptor.from_json(doc.get("config"), what)
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise ManifestError(f"malformed manifest for {what}: no layers list")
    layers = [Descriptor.from_json(item, what) for item in layers_raw]
    for layer in layers:
        if layer.media_type and compression_of(layer.media_type) == "none" and "tar" not in layer.media_type:
            raise UnsupportedMediaTypeError(f"{what} has a layer of unsupported type {layer.media_type!r}")
    return config, layers


def parse_diff_ids(config_bytes: bytes, what: str) -> list[str]:
    doc = load_json(config_bytes, f"config of {what}")
    try:
        diff_ids = doc["rootfs"]["diff_ids"]
    except (KeyError, TypeError):
        raise ManifestError(f"config of {what} has no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ManifestError(f"config of {what} has malformed rootfs.diff_ids")
    return diff_ids


def build_image(
    reference: Reference,
    manifest: Descriptor,
    manifest_bytes: bytes,
    config_bytes: bytes,
    platform: Platform | None = None,
) -> Image:
    """Assemble an Image from exact bytes, checking that manifest and config agree."""
    what = str(reference)
    config, layer_descs = parse_manifest(manifest_bytes, manifest.media_type, what)
    if sha256_digest(config_bytes) != config.digest or len(config_bytes) != config.size:
        raise IntegrityError(f"config of {what} does not match its digest {config.digest}")
    diff_ids = parse_diff_ids(config_bytes, what)
    if len(diff_ids) != len(layer_descs):
        raise ManifestError(
            f"{what}: manifest lists {len(layer_descs)} layers but config has {len(diff_ids)} diff_ids"
        )
    layers = tuple(Layer(d, diff_id) for d, diff_id in zip(layer_descs, diff_ids, strict=True))
    return Image(reference, manifest, manifest_bytes, config, config_bytes, layers, platform)


def choose_platform(entries: list[Descriptor], wanted: Platform) -> Descriptor | None:
    """Pick the index entry for `wanted`, as containerd's matcher does.

    A missing variant matches anything; arm64 without a variant means v8; for
    arm the wanted variant may fall back to older ones (v7 runs v6 and v5).
    """

    def norm(p: Platform) -> Platform:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(p.architecture, p.architecture)
        variant = p.variant
        if arch == "arm64" and variant in (None, "v8", "8"):
            variant = "v8"
        if arch == "amd64" and variant in (None, "v1"):
            variant = None
        return Platform(p.os, arch, variant)

    want = norm(wanted)
    candidates: list[tuple[int, Descriptor]] = []
    for entry in entries:
        if entry.platform is None:
            continue
        have = norm(entry.platform)
        if have.os != want.os or have.architecture != want.architecture:
            continue
        if want.variant is None or have.variant == want.variant:
            rank = 0
        elif have.variant is None:
            rank = 1
        elif want.architecture == "arm" and have.variant < want.variant:
            rank = 2 + (ord(want.variant[-1]) - ord(have.variant[-1]))
        else:
            continue
        candidates.append((rank, entry))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[0])[1]


def parse_index(data: bytes, what: str) -> list[Descriptor]:
    doc = load_json(data, what)
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list):
        raise ManifestError(f"malformed index for {what}: no manifests list")
    return [Descriptor.from_json(m, what) for m in manifests]
