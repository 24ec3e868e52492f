"""A merged directory's shared files, recomputed for new roots: catalog.json, index.json,
manifest.json and each tag's docker-load manifest. Pure: files in, files out.

Roots replace what the directory held under the same name; everything else stays
(`merge`). `without` is the other way: the files once some names are removed (prune).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from occystrap import reference
from occystrap.layout import catalog, writer
from occystrap.model import Artifact, Image, Index, Node
from occystrap.platform import Platform
from occystrap.reference import Reference


@dataclass
class Shared:
    """The shared files' contents, as parsed documents."""

    images: catalog.Images = field(default_factory=dict)
    index: list[dict[str, Any]] = field(default_factory=list)
    docker: list[dict[str, Any]] = field(default_factory=list)
    manifests: dict[str, bytes] = field(default_factory=dict)  # per-tag manifest file -> bytes


def image_record(image: Image, rootfs: dict[str, str]) -> dict[str, Any]:
    entry = writer.docker_manifest_entry(writer.as_served(image))
    record: dict[str, Any] = {
        "kind": catalog.IMAGE,
        "manifest_digest": image.manifest.digest,
        "config": entry["Config"],
        "layers": entry["Layers"],
    }
    if image.platform is not None:
        record["platform"] = str(image.platform)
    if image.manifest.digest in rootfs:
        record["rootfs"] = rootfs[image.manifest.digest]
    return record


def artifact_record(artifact: Artifact) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": catalog.ARTIFACT,
        "manifest_digest": artifact.manifest.digest,
        "media_type": artifact.manifest.media_type,
        "artifact_type": artifact.artifact_type,
        "blobs": [writer.blob_path(d.digest) for d in artifact.blobs],
    }
    if artifact.subject is not None:
        record["subject"] = artifact.subject.digest
    if artifact.platform is not None:
        record["platform"] = str(artifact.platform)
    return record


def index_record(index: Index, rootfs: dict[str, str]) -> dict[str, Any]:
    platforms: dict[str, Any] = {}
    artifacts: dict[str, Any] = {}
    for child in index.children:
        if isinstance(child, Image):
            platforms[str(child.platform or "unknown")] = image_record(child, rootfs)
        elif isinstance(child, Artifact):
            artifacts[child.manifest.digest] = artifact_record(child)
        else:
            artifacts[child.manifest.digest] = {
                "kind": catalog.INDEX,
                "manifest_digest": child.manifest.digest,
                "media_type": child.manifest.media_type,
            }
    return {
        "kind": catalog.INDEX,
        "manifest_digest": index.manifest.digest,
        "media_type": index.manifest.media_type,
        "platforms": platforms,
        "artifacts": artifacts,
    }


def record(root: Node, rootfs: dict[str, str]) -> dict[str, Any]:
    if isinstance(root, Image):
        return image_record(root, rootfs)
    if isinstance(root, Artifact):
        return artifact_record(root)
    return index_record(root, rootfs)


def merge(shared: Shared, roots: Sequence[Node], primary: Platform | None, rootfs: dict[str, str]) -> Shared:
    """The shared files once `roots` are added (replacing what held the same names)."""
    images = {name: dict(tags) for name, tags in shared.images.items()}
    index = list(shared.index)
    docker = list(shared.docker)
    manifests: dict[str, bytes] = {}
    for root in roots:
        ref = root.reference
        rec = record(root, rootfs)
        entries = writer.docker_entries(root, primary)
        tagged = [e for e in entries if e["RepoTags"]] or entries[:1]
        if tagged:
            name = catalog.manifest_name(ref)
            manifests[name] = writer.manifest_json(tagged[:1])
            rec["manifest"] = name
        images.setdefault(ref.full_name, {})[catalog.tag_key(ref)] = rec
        index = [e for e in index if e.get("annotations", {}).get(writer.REF_NAME) != str(ref)]
        index.append(writer.index_entry(root))
        for entry in entries:
            tags = set(entry["RepoTags"])
            docker = [
                d
                for d in docker
                if not (tags & set(d.get("RepoTags", [])))
                and not (not tags and d.get("Config") == entry["Config"])
            ]
            docker.append(entry)
    return Shared(images, index, docker, manifests)


def files(shared: Shared) -> list[tuple[str, bytes]]:
    """Every shared file, catalog.json last: it is the commit point readers trust."""
    out = list(shared.manifests.items())
    out += [
        ("oci-layout", writer.OCI_LAYOUT),
        ("index.json", writer.index_json(shared.index)),
        ("manifest.json", writer.manifest_json(shared.docker)),
        (catalog.CATALOG, catalog.dump(shared.images)),
    ]
    return out


def ref_of(name: str, key: str) -> Reference:
    """A catalog entry's reference: `name:tag` or `name@digest`."""
    return reference.parse(f"{name}@{key}" if key.startswith("sha256:") else f"{name}:{key}")


def _configs(record: dict[str, Any]) -> set[str]:
    """The docker-load Config paths a catalog record's images use."""
    if catalog.kind_of(record) == catalog.INDEX:
        subs = record.get("platforms") or {}
        return {
            s["config"] for s in subs.values() if isinstance(s, dict) and isinstance(s.get("config"), str)
        }
    config = record.get("config")
    return {config} if catalog.kind_of(record) == catalog.IMAGE and isinstance(config, str) else set()


def without(shared: Shared, refs: Collection[Reference]) -> Shared:
    """The shared files once `refs` are gone; their per-tag manifest files are the caller's to delete.

    manifest.json loses the RepoTags of the removed tags; an entry whose tags all go is kept
    (untagged) while a remaining image still uses its Config, so `docker load` still has it.
    """
    gone = {str(r) for r in refs}
    images: catalog.Images = {}
    for name, tags in shared.images.items():
        left = {key: rec for key, rec in tags.items() if str(ref_of(name, key)) not in gone}
        if left:
            images[name] = left
    index = [e for e in shared.index if e.get("annotations", {}).get(writer.REF_NAME) not in gone]
    lost_tags = {r.repo_tag for r in refs if r.repo_tag}
    used = {c for tags in images.values() for rec in tags.values() for c in _configs(rec)}
    docker: list[dict[str, Any]] = []
    untagged: list[dict[str, Any]] = []
    for entry in shared.docker:
        kept = [t for t in entry.get("RepoTags") or [] if t not in lost_tags]
        (docker if kept else untagged).append({**entry, "RepoTags": kept})
    for entry in untagged:
        config = entry.get("Config")
        if config in used and all(d.get("Config") != config for d in docker):
            docker.append(entry)
    return Shared(images, index, docker, {})
