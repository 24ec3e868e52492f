"""Artifacts as registries in the wild hold them, built by hand and pushed through the HTTP API:
cosign signature/attestation/SBOM tags (`sha256-<hex>.sig|.att|.sbom`), an OCI 1.1 artifact
with `artifactType` and `subject` (plus the tag-schema index `sha256-<hex>` that lists it),
a Helm chart, and a buildx-style index with an attestation manifest (platform unknown/unknown)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .images import OCI_INDEX, OCI_MANIFEST, BuiltImage, build_image, sha256_digest
from .registry import Registry

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
SPDX = "text/spdx+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
SBOM_TYPE = "application/vnd.example.sbom.v1+json"


@dataclass
class Built:
    """A manifest and the blobs it needs."""

    data: bytes
    media_type: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    artifact_type: str | None = None

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out.update(extra)
        return out

    def push(self, registry: Registry, repo: str, reference: str | None = None) -> str:
        for blob in self.blobs.values():
            registry.push_blob(repo, blob)
        return registry.push_manifest(repo, reference or self.digest, self.data, self.media_type)


def _desc(media: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media, "digest": sha256_digest(data), "size": len(data)}


def manifest(
    config_media: str,
    config: bytes,
    layers: list[tuple[str, bytes]],
    artifact_type: str | None = None,
    subject: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> Built:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = _desc(config_media, config)
    doc["layers"] = [_desc(m, d) for m, d in layers]
    if subject:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    blobs = {sha256_digest(config): config, **{sha256_digest(d): d for _, d in layers}}
    return Built(json.dumps(doc, indent=2).encode(), OCI_MANIFEST, blobs, artifact_type)


def _cosign_config(layer: bytes) -> bytes:
    rootfs = {"type": "layers", "diff_ids": [sha256_digest(layer)]}
    doc = {"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z", "os": "", "rootfs": rootfs}
    return json.dumps(doc).encode()


def cosign(kind: str, subject: BuiltImage) -> Built:
    """What `cosign sign` (.sig), `cosign attest` (.att) or `cosign attach sbom` (.sbom) pushes."""
    media, body = {
        "sig": (SIMPLESIGNING, {"critical": {"image": {"docker-manifest-digest": subject.manifest_digest}}}),
        "att": (DSSE, {"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": []}),
        "sbom": (SPDX, {"spdxVersion": "SPDX-2.3", "name": subject.manifest_digest}),
    }[kind]
    layer = json.dumps(body).encode()
    return manifest(OCI_CONFIG, _cosign_config(layer), [(media, layer)])


def cosign_tag(subject: BuiltImage, kind: str) -> str:
    return f"sha256-{subject.manifest_digest[7:]}.{kind}"


def oci_referrer(subject: BuiltImage) -> Built:
    """An OCI 1.1 artifact refering to subject (empty config, artifactType, subject)."""
    sbom = json.dumps({"sbom": "for " + subject.manifest_digest}).encode()
    return manifest(
        OCI_EMPTY,
        b"{}",
        [("application/json", sbom)],
        artifact_type=SBOM_TYPE,
        subject={"mediaType": subject.manifest_media_type, "digest": subject.manifest_digest,
                 "size": len(subject.manifest)},
    )  # fmt: skip


def referrers_index(referrers: list[Built]) -> Built:
    """The tag schema's index (`sha256-<hex>`) for registries without the referrers API."""
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [r.descriptor() for r in referrers]}
    return Built(json.dumps(doc, indent=2).encode(), OCI_INDEX)


def helm_chart() -> Built:
    chart = b"\x1f\x8b" + b"\0" * 30  # bytes only: a chart is never unpacked
    return manifest(HELM_CONFIG, b'{"name":"demo","version":"0.1.0"}', [(HELM_CHART, chart)])


def buildx_index(image: BuiltImage) -> tuple[Built, Built]:
    """An index with the image and its attestation manifest (platform unknown/unknown), as
    `docker buildx build --provenance` pushes them; and the attestation manifest itself."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "subject": []}).encode()
    attestation = manifest(OCI_CONFIG, _cosign_config(statement), [(IN_TOTO, statement)])
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": image.manifest_media_type, "digest": image.manifest_digest,
             "size": len(image.manifest), "platform": image.platform()},
            attestation.descriptor(
                platform={"architecture": "unknown", "os": "unknown"},
                annotations={"vnd.docker.reference.digest": image.manifest_digest,
                             "vnd.docker.reference.type": "attestation-manifest"},
            ),
        ],
    }  # fmt: skip
    return Built(json.dumps(doc, indent=2).encode(), OCI_INDEX), attestation


def runnable_subject(tag: str) -> BuiltImage:
    from .images import Entry

    return build_image([[Entry.file(f"{tag}.txt", f"signed {tag}\n".encode())]], fmt="oci")
