"""What a mirror run changes in DEST, per image and tag: new, updated, unchanged, dropped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from occystrap import reference
from occystrap.errors import OccystrapError
from occystrap.layout.reader import LayoutReader
from occystrap.mirror.plan import Plan, Planned

NEW = "new"
UPDATED = "updated"
UNCHANGED = "unchanged"
SHOWN_TAGS = 5  # tag names listed per status in a change line; the rest are counted


@dataclass(frozen=True)
class TagChange:
    """What mirroring one tag (or pinned digest) of one image does to DEST."""

    source: str
    key: str
    status: str  # NEW, UPDATED or UNCHANGED
    platforms: dict[str, str]  # platform -> manifest digest to be stored
    previous: dict[str, str]  # platform -> manifest digest DEST held (those it held)


@dataclass(frozen=True)
class Changes:
    tags: list[TagChange]
    dropped: dict[str, list[str]]  # image -> references a rewritten bundle no longer holds

    def of(self, source: str) -> list[TagChange]:
        return [t for t in self.tags if t.source == source]

    def counts(self, source: str) -> dict[str, int]:
        out = {NEW: 0, UPDATED: 0, UNCHANGED: 0}
        for t in self.of(source):
            out[t.status] += 1
        return out

    def line(self, source: str) -> str:
        """`host/app: 2 new (v3, v4), 1 updated (latest), 20 unchanged`."""
        parts = []
        for status in (NEW, UPDATED, UNCHANGED):
            keys = [t.key for t in self.of(source) if t.status == status]
            if not keys:
                continue
            part = f"{len(keys)} {status}"
            if status != UNCHANGED:
                shown = ", ".join(_short_key(k) for k in keys[:SHOWN_TAGS])
                more = f", +{len(keys) - SHOWN_TAGS} more" if len(keys) > SHOWN_TAGS else ""
                part += f" ({shown}{more})"
            parts.append(part)
        dropped = self.dropped.get(source, [])
        if dropped:
            parts.append(f"{len(dropped)} dropped from the bundle")
        return f"{source}: {', '.join(parts) or 'nothing'}"


def _short_key(key: str) -> str:
    return key[:19] if key.startswith("sha256:") else key


def held_manifests(dest: Path) -> dict[str, str]:
    """What DEST holds now, from its index.json: reference name -> manifest (or index) digest.
    Empty when DEST is absent or unreadable (then everything counts as new)."""
    if not dest.exists():
        return {}
    try:
        with LayoutReader.open(dest) as reader:
            return {e.name: e.descriptor.digest for e in reader.entries() if e.reference is not None}
    except OccystrapError:
        return {}


def changes(result: Plan, held: dict[str, str], bundle: bool) -> Changes:
    """Per tag: new (DEST does not hold it), updated (it holds other content) or unchanged.
    held: what DEST holds, name -> digest; bundle: DEST is rewritten whole (names can drop)."""
    groups: dict[tuple[str, str], list[Planned]] = {}
    for p in result.items:
        groups.setdefault((p.source, p.key), []).append(p)
    tags = []
    for (source, key), items in groups.items():
        planned = {p.platform: p.manifest_digest for p in items}
        previous = {p.platform: held[str(p.node.reference)] for p in items if str(p.node.reference) in held}
        if not previous:
            status = NEW
        elif previous == planned:
            status = UNCHANGED
        else:
            status = UPDATED
        tags.append(TagChange(source, key, status, planned, previous))
    dropped: dict[str, list[str]] = {}
    if bundle:
        planned_refs = {str(p.node.reference) for p in result.items}
        for name in sorted(set(held) - planned_refs):
            try:
                full = reference.parse(name.partition("@")[0]).full_name
            except OccystrapError:
                full = name
            dropped.setdefault(full, []).append(name)
    return Changes(tags, dropped)


def change_lines(result: Plan, found: Changes) -> list[str]:
    return [found.line(source) for source in dict.fromkeys(p.source for p in result.items)]
