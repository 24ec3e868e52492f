"""mirror --report: what a run did, per image and tag, as data a CI job can act on.

    {"version": 1, "destination": str, "ok": bool,
     "images": {"<registry>/<repository>": {"<tag or digest>": {
         "outcome": "fetched" | "pushed" | "unchanged" | "artifact" | "failed",
         "digests": {"<platform>" | "index": "sha256:…"},
         "bytes": int,               # the blobs the tag's content refers to
         "sources": ["<registry or mirror>", …]}}},   # where the blobs moved this run came from
     "failed": [{"image": str, "error": "<class>", "message": str, "exit_code": int}]}

With --keep-going, `failed` is the list to retry: `occystrap mirror --image …` for each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from occystrap.errors import OccystrapError
from occystrap.layout.writer import streamed
from occystrap.mirror.changes import UNCHANGED, Changes
from occystrap.mirror.plan import Plan, Planned
from occystrap.model import Artifact
from occystrap.sinks.base import write_atomic

VERSION = 1


def _outcome(items: list[Planned], status: str | None, failed: bool, upload: bool) -> str:
    if failed:
        return "failed"
    if status == UNCHANGED:
        return "unchanged"
    if all(isinstance(p.node, Artifact) for p in items):
        return "artifact"
    return "pushed" if upload else "fetched"


def build(
    planned: list[Planned],
    result: Plan,
    found: Changes | None,
    sources: Mapping[str, str],
    destination: str,
    upload: bool,
) -> dict[str, Any]:
    """planned: every item as planned (before failures were taken out); sources: blob digest -> where
    it came from this run."""
    statuses = {(t.source, t.key): t.status for t in found.tags} if found is not None else {}
    groups: dict[tuple[str, str], list[Planned]] = {}
    for p in planned:
        groups.setdefault((p.source, p.key), []).append(p)
    images: dict[str, dict[str, Any]] = {}
    for (name, key), items in sorted(groups.items()):
        blobs = {l.descriptor.digest: l.descriptor.size for p in items for l in streamed([p.node])}
        images.setdefault(name, {})[key] = {
            "outcome": _outcome(items, statuses.get((name, key)), name in result.failures, upload),
            "digests": {p.platform: p.manifest_digest for p in items},
            "bytes": sum(blobs.values()),
            "sources": sorted({sources[d] for d in blobs if d in sources}),
        }
    return {
        "version": VERSION,
        "destination": destination,
        "ok": not result.failures,
        "images": images,
        "failed": [
            _failure(name, why, result.errors.get(name)) for name, why in sorted(result.failures.items())
        ],
    }


def _failure(name: str, message: str, err: OccystrapError | None) -> dict[str, Any]:
    return {
        "image": name,
        "error": type(err).__name__ if err is not None else "OccystrapError",
        "message": message,
        "exit_code": err.exit_code if err is not None else 1,
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
