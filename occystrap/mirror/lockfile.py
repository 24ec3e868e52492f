"""The lock file: exactly which content each mirrored tag resolved to.

    {"<registry>/<repository>": {"<tag or digest>": {"<os/arch[/variant]>": "sha256:…"}}}

A tag whose whole index is carried (`platforms: all`) is locked as {"index": "sha256:…"}.
Sorted keys and two-space indents: diff-friendly, stable across runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from occystrap.digest import is_digest
from occystrap.errors import ManifestError, OccystrapError, UsageError
from occystrap.model import load_json
from occystrap.platform import Platform
from occystrap.sinks.base import write_atomic

LOCK_NAME = "occystrap.lock"
INDEX_KEY = "index"
Lock = dict[str, dict[str, dict[str, str]]]


def is_tarball(dest: Path) -> bool:
    return dest.suffix == ".tar"


def lock_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".lock") if is_tarball(dest) else dest / LOCK_NAME


def read_lock(path: Path) -> Lock:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"--locked needs {path}, which does not exist (run without --locked first)"
        ) from None
    return parse_lock(data, str(path))


def parse_lock(data: bytes, where: str) -> Lock:
    doc = load_json(data, where)
    ok = isinstance(doc, dict) and all(
        isinstance(tags, dict)
        and all(
            isinstance(plats, dict)
            and plats
            and all(isinstance(p, str) and is_digest(d) for p, d in plats.items())
            for plats in tags.values()
        )
        for tags in doc.values()
    )
    if not ok:
        raise ManifestError(f"malformed {where}: expected {{image: {{tag: {{platform: digest}}}}}}")
    for tags in doc.values():
        for plats in tags.values():
            if INDEX_KEY in plats and len(plats) > 1:
                raise ManifestError(f"malformed {where}: a tag locked to an index has no other platforms")
            for p in plats:
                if p == INDEX_KEY:
                    continue
                try:
                    Platform.parse(p)
                except ValueError as exc:
                    raise ManifestError(f"malformed {where}: {exc}") from None
    return doc  # type: ignore[no-any-return]


def lock_bytes(lock: Lock) -> bytes:
    return json.dumps(lock, indent=2, sort_keys=True).encode() + b"\n"


def write_lock(path: Path, fresh: Lock, failed: dict[str, str]) -> None:
    """Write what was mirrored; a failed image keeps what an earlier lock said about it."""
    out = dict(fresh)
    if failed and path.exists():
        try:
            old = read_lock(path)
        except OccystrapError:
            old = {}
        for name in failed:
            if name in old and name not in out:
                out[name] = old[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lock_bytes(out))
