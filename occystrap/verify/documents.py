"""verify: the documents of a layout. index.json and the manifests and indexes it names
(nested indexes included), each manifest's config and its claims on layer and artifact blobs."""

from __future__ import annotations

from occystrap.digest import is_digest
from occystrap.errors import ManifestError
from occystrap.layout.reader import parse_name
from occystrap.layout.writer import CONTAINERD_NAME, REF_NAME, blob_path
from occystrap.mediatypes import INDEX_TYPES
from occystrap.model import parse_index, parse_manifest
from occystrap.verify.result import LAYOUT, MANIFEST
from occystrap.verify.state import ManifestInfo, State, short


def manifest(v: State, digest: str, size: int | None, media: str, label: str) -> ManifestInfo | None:
    name = v.blob_name(digest, f"manifest of {label}")
    if name is None:
        return None
    v.claim(name, f"manifest of {label}", digest, size)
    if digest in v.manifests:
        return v.manifests[digest]
    v.manifests[digest] = None
    data = v.read_small(name, digest)
    if data is None:
        return None
    doc = v.read_json(name, data)
    if not isinstance(doc, dict):
        if doc is not None:
            v.problem(name, f"manifest of {label} is not a JSON object", MANIFEST)
        return None
    media = media or str(doc.get("mediaType") or "")
    if media in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
        nested_index(v, name, data, label)
        return None
    try:
        parsed = parse_manifest(data, label)
    except ManifestError as exc:
        v.problem(name, str(exc), MANIFEST)
        return None
    config, layers = parsed.config, parsed.layers
    if not parsed.is_image:
        # An artifact (signature, attestation, SBOM): its blobs are carried, never unpacked.
        v.artifacts += 1
        for i, blob in enumerate((config, *layers)):
            v.claim(blob_path(blob.digest), f"blob {i + 1} of artifact {label}", blob.digest, blob.size)
        return None
    config_name = blob_path(config.digest)
    v.claim(config_name, f"config of {label}", config.digest, config.size)
    config_doc, diff_ids, _ = v.config(config_name, config.digest, label)
    if diff_ids is not None and len(diff_ids) != len(layers):
        v.problem(
            name,
            f"manifest of {label} lists {len(layers)} layers but its config has {len(diff_ids)} diff_ids",
            MANIFEST,
        )
        diff_ids = None
    for i, layer in enumerate(layers):
        v.claim(
            blob_path(layer.digest),
            f"layer {i + 1} of {label}",
            layer.digest,
            layer.size,
            diff_ids[i] if diff_ids else None,
        )
    found = ManifestInfo(digest, config, tuple(layers), config_doc)
    v.manifests[digest] = found
    v.by_config.setdefault(config.digest, []).append(found)
    return found


def nested_index(v: State, name: str, data: bytes, label: str) -> None:
    """An index inside the layout: the platform manifests it holds are checked; an index may
    list platforms the layout does not hold (docker save keeps only what it has)."""
    try:
        entries = parse_index(data, name)
    except ManifestError as exc:
        v.problem(name, str(exc), MANIFEST)
        return
    for entry in entries:
        if is_digest(entry.digest) and v.store.size(blob_path(entry.digest)) is not None:
            plat = f" {entry.platform}" if entry.platform else ""
            manifest(v, entry.digest, entry.size, entry.media_type, f"{label}{plat}")


def check_index(v: State) -> None:
    data = v.read_small("index.json")
    if data is None:
        return
    oci = v.read_small("oci-layout")
    if oci is None:
        v.problem("oci-layout", "missing (an OCI layout with index.json needs it)", LAYOUT)
    else:
        doc = v.read_json("oci-layout", oci)
        if not isinstance(doc, dict) or not isinstance(doc.get("imageLayoutVersion"), str):
            v.problem("oci-layout", "has no imageLayoutVersion", LAYOUT)
    if v.read_json("index.json", data) is None:
        return
    try:
        entries = parse_index(data, "index.json")
    except ManifestError as exc:
        v.problem("index.json", str(exc), MANIFEST)
        return
    for i, entry in enumerate(entries):
        notes = dict(entry.annotations)
        ref_name = notes.get(REF_NAME, "")
        full = notes.get(CONTAINERD_NAME) or ref_name
        ref = parse_name(full) or parse_name(ref_name)
        label = str(ref) if ref is not None else f"index.json entry {i} ({short(entry.digest)})"
        v.images += 1
        found = manifest(v, entry.digest, entry.size, entry.media_type, label)
        if ref_name:
            v.index_refs.setdefault(ref_name, entry.digest)
        v.index_entries.append((label, ref, entry.digest, found))
