"""The lock file: exactly which content each mirrored tag resolved to.

Written by `mirror` (beside its DEST, or where --lock says) and by `occystrap lock SPEC.yaml`,
replayed by `mirror --locked`. Format version 2, the one written::

    {
      "version": 2,
      "images": {
        "<registry>/<repository>": {
          "<tag or sha256:digest>": {
            "<os>/<arch>[/<variant>]": "sha256:<manifest digest>"
          }
        }
      }
    }

A tag whose whole index is carried (`platforms: all`) is locked as {"index": "sha256:…"}.
Every mapping is sorted and every digest sits on its own line, so a tag that moved changes
one line of a diff and two runs over the same content write the same bytes. `version`
comes first; a reader meeting a version it does not know refuses the file instead of
guessing. Version 1 (the images mapping at the top level, no `version`) is still read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from occystrap.digest import is_digest
from occystrap.errors import ManifestError, OccystrapError, UsageError
from occystrap.model import load_json
from occystrap.platform import Platform
from occystrap.sinks.base import write_atomic

LOCK_NAME = "occystrap.lock"
INDEX_KEY = "index"
VERSION = 2
Lock = dict[str, dict[str, dict[str, str]]]


def is_tarball(dest: Path) -> bool:
    return dest.suffix == ".tar"


def lock_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".lock") if is_tarball(dest) else dest / LOCK_NAME


def spec_lock_path(spec: Path) -> Path:
    """Where `occystrap lock SPEC.yaml` keeps its lock by default: beside the spec, as Cargo.lock."""
    return spec.with_suffix(".lock")


def read_lock(path: Path) -> Lock:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"--locked needs {path}, which does not exist (run without --locked first)"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read lock file {path}: {exc}") from None
    return parse_lock(data, str(path))


def parse_lock(data: bytes, where: str) -> Lock:
    doc = load_json(data, where)
    if isinstance(doc, dict) and "version" in doc:
        if doc["version"] != VERSION:
            raise ManifestError(f"{where}: lock format version {doc['version']!r} is not known here")
        if set(doc) != {"version", "images"}:
            extra = ", ".join(sorted(str(k) for k in doc if k not in ("version", "images")))
            raise ManifestError(f"malformed {where}: unknown key(s) {extra}")
        doc = doc["images"]
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
        shape = "{'version': 2, 'images': {image: {tag: {platform: digest}}}}"
        raise ManifestError(f"malformed {where}: expected {shape}")
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


def _sorted(value: Any) -> Any:
    return {k: _sorted(value[k]) for k in sorted(value)} if isinstance(value, dict) else value


def lock_bytes(lock: Lock) -> bytes:
    # Built in order rather than with sort_keys, so that `version` leads the file.
    doc = {"version": VERSION, "images": _sorted(lock)}
    return json.dumps(doc, indent=2).encode() + b"\n"


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
