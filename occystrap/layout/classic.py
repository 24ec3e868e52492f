"""The classic `docker save` (`<id>/layer.tar`, a `manifest.json`, no registry manifest): the
manifests are made up from the files, as Docker itself would push them. Every layer member is
hashed once to learn its digest."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from occystrap import digest as digests
from occystrap.errors import ManifestError
from occystrap.layout.store import Store, iter_chunks, safe_name
from occystrap.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    DOCKER_MANIFEST,
    GZIP_MAGIC,
    OCI_LAYER_ZSTD,
    ZSTD_MAGIC,
)
from occystrap.model import Descriptor


@dataclass
class Made:
    entries: list[tuple[str, Descriptor]] = field(default_factory=list)  # RepoTag ("" if none) -> manifest
    virtual: dict[str, bytes] = field(default_factory=dict)  # made-up manifests and configs by digest
    members: dict[str, str] = field(default_factory=dict)  # layer digest -> member name


def synthesize(store: Store, docker: list[dict[str, Any]], small: Callable[[str], bytes | None]) -> Made:
    made = Made()
    for e in docker:
        config = small(member_name(store, e["Config"]))
        assert config is not None
        layers = [describe_layer(store, member_name(store, n), made) for n in e["Layers"]]
        doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": digests.of(config)},
            "layers": [d.to_json() for d in layers],
        }
        manifest = json.dumps(doc, indent=3).encode()
        digest = digests.of(manifest)
        made.virtual[digest] = manifest
        made.virtual[digests.of(config)] = config
        desc = Descriptor(DOCKER_MANIFEST, digest, len(manifest))
        tags = [t for t in e.get("RepoTags") or [] if isinstance(t, str)]
        made.entries += [(tag, desc) for tag in tags or [""]]
    return made


def member_name(store: Store, name: str) -> str:
    safe = safe_name(name)
    if safe is None or store.size(safe) is None:
        raise ManifestError(f"{store.path} names {name!r}, which it does not contain")
    return safe


def describe_layer(store: Store, name: str, made: Made) -> Descriptor:
    reader = store.open(name)
    try:
        head = reader.read(4)
    finally:
        reader.close()
    media = (
        DOCKER_LAYER_GZIP
        if head.startswith(GZIP_MAGIC)
        else OCI_LAYER_ZSTD
        if head.startswith(ZSTD_MAGIC)
        else DOCKER_LAYER_TAR
    )
    digest, size = digests.of_chunks(iter_chunks(store, name))
    made.members[digest] = name
    return Descriptor(media, digest, size)
