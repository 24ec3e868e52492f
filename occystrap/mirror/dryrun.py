"""--dry-run: what a mirror run would fetch, what sharing and DEST save, and what changes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from occystrap import digest as digests
from occystrap.layout import writer
from occystrap.layout.writer import streamed
from occystrap.mirror.changes import changes, held_manifests
from occystrap.mirror.lockfile import is_tarball
from occystrap.mirror.plan import Plan
from occystrap.model import Descriptor
from occystrap.ui.units import human


@dataclass(frozen=True)
class Estimate:
    per_image: dict[str, tuple[int, int]]  # name -> (blobs, bytes) of that image's own set
    blobs: int  # to fetch
    bytes: int
    shared_bytes: int  # saved because images share blobs
    present_blobs: int
    present_bytes: int  # saved because DEST already holds them


def _held(dest: Path, desc: Descriptor) -> bool:
    """DirectorySink.has_layer without its side effects: a dry run writes and deletes nothing."""
    if is_tarball(dest):
        return False
    path = dest / writer.blob_path(desc.digest)
    try:
        return path.is_file() and digests.of_file(path) == (desc.digest, desc.size)
    except OSError:
        return False


def estimate(result: Plan, dest: Path) -> Estimate:
    per_image: dict[str, dict[str, int]] = {}
    total = 0
    unique: dict[str, Descriptor] = {}
    for p in result.items:
        own = per_image.setdefault(p.source, {})
        for layer in streamed([p.node]):
            d = layer.descriptor
            total += d.size
            own[d.digest] = d.size
            unique[d.digest] = d
    present = [d for d in unique.values() if _held(dest, d)]
    unique_bytes = sum(d.size for d in unique.values())
    present_bytes = sum(d.size for d in present)
    return Estimate(
        {name: (len(blobs), sum(blobs.values())) for name, blobs in per_image.items()},
        len(unique) - len(present),
        unique_bytes - present_bytes,
        total - unique_bytes,
        len(present),
        present_bytes,
    )


def dry_run_report(result: Plan, dest: Path) -> list[str]:
    est = estimate(result, dest)
    found = changes(result, held_manifests(dest), is_tarball(dest))
    counts: dict[str, int] = {}
    for p in result.items:
        counts[p.source] = counts.get(p.source, 0) + 1
    lines = []
    for name, (blobs, size) in sorted(est.per_image.items()):
        what = found.line(name).partition(": ")[2]
        lines.append(
            f"{name}: {counts[name]} image(s), {blobs} layer blobs, {human(size)} ({size} bytes); {what}"
        )
    lines.append(
        f"total: would fetch {est.blobs} blobs, {human(est.bytes)} ({est.bytes} bytes); "
        f"sharing saves {human(est.shared_bytes)} ({est.shared_bytes} bytes); "
        f"{dest} already holds {est.present_blobs} blobs, {human(est.present_bytes)} "
        f"({est.present_bytes} bytes)"
    )
    return lines


def dry_run_json(result: Plan, dest: Path) -> dict[str, Any]:
    """The plan as data: per image its tags (status and platform digests), what would be fetched."""
    est = estimate(result, dest)
    found = changes(result, held_manifests(dest), is_tarball(dest))
    images: dict[str, Any] = {}
    for name in sorted(est.per_image):
        blobs, size = est.per_image[name]
        images[name] = {
            "tags": {
                t.key: {"status": t.status, "platforms": t.platforms, "previous": t.previous}
                for t in sorted(found.of(name), key=lambda t: t.key)
            },
            "counts": found.counts(name),
            "dropped": found.dropped.get(name, []),
            "layer_blobs": blobs,
            "layer_bytes": size,
        }
    return {
        "destination": str(dest),
        "images": images,
        "fetch": {"blobs": est.blobs, "bytes": est.bytes},
        "shared_bytes": est.shared_bytes,
        "present": {"blobs": est.present_blobs, "bytes": est.present_bytes},
        "failed": dict(sorted(result.failures.items())),
    }
