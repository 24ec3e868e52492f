"""catalog.json: which images and tags a merged directory holds, and what each uses.

{"images": {"<registry>/<repository>": {"<tag or digest>": {
    "manifest": "manifest-<name>.json", "manifest_digest": "sha256:…",
    "config": "blobs/sha256/…", "layers": ["blobs/sha256/…", …],
    "platform": "linux/amd64", "rootfs": "rootfs/<hex>" (with --expand)}}}}
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from occystrap.errors import ManifestError, NotFoundError
from occystrap.reference import Reference

CATALOG = "catalog.json"


def tag_key(ref: Reference) -> str:
    return ref.tag or ref.digest or "latest"


def manifest_name(ref: Reference) -> str:
    """Unique and readable: the name and tag, made file-safe, plus a short hash against collisions."""
    full = f"{ref.full_name}:{tag_key(ref)}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", full).strip("_")[:120]
    return f"manifest-{slug}-{hashlib.sha256(full.encode()).hexdigest()[:8]}.json"


def load(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    path = root / CATALOG
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ManifestError(f"malformed {path}: {exc}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict) or not all(
        isinstance(tags, dict) and all(isinstance(e, dict) and "manifest" in e for e in tags.values())
        for tags in images.values()
    ):
        raise ManifestError(f"malformed {path}: expected {{'images': {{name: {{tag: {{manifest: …}}}}}}}}")
    return images


def dump(images: dict[str, dict[str, dict[str, Any]]]) -> bytes:
    return json.dumps({"images": images}, indent=2, sort_keys=True).encode() + b"\n"


def lookup(root: Path, ref: Reference) -> dict[str, Any]:
    images = load(root)
    entry = images.get(ref.full_name, {}).get(tag_key(ref))
    if entry is None:
        held = sorted(f"{name}:{tag}" for name, tags in images.items() for tag in tags)
        listing = ", ".join(held) if held else "nothing"
        raise NotFoundError(f"{ref.full_name}:{tag_key(ref)} is not in {root}; it holds: {listing}")
    return entry
