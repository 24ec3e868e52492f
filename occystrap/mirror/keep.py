"""Which catalog entries of a merged directory a prune keeps: what a spec, a lock or a list of
names wants, read offline against what the directory holds.

A spec's filters (include, exclude, range, latest) select among the tags the directory
holds. A kept tag keeps its other platforms (stored under their manifest digests) as the
locks record them, and whatever refers to a kept manifest (signatures, attestations, SBOMs,
two levels deep) is kept with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from occystrap.digest import is_digest
from occystrap.layout import catalog
from occystrap.mirror.lockfile import Lock
from occystrap.mirror.plan import Plan
from occystrap.mirror.spec import MirrorSpec
from occystrap.mirror.tags import select_tags
from occystrap.reference import Reference

Key = tuple[str, str]


@dataclass(frozen=True)
class Wanted:
    refs: tuple[Reference, ...] = ()
    spec: MirrorSpec | None = None
    lock: Lock | None = None

    @property
    def empty(self) -> bool:
        return not self.refs and self.spec is None and self.lock is None


def _manifests(record: dict[str, Any]) -> set[str]:
    out = {record.get("manifest_digest")}
    for key in ("platforms", "artifacts"):
        out |= {
            sub.get("manifest_digest") for sub in (record.get(key) or {}).values() if isinstance(sub, dict)
        }
    return {d for d in out if isinstance(d, str)}


def _with_referrers(images: catalog.Images, keep: set[Key]) -> None:
    for _ in range(2):  # the signature of an attestation, too
        subjects = {d for name, key in keep for d in _manifests(images.get(name, {}).get(key) or {})}
        for name, tags in images.items():
            for key, record in tags.items():
                schema = key.startswith("sha256-") and "sha256:" + key[7:71] in subjects
                if schema or record.get("subject") in subjects:
                    keep.add((name, key))


def _platforms(keep: set[Key], locks: Iterable[Lock | None]) -> None:
    for lock in locks:
        for name, key in list(keep):
            for digest in (lock or {}).get(name, {}).get(key, {}).values():
                keep.add((name, digest))


def kept(images: catalog.Images, wanted: Wanted, dir_lock: Lock | None) -> set[Key]:
    keep: set[Key] = {(r.full_name, catalog.tag_key(r)) for r in wanted.refs}
    for name, tags in (wanted.lock or {}).items():
        keep.update((name, key) for key in tags)
    locked = set(wanted.lock or {}) | set(dir_lock or {})
    for spec in wanted.spec.images if wanted.spec is not None else ():
        held = images.get(spec.name, {})
        names = [k for k in held if not is_digest(k)]
        chosen = select_tags(names, spec.tags, spec.include, spec.exclude, spec.latest, spec.version_range)
        keep.update((spec.name, k) for k in [*chosen, *spec.digests])
        several = spec.platforms != "all" and len(spec.platforms) > 1
        if several and spec.name not in locked:
            # No lock says which platform digests belong to which tag: keep them all.
            keep.update((spec.name, k) for k in held if is_digest(k))
    _platforms(keep, (wanted.lock, dir_lock))
    _with_referrers(images, keep)
    return keep


def planned(images: catalog.Images, result: Plan) -> set[Key]:
    """What `mirror --prune` keeps: every entry the run wrote, and all of any image that failed."""
    keep: set[Key] = {(p.source, catalog.tag_key(p.node.reference)) for p in result.items}
    for name in result.failures:
        keep.update((name, key) for key in images.get(name, {}))
    _with_referrers(images, keep)
    return keep


def not_held(images: catalog.Images, wanted: Wanted) -> list[str]:
    """Names asked for by --keep or the lock that the directory does not hold."""
    asked = [(r.full_name, catalog.tag_key(r)) for r in wanted.refs]
    asked += [(n, k) for n, tags in (wanted.lock or {}).items() for k in tags]
    return sorted(f"{n}@{k}" if is_digest(k) else f"{n}:{k}" for n, k in asked if k not in images.get(n, {}))
