"""Which shard fetches which blob: pure, so that N processes that never talk to each other
agree on it.

Every shard resolves the whole plan; the plan's unique streamed blobs (layers and artifact
blobs; configs and manifests are small and every shard keeps them all) are dealt out largest
first, each to the shard with the fewest bytes so far (ties: the lower shard). Ties between
blobs of one size go by digest, so the order, and so the split, depends on the content only.
A base layer that twenty images share is one blob, fetched by exactly one shard.
"""

from __future__ import annotations

import heapq
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from occystrap.errors import UsageError
from occystrap.model import Descriptor

# Kubernetes' Indexed Jobs give each pod its index, from 0, in this variable.
INDEX_ENV = "JOB_COMPLETION_INDEX"
MAX_COUNT = 10_000


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`, counted from 1 (as `--shard 1/4` reads: the first of four)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _number(text: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise UsageError(f"{what} must be a whole number, not {text!r}")
    return int(text)


def make(index: int, count: int, source: str) -> Shard:
    """A checked shard; source: how the user spelled it, for the error line."""
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"{source}: the shard count must be 1 to {MAX_COUNT}, not {count}")
    if not 1 <= index <= count:
        hint = f" (Kubernetes' {INDEX_ENV} counts from 0: use --shard auto/{count})" if index == 0 else ""
        raise UsageError(f"{source}: shards are numbered 1 to {count}, not {index}{hint}")
    return Shard(index, count)


def parse(
    text: str | None,
    index: int | None = None,
    count: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Shard | None:
    """--shard I/N (or auto/N: JOB_COMPLETION_INDEX + 1), or --shard-index I --shard-count N."""
    if text is None and index is None and count is None:
        return None
    if text is not None and (index is not None or count is not None):
        raise UsageError("give --shard I/N or --shard-index I --shard-count N, not both")
    if text is None:
        if index is None or count is None:
            raise UsageError("--shard-index and --shard-count go together")
        return make(index, count, f"--shard-index {index} --shard-count {count}")
    source = f"--shard {text}"
    left, slash, right = text.partition("/")
    if not slash:
        raise UsageError(f"{source}: expected I/N (shard I of N, from 1) or auto/N")
    total = _number(right, f"{source}: N")
    if left.strip() != "auto":
        return make(_number(left, f"{source}: I"), total, source)
    env = os.environ if env is None else env
    raw = env.get(INDEX_ENV)
    if raw is None:
        raise UsageError(f"{source} reads {INDEX_ENV} (set by a Kubernetes Indexed Job), which is not set")
    return make(_number(raw, f"{INDEX_ENV}={raw!r}") + 1, total, f"{source} ({INDEX_ENV}={raw})")


def split(blobs: Iterable[Descriptor], count: int) -> list[list[Descriptor]]:
    """Each shard's blobs (index 0 is shard 1): unique by digest, largest first, each to the
    shard with the fewest bytes so far."""
    unique = {d.digest: d for d in blobs}
    order = sorted(unique.values(), key=lambda d: (-d.size, d.digest))
    shares: list[list[Descriptor]] = [[] for _ in range(count)]
    loads = [(0, i) for i in range(count)]  # (bytes so far, shard): a heap, least first
    for desc in order:
        load, i = heapq.heappop(loads)
        shares[i].append(desc)
        heapq.heappush(loads, (load + desc.size, i))
    return shares


def share_of(blobs: Sequence[Descriptor], shard: Shard) -> list[Descriptor]:
    return split(blobs, shard.count)[shard.index - 1]
