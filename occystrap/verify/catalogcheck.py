"""verify: catalog.json of a merged directory: each record's manifest file, digest, config,
layers, platform and root filesystem agree with the layout and with index.json."""

from __future__ import annotations

from typing import Any

from occystrap import reference
from occystrap.digest import is_digest
from occystrap.errors import OccystrapError
from occystrap.layout import catalog
from occystrap.layout.store import safe_name
from occystrap.layout.writer import blob_path
from occystrap.reference import Reference
from occystrap.verify.documents import manifest
from occystrap.verify.result import CATALOG, TAGS
from occystrap.verify.state import ManifestInfo, State, short


def check_catalog(v: State) -> None:
    data = v.read_small(catalog.CATALOG)
    if data is None:
        return
    doc = v.read_json(catalog.CATALOG, data)
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict) or not all(isinstance(t, dict) for t in images.values()):
        if doc is not None:
            v.problem(catalog.CATALOG, "malformed: expected {'images': {name: {tag: {...}}}}", CATALOG)
        return
    listed: set[str] = set()
    for name, tags in sorted(images.items()):
        for key, record in sorted(tags.items()):
            ref = catalog_entry(v, name, key, record)
            if ref is not None:
                listed.add(str(ref))
    for ref_name in sorted(v.index_refs):
        if ref_name not in listed:
            v.problem("index.json", f"lists {ref_name}, which catalog.json does not", CATALOG)


def catalog_entry(v: State, name: str, key: str, record: Any) -> Reference | None:
    label = f"{name}@{key}" if key.startswith("sha256:") else f"{name}:{key}"
    where = f"{catalog.CATALOG} {label}"
    try:
        ref = reference.parse(label)
    except OccystrapError:
        v.problem(where, "is not a valid image name", CATALOG)
        return None
    if not isinstance(record, dict):
        v.problem(where, "is not an object", CATALOG)
        return ref
    kind = catalog.kind_of(record)
    digest = record.get("manifest_digest")
    if not is_digest(digest):
        v.problem(where, f"has no valid manifest_digest ({digest!r})", CATALOG)
        return ref
    assert isinstance(digest, str)
    if kind == catalog.INDEX:
        # The index itself is claimed (its entries with it); each platform is an image record.
        manifest(v, digest, None, record.get("media_type") or "", label)
        platforms = record.get("platforms")
        if not isinstance(platforms, dict):
            v.problem(where, "is an index record without platforms", CATALOG)
            platforms = {}
        for plat, sub in sorted(platforms.items()):
            if isinstance(sub, dict):
                image_record(v, f"{where} {plat}", ref, sub, f"{label} {plat}")
            else:
                v.problem(f"{where} {plat}", "is not an object", CATALOG)
        runnable = [p for p in platforms.values() if isinstance(p, dict)]
        if runnable:  # an index of artifacts only has nothing for docker load
            manifest_file(v, where, ref, record, runnable)
    elif kind == catalog.ARTIFACT:
        manifest(v, digest, None, record.get("media_type") or "", label)
    else:
        image_record(v, where, ref, record, label)
        manifest_file(v, where, ref, record, [record])
    listed = v.index_refs.get(str(ref))
    if listed is None:
        v.problem(where, "is not listed in index.json", CATALOG)
    elif listed != digest:
        v.problem(where, f"is {digest} here but {listed} in index.json", CATALOG)
    return ref


def image_record(v: State, where: str, ref: Reference, record: dict[str, Any], label: str) -> None:
    """One image's record: its manifest, config, layers, platform and root filesystem."""
    digest = record.get("manifest_digest")
    if not is_digest(digest):
        v.problem(where, f"has no valid manifest_digest ({digest!r})", CATALOG)
        return
    assert isinstance(digest, str)
    found = manifest(v, digest, None, "", label)
    if found is not None:
        if record.get("config") != blob_path(found.config.digest):
            v.problem(where, f"config {record.get('config')} is not manifest {short(digest)}'s", CATALOG)
        if record.get("layers") != found.layer_names:
            v.problem(where, f"layers differ from manifest {short(digest)}'s", CATALOG)
        catalog_platform(v, where, record.get("platform"), found)
    rootfs = record.get("rootfs")
    if rootfs is not None:
        rootfs_name = safe_name(rootfs) if isinstance(rootfs, str) else None
        if rootfs_name is None or not v.store.is_dir(rootfs_name):
            v.problem(where, f"its root filesystem {rootfs} is missing", CATALOG)


def manifest_file(
    v: State, where: str, ref: Reference, record: dict[str, Any], images: list[dict[str, Any]]
) -> None:
    """The tag's docker-load manifest file: present, and naming one of the tag's images."""
    manifest_file = record.get("manifest")
    file_name = safe_name(manifest_file) if isinstance(manifest_file, str) else None
    if file_name is None:
        v.problem(where, f"has no usable manifest file name ({manifest_file!r})", CATALOG)
    elif v.store.size(file_name) is None:
        v.problem(where, f"its manifest file {file_name} is missing", CATALOG)
    else:
        catalog_manifest_file(v, where, file_name, ref, images)


def catalog_manifest_file(
    v: State, where: str, file_name: str, ref: Reference, images: list[dict[str, Any]]
) -> None:
    data = v.read_small(file_name)
    doc = v.read_json(file_name, data) if data is not None else None
    if doc is None:
        return
    if not (isinstance(doc, list) and len(doc) == 1 and isinstance(doc[0], dict)):
        v.problem(file_name, f"is not a one-entry manifest.json list ({where})", CATALOG)
        return
    entry = doc[0]
    match = next((i for i in images if i.get("config") == entry.get("Config")), None)
    if match is None:
        wanted = " or ".join(str(i.get("config")) for i in images) or "an image's config"
        v.problem(file_name, f"Config {entry.get('Config')} is not {wanted} ({where})", CATALOG)
    elif entry.get("Layers") != match.get("layers"):
        v.problem(file_name, f"Layers differ from {where}", CATALOG)
    want_tags = [ref.repo_tag] if ref.repo_tag else []
    if (entry.get("RepoTags") or []) != want_tags:
        v.problem(file_name, f"RepoTags {entry.get('RepoTags')} should be {want_tags}", TAGS)


def catalog_platform(v: State, where: str, platform: Any, found: ManifestInfo) -> None:
    doc = found.config_doc
    if not isinstance(platform, str) or not isinstance(doc, dict):
        return
    os_, _, rest = platform.partition("/")
    arch = rest.partition("/")[0]
    if (doc.get("os"), doc.get("architecture")) != (os_, arch):
        v.problem(
            where,
            f"platform {platform}, but its config says {doc.get('os')}/{doc.get('architecture')}",
            CATALOG,
        )
