"""verify: manifest.json, what `docker load` reads: each entry's Config and Layers present and
agreeing with the OCI manifests, RepoTags well formed, unique and covering index.json's names.
Also skopeo's `dir:` form, where manifest.json is the image manifest itself."""

from __future__ import annotations

from typing import Any

from occystrap.errors import ManifestError
from occystrap.layout.reader import parse_name
from occystrap.layout.store import safe_name
from occystrap.layout.writer import blob_path
from occystrap.model import parse_manifest
from occystrap.verify.result import LAYOUT, MANIFEST, TAGS
from occystrap.verify.state import State, digest_of_name


def check_docker(v: State, has_index: bool) -> None:
    data = v.read_small("manifest.json")
    if data is None:
        return
    doc = v.read_json("manifest.json", data)
    if doc is None:
        return
    if isinstance(doc, dict) and "layers" in doc and not has_index:
        dir_transport(v, data)
        return
    if not isinstance(doc, list):
        v.problem("manifest.json", "is not a JSON list", MANIFEST)
        return
    tagged: dict[str, tuple[int, str]] = {}  # RepoTag -> (entry, Config)
    for i, entry in enumerate(doc):
        docker_entry(v, i, entry, has_index, tagged)
    if not has_index:
        return
    for label, ref, _digest, found in v.index_entries:
        if ref is None or ref.repo_tag is None or found is None:
            continue
        want = ref.repo_tag
        config_name = blob_path(found.config.digest)
        if want not in tagged:
            v.problem(
                "manifest.json",
                f"no entry has RepoTags {want}, which index.json names ({label}): "
                "docker load would not tag it",
                TAGS,
            )
        elif tagged[want][1] != config_name:
            v.problem(
                f"manifest.json[{tagged[want][0]}]",
                f"RepoTags {want} is on Config {tagged[want][1]}, but index.json's {label} "
                f"has config {config_name}",
                TAGS,
            )


def dir_transport(v: State, data: bytes) -> None:
    """skopeo's dir: transport: manifest.json is the image manifest, each blob a file named <hex>."""
    label = "manifest.json"
    try:
        parsed = parse_manifest(data, label)
    except ManifestError as exc:
        v.problem(label, str(exc), MANIFEST)
        return
    config, layers = parsed.config, parsed.layers
    v.images += 1
    config_name = config.digest.hex
    v.claim(config_name, "config of manifest.json", config.digest, config.size)
    _doc, diff_ids, _ = v.config(config_name, config.digest, label)
    if diff_ids is not None and len(diff_ids) != len(layers):
        v.problem(label, f"lists {len(layers)} layers but its config has {len(diff_ids)} diff_ids", MANIFEST)
        diff_ids = None
    for i, layer in enumerate(layers):
        who = f"layer {i + 1} of manifest.json"
        diff_id = diff_ids[i] if diff_ids else None
        v.claim(layer.digest.hex, who, layer.digest, layer.size, diff_id)


def docker_entry(v: State, i: int, entry: Any, has_index: bool, tagged: dict[str, tuple[int, str]]) -> None:
    where = f"manifest.json[{i}]"
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("Config"), str)
        or not isinstance(entry.get("Layers"), list)
        or not all(isinstance(x, str) for x in entry["Layers"])
    ):
        v.problem(where, "malformed: needs Config (a string) and Layers (a list of strings)", MANIFEST)
        return
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        v.problem(where, "RepoTags is not a list of strings", TAGS)
        tags = []
    label = f"{where} ({tags[0]})" if tags else where
    if not has_index:
        v.images += 1
    names = [safe_name(n) for n in [entry["Config"], *entry["Layers"]]]
    if any(n is None for n in names):
        bad = [n for n, s in zip([entry["Config"], *entry["Layers"]], names, strict=True) if s is None]
        v.problem(label, f"names {bad[0]!r}, which points outside the layout", LAYOUT)
        return
    config_name, *layer_names = [n for n in names if n is not None]
    v.claim(config_name, f"Config of {label}")
    config_doc, diff_ids, config_digest = v.config(config_name, digest_of_name(config_name), label)
    if diff_ids is not None and len(diff_ids) != len(layer_names):
        v.problem(
            label,
            f"lists {len(layer_names)} Layers but its config has {len(diff_ids)} diff_ids",
            MANIFEST,
        )
        diff_ids = None
    for j, name in enumerate(layer_names):
        v.claim(name, f"layer {j + 1} of {label}", diff_id=diff_ids[j] if diff_ids else None)
    if has_index and config_doc is not None and config_digest is not None:
        candidates = v.by_config.get(config_digest, [])
        if not candidates:
            v.problem(
                label,
                f"its Config {config_name} is not the config of any manifest index.json lists",
                MANIFEST,
            )
        elif all(m.layer_names != layer_names for m in candidates):
            v.problem(
                label,
                f"its Layers differ from the layers of manifest {candidates[0].digest} (same config)",
                MANIFEST,
            )
    for tag in tags:
        ref = parse_name(tag)
        if ref is None or ref.tag is None:
            v.problem(label, f"RepoTags entry {tag!r} is not a valid name:tag", TAGS)
        elif tag in tagged:
            v.problem(label, f"RepoTags {tag} is also claimed by manifest.json[{tagged[tag][0]}]", TAGS)
        else:
            tagged[tag] = (i, config_name)
