"""prune DIR: drop the images no longer wanted from a merged directory, then every blob that no
remaining image references (manifests, configs, layers, artifact blobs, index children) and
the expanded trees (`rootfs/`, `layers/`) of what went.

Marking follows the manifests themselves from each kept catalog entry (an index's children,
a manifest's config and layers), together with every blob path the kept catalog records
name, so nothing a remaining entry could reach is ever deleted; a kept manifest that is
missing or damaged stops the prune before anything changes.

Crash-safe by order, under the directory's exclusive lock (no mirror or import may be
writing blobs a catalog does not name yet): the shared files are rewritten first (the
catalog last, as every write does), the directory's own lock file next, and only then are
files deleted. A crash part way leaves unreferenced blobs, which the next prune removes.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from occystrap import digest as digests
from occystrap.errors import IntegrityError, UsageError
from occystrap.events import BlobRemoved, Info, Reporter
from occystrap.layout import catalog, dirlock, merged, writer
from occystrap.layout.store import DirStore
from occystrap.layout.writer import blob_path
from occystrap.mediatypes import MAX_MANIFEST_BYTES
from occystrap.mirror.lockfile import LOCK_NAME, Lock, lock_bytes, parse_lock
from occystrap.model import Node, load_json, walk
from occystrap.reference import Reference
from occystrap.sinks.base import write_atomic
from occystrap.sinks.directory import LOCK, read_shared
from occystrap.ui.units import human

Key = tuple[str, str]  # (image name, tag or digest) as catalog.json keys them
Choose = Callable[[catalog.Images, Lock | None], set[Key]]
_PER_TAG = re.compile(r"manifest-.+\.json")


@dataclass
class Pruning:
    """What a prune removes; `apply` carries it out."""

    root: Path
    removed: list[Reference]
    shared: merged.Shared
    lock: Lock | None  # DIR/occystrap.lock without the removed tags; None: unchanged
    blobs: dict[str, int] = field(default_factory=dict)  # blobs/sha256/<hex> -> size
    trees: list[str] = field(default_factory=list)  # rootfs/<hex>, layers/<hex>
    manifests: list[str] = field(default_factory=list)  # per-tag docker-load manifests

    @property
    def freed(self) -> int:
        return sum(self.blobs.values())

    def lines(self, verb: str = "would remove") -> list[str]:
        total = (
            f"{self.root}: {verb} {len(self.removed)} tag(s), {len(self.blobs)} blob(s),"
            f" freeing {human(self.freed)} ({self.freed} bytes)"
        )
        return [*(f"{verb} {r}" for r in self.removed), total]


def _manifest_paths(root: Path, digest: str, seen: set[str], where: str) -> None:
    """Mark a manifest or index and everything it names (that the directory holds)."""
    path = blob_path(digest)
    if path in seen:
        return
    seen.add(path)
    try:
        size = (root / path).stat().st_size
        data = (root / path).read_bytes() if size <= MAX_MANIFEST_BYTES else b""
    except OSError:
        raise IntegrityError(
            f"{root}: {where} needs {path}, which is missing; run verify (nothing pruned)"
        ) from None
    if digests.of(data) != digest:
        raise IntegrityError(f"{root}: {path} ({where}) is damaged; run verify (nothing pruned)")
    doc = load_json(data, path)
    if not isinstance(doc, dict):
        return
    for child in doc.get("manifests") or []:
        child_digest = child.get("digest") if isinstance(child, dict) else None
        if digests.is_digest(child_digest) and (root / blob_path(str(child_digest))).is_file():
            _manifest_paths(root, str(child_digest), seen, where)
    for desc in [doc.get("config"), *(doc.get("layers") or [])]:
        if isinstance(desc, dict) and digests.is_digest(desc.get("digest")):
            seen.add(blob_path(str(desc["digest"])))


def _record_paths(record: dict[str, Any]) -> set[str]:
    """Every blob path a catalog record names (its sub-records' too)."""
    out: set[str] = set()
    for key in ("config",):
        if isinstance(record.get(key), str):
            out.add(record[key])
    for key in ("layers", "blobs"):
        out.update(p for p in record.get(key) or [] if isinstance(p, str))
    if digests.is_digest(record.get("manifest_digest")):
        out.add(blob_path(record["manifest_digest"]))
    for key in ("platforms", "artifacts"):
        for sub in (record.get(key) or {}).values():
            if isinstance(sub, dict):
                out |= _record_paths(sub)
    return out


def node_paths(nodes: Sequence[Node]) -> set[str]:
    """The blob paths a set of roots occupies: what a mirror run's result will reference."""
    out: set[str] = set()
    for root in nodes:
        out.update(writer.documents(root))
        out.update(blob_path(l.descriptor.digest) for l in writer.streamed([root]))
        out.update(blob_path(n.manifest.digest) for n in walk(root))
    return out


def _dir_lock(root: Path) -> Lock | None:
    try:
        data = (root / LOCK_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return parse_lock(data, str(root / LOCK_NAME))


def plan(root: Path, choose: Choose, after: Sequence[Node] | None = None) -> Pruning:
    """What pruning root to what `choose` keeps removes. after: the roots the kept entries
    will hold once a run now being previewed has written them (a mirror's dry run)."""
    if not (root / catalog.CATALOG).is_file():
        raise UsageError(f"{root} is not a merged directory (no {catalog.CATALOG})")
    shared = read_shared(root)
    old_lock = _dir_lock(root)
    keep = choose(shared.images, old_lock)
    removed = sorted(
        (
            merged.ref_of(name, key)
            for name, tags in shared.images.items()
            for key in tags
            if (name, key) not in keep
        ),
        key=str,
    )
    left = merged.without(shared, removed) if removed else shared
    reach: set[str] = set()
    if after is not None:
        reach = node_paths(after)
    else:
        for name, tags in sorted(left.images.items()):
            for key, record in sorted(tags.items()):
                reach |= _record_paths(record)
                _manifest_paths(root, record["manifest_digest"], reach, f"{name} {key}")
    lock = None
    if old_lock is not None and removed:
        lock = {n: {k: p for k, p in t.items() if (n, k) in keep} for n, t in old_lock.items()}
        lock = {n: t for n, t in lock.items() if t}
    out = Pruning(root, removed, left, lock)
    store = DirStore(root)
    for name in store.blob_names():
        if name not in reach:
            out.blobs[name] = store.size(name) or 0
    hexes = {p.rpartition("/")[2] for p in reach}
    for tree in ("rootfs", "layers"):
        if (root / tree).is_dir():
            out.trees += [f"{tree}/{d.name}" for d in sorted((root / tree).iterdir()) if d.name not in hexes]
    named = {rec.get("manifest") for tags in left.images.values() for rec in tags.values()}
    out.manifests = sorted(
        f.name for f in root.iterdir() if _PER_TAG.fullmatch(f.name) and f.name not in named
    )
    return out


def apply(p: Pruning, reporter: Reporter) -> None:
    """Carry out a prune planned under the same locks (see `prune`)."""
    if p.removed:
        for name, data in merged.files(p.shared):  # catalog.json last
            write_atomic(p.root / name, data)
        if p.lock is not None:
            write_atomic(p.root / LOCK_NAME, lock_bytes(p.lock))
        for ref in p.removed:
            reporter.emit(Info(f"removed {ref}"))
    for name in p.manifests:
        (p.root / name).unlink(missing_ok=True)
    for name, size in sorted(p.blobs.items()):
        try:
            os.unlink(p.root / name)
        except FileNotFoundError:
            continue
        found = digests.from_path(name)
        reporter.emit(BlobRemoved(found or name, size))
    for tree in p.trees:
        shutil.rmtree(p.root / tree, ignore_errors=True)


def prune(root: Path, choose: Choose, reporter: Reporter) -> Pruning:
    """Plan and apply under the directory's locks: no writer may run while blobs go."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    with dirlock.exclusive(root), FileLock(str(root / LOCK)):
        p = plan(root, choose)
        apply(p, reporter)
    return p
