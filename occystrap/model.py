"""The content model every source and sink shares. Raw bytes are kept, never re-serialized.

What a tag points at is a Node: an Image (runnable: config with diff_ids, tar layers), an
Artifact (anything else with a manifest: signatures, attestations, SBOMs, charts; carried
as blobs, never unpacked) or an Index (exact bytes, and the nodes it lists).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from occystrap import digest as digests
from occystrap.digest import Digest
from occystrap.errors import IntegrityError, ManifestError, UnsupportedMediaTypeError
from occystrap.mediatypes import (
    DOCKER_SCHEMA1,
    INDEX_TYPES,
    MANIFEST_TYPES,
    SCHEMA1_TYPES,
    compression_of,
    is_image_config,
    is_layer,
)
from occystrap.platform import Platform
from occystrap.reference import Reference


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Descriptor:
        if not isinstance(raw, dict):
            raise ManifestError(f"malformed descriptor in {where}: not an object")
        try:
            digest = Digest.parse(raw.get("digest"))
        except ValueError as exc:
            raise ManifestError(f"malformed descriptor in {where}: {exc}") from None
        size = raw.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"malformed size {size!r} in {where}")
        media_type = raw.get("mediaType") or ""
        notes = raw.get("annotations") or {}
        artifact_type = raw.get("artifactType")
        if (
            not isinstance(media_type, str)
            or not isinstance(notes, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in notes.items())
            or not (artifact_type is None or isinstance(artifact_type, str))
        ):
            raise ManifestError(f"malformed descriptor in {where}")
        platform = Platform.from_json(raw.get("platform"))
        return cls(media_type, digest, size, platform, tuple(sorted(notes.items())), artifact_type)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @property
    def hex(self) -> str:
        return self.digest.hex


@dataclass(frozen=True)
class Layer:
    """A blob that travels as a stream. diff_id: the uncompressed tar's digest for an image's
    layer; None for an artifact's blob, which is carried as it is and never unpacked."""

    descriptor: Descriptor
    diff_id: Digest | None

    @property
    def compression(self) -> str:
        return compression_of(self.descriptor.media_type)


@dataclass(frozen=True)
class Image:
    """One platform's runnable image: exact manifest and config bytes, and its layers."""

    reference: Reference
    manifest: Descriptor
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layers: tuple[Layer, ...]
    platform: Platform | None = None

    @property
    def image_id(self) -> str:
        return self.config.digest

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *(layer.descriptor for layer in self.layers))


@dataclass(frozen=True)
class Artifact:
    """A manifest that is not a runnable image: its blobs are carried as they are."""

    reference: Reference
    manifest: Descriptor
    manifest_bytes: bytes
    blobs: tuple[Descriptor, ...]  # config first, then layers
    artifact_type: str
    subject: Descriptor | None = None
    platform: Platform | None = None


@dataclass(frozen=True)
class Index:
    """A multi-platform index (or any index) with exact bytes, and the nodes it lists."""

    reference: Reference
    manifest: Descriptor
    manifest_bytes: bytes
    children: tuple[Node, ...]
    platform: Platform | None = None


Node = Image | Artifact | Index


def with_reference(node: Node, reference: Reference) -> Node:
    """The same content under another name (children follow as name@digest)."""
    if isinstance(node, Index):
        children = tuple(
            with_reference(c, Reference(reference.registry, reference.repository, digest=c.manifest.digest))
            for c in node.children
        )
        return dataclasses.replace(node, reference=reference, children=children)
    return dataclasses.replace(node, reference=reference)


def walk(node: Node) -> list[Node]:
    """The node and everything under it, children before the index that lists them."""
    if isinstance(node, Index):
        return [n for c in node.children for n in walk(c)] + [node]
    return [node]


def images_of(node: Node) -> list[Image]:
    return [n for n in walk(node) if isinstance(n, Image)]


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


def media_type_of(data: bytes, declared: str, what: str) -> str:
    """The manifest's media type: as declared (a Content-Type), else from its own mediaType field."""
    if declared and declared != "application/octet-stream":
        return declared
    doc = load_json(data, what)
    if not isinstance(doc, dict):
        return ""
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    media = doc.get("mediaType")
    if isinstance(media, str) and media:
        return media
    # OCI made mediaType optional: an index lists manifests, an image manifest has layers.
    return INDEX_TYPES[1] if "manifests" in doc else MANIFEST_TYPES[1] if "layers" in doc else ""


@dataclass(frozen=True)
class ManifestDoc:
    """An image or artifact manifest, parsed."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    artifact_type: str | None
    subject: Descriptor | None

    @property
    def is_image(self) -> bool:
        return (
            not self.artifact_type
            and is_image_config(self.config.media_type)
            and all(is_layer(l.media_type) for l in self.layers)
        )


def parse_manifest(data: bytes, what: str) -> ManifestDoc:
    doc = load_json(data, what)
    if not isinstance(doc, dict):
        raise ManifestError(f"malformed manifest for {what}: not an object")
    if doc.get("schemaVersion") == 1:
        check_media_type(DOCKER_SCHEMA1, what)
    config = Descriptor.from_json(doc.get("config"), what)
    layers_raw = doc.get("layers", [])
    if not isinstance(layers_raw, list):
        raise ManifestError(f"malformed manifest for {what}: layers is not a list")
    layers = tuple(Descriptor.from_json(item, what) for item in layers_raw)
    artifact_type = doc.get("artifactType")
    subject = Descriptor.from_json(doc["subject"], what) if doc.get("subject") is not None else None
    return ManifestDoc(config, layers, artifact_type if isinstance(artifact_type, str) else None, subject)


def parse_diff_ids(config_bytes: bytes, what: str) -> list[Digest]:
    doc = load_json(config_bytes, f"config of {what}")
    try:
        diff_ids = doc["rootfs"]["diff_ids"]
    except (KeyError, TypeError):
        raise ManifestError(f"config of {what} has no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list):
        raise ManifestError(f"config of {what} has malformed rootfs.diff_ids")
    try:
        return [Digest.parse(d) for d in diff_ids]
    except ValueError as exc:
        raise ManifestError(f"config of {what} has a malformed diff_id: {exc}") from None


def build_image(
    reference: Reference,
    manifest: Descriptor,
    manifest_bytes: bytes,
    config_bytes: bytes,
    platform: Platform | None = None,
) -> Image:
    """Assemble an Image from exact bytes, checking that manifest and config agree."""
    what = str(reference)
    parsed = parse_manifest(manifest_bytes, what)
    if not parsed.is_image:
        bad = next((l.media_type for l in parsed.layers if not is_layer(l.media_type)), None)
        kind = f"a layer of type {bad!r}" if bad else f"config type {parsed.config.media_type!r}"
        raise UnsupportedMediaTypeError(f"{what} is not a runnable image ({kind})")
    config = parsed.config
    if digests.of(config_bytes) != config.digest or len(config_bytes) != config.size:
        raise IntegrityError(f"config of {what} does not match its digest {config.digest}")
    diff_ids = parse_diff_ids(config_bytes, what)
    if len(diff_ids) != len(parsed.layers):
        raise ManifestError(
            f"{what}: manifest lists {len(parsed.layers)} layers but config has {len(diff_ids)} diff_ids"
        )
    layers = tuple(Layer(d, diff_id) for d, diff_id in zip(parsed.layers, diff_ids, strict=True))
    if platform is None:
        platform = Platform.from_json(load_json(config_bytes, f"config of {what}"))
    return Image(reference, manifest, manifest_bytes, config, config_bytes, layers, platform)


def build_artifact(
    reference: Reference, manifest: Descriptor, manifest_bytes: bytes, platform: Platform | None = None
) -> Artifact:
    parsed = parse_manifest(manifest_bytes, str(reference))
    kind = parsed.artifact_type or parsed.config.media_type or "unknown"
    blobs = tuple(dict.fromkeys((parsed.config, *parsed.layers)))
    return Artifact(reference, manifest, manifest_bytes, blobs, kind, parsed.subject, platform)


def parse_index(data: bytes, what: str) -> list[Descriptor]:
    doc = load_json(data, what)
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list):
        raise ManifestError(f"malformed index for {what}: no manifests list")
    return [Descriptor.from_json(m, what) for m in manifests]
