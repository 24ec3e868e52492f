"""A blob named by digest and size alone, and lists of them in JSON (`[{"digest", "size"}]`):
what a delta's base and a shard's share are made of."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from occystrap.digest import Digest
from occystrap.errors import ManifestError


@dataclass(frozen=True)
class SizedDigest:
    digest: Digest
    size: int


def parse_list(items: Any, where: str, what: str) -> tuple[SizedDigest, ...]:
    """A JSON list of {"digest", "size"}; one clear ManifestError for anything else."""
    if not isinstance(items, list):
        raise ManifestError(f"malformed {where}: {what} must be a list")
    out = []
    for item in items:
        size = item.get("size") if isinstance(item, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"malformed {where}: {what} entry {item!r} needs a digest and a size")
        try:
            out.append(SizedDigest(Digest.parse(item.get("digest")), size))
        except ValueError as exc:
            raise ManifestError(f"malformed {where}: {exc}") from None
    return tuple(out)


def to_list(items: Iterable[SizedDigest]) -> list[dict[str, Any]]:
    """Sorted by digest: the same set always writes the same bytes."""
    return [{"digest": b.digest, "size": b.size} for b in sorted(items, key=lambda b: b.digest)]
