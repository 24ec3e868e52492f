"""catalog.json: which images and tags a merged directory holds, and what each uses.

    {"images": {"<registry>/<repository>": {"<tag or digest>": RECORD}}}

RECORD, by what the tag points at (`kind`; records without one are images):

- image: {"kind": "image", "manifest": "manifest-<name>.json" (its docker-load manifest),
  "manifest_digest": "sha256:…", "config": "blobs/sha256/…", "layers": ["blobs/sha256/…", …],
  "platform": "linux/amd64", "rootfs": "rootfs/<hex>" (with --expand)}
- index: {"kind": "index", "manifest_digest": <the index's digest>, "media_type": …,
  "platforms": {"linux/amd64": <image record>, …}, "artifacts": {<digest>: <artifact record>}}
- artifact: {"kind": "artifact", "manifest_digest": …, "media_type": …, "artifact_type": …,
  "blobs": ["blobs/sha256/…", …], "subject": "sha256:…" (when it refers to another manifest)}
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from occystrap.errors import ManifestError, NotFoundError
from occystrap.reference import Reference

CATALOG = "catalog.json"
IMAGE = "image"
INDEX = "index"
ARTIFACT = "artifact"

Images = dict[str, dict[str, dict[str, Any]]]


def tag_key(ref: Reference) -> str:
    return ref.tag or ref.digest or "latest"


def manifest_name(ref: Reference) -> str:
    """Unique and readable: the name and tag, made file-safe, plus a short hash against collisions."""
    full = f"{ref.full_name}:{tag_key(ref)}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", full).strip("_")[:120]
    return f"manifest-{slug}-{hashlib.sha256(full.encode()).hexdigest()[:8]}.json"


def kind_of(record: dict[str, Any]) -> str:
    kind = record.get("kind", IMAGE)
    return kind if isinstance(kind, str) else IMAGE


def parse(data: bytes | None, where: str) -> Images:
    """The catalog's images; empty when there is none (data None)."""
    if data is None:
        return {}
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"malformed {where}: {exc}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict) or not all(
        isinstance(tags, dict)
        and all(isinstance(e, dict) and isinstance(e.get("manifest_digest"), str) for e in tags.values())
        for tags in images.values()
    ):
        raise ManifestError(
            f"malformed {where}: expected {{'images': {{name: {{tag: {{manifest_digest: …}}}}}}}}"
        )
    return images


def dump(images: Images) -> bytes:
    return json.dumps({"images": images}, indent=2, sort_keys=True).encode() + b"\n"


def lookup(images: Images, ref: Reference, where: str) -> dict[str, Any]:
    entry = images.get(ref.full_name, {}).get(tag_key(ref))
    if entry is None:
        raise NotFoundError(f"{ref.full_name}:{tag_key(ref)} is not in {where}; it holds: {listing(images)}")
    return entry


def listing(images: Images) -> str:
    held = sorted(f"{name}:{tag}" if not tag.startswith("sha256:") else f"{name}@{tag}"
                  for name, tags in images.items() for tag in tags)  # fmt: skip
    return ", ".join(held) if held else "nothing"
