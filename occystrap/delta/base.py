"""--since OLD: what a site that received OLD already holds, so a delta can leave it out.

OLD is a bundle tarball (a delta too: then what its own base held counts as well, since a
site can only have applied it on top of that), a merged directory, or a lock file (its
images' manifests are read from the registry to learn their blobs; no layer is fetched).
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from occystrap import digest as digests
from occystrap.delta.meta import DELTA_NAME, BaseBlob, DeltaMeta, parse
from occystrap.errors import UsageError
from occystrap.layout.reader import LayoutReader
from occystrap.layout.writer import streamed
from occystrap.mirror.lockfile import lock_path, parse_lock
from occystrap.mirror.plan import Planner, plan_from_lock
from occystrap.model import Node
from occystrap.ui.units import human


@dataclass(frozen=True)
class Base:
    name: str  # as the delta's metadata names it: OLD's file name
    lock_digest: str | None  # sha256 of OLD's lock file bytes, when there is one
    held: dict[str, int]  # digest -> size of every layer or artifact blob the site holds
    repositories: tuple[str, ...]

    def omitted(self, nodes: Sequence[Node]) -> list[BaseBlob]:
        """The streamed blobs of nodes the base holds (same digest and size): left out."""
        return [
            BaseBlob(l.descriptor.digest, l.descriptor.size)
            for l in streamed(nodes)
            if self.held.get(l.descriptor.digest) == l.descriptor.size
        ]

    def meta(self, nodes: Sequence[Node], lock_digest: str | None) -> DeltaMeta:
        return DeltaMeta(
            self.name, self.lock_digest, self.repositories, tuple(self.omitted(nodes)), lock_digest
        )


def _lock_digest(path: Path) -> str | None:
    try:
        return digests.of(lock_path(path).read_bytes())
    except OSError:
        return None


def from_layout(path: Path) -> Base:
    """A bundle or merged directory: the blob files it holds (and a delta's base blobs)."""
    with LayoutReader.open(path) as reader:
        held: dict[str, int] = {}
        for name in reader.store.blob_names():
            digest, size = digests.from_path(name), reader.store.size(name)
            if digest is not None and size is not None:
                held[digest] = size
        repos = set(reader.catalog) | {e.reference.full_name for e in reader.entries() if e.reference}
        lock = _lock_digest(path)
        data = reader.small(DELTA_NAME)
        if data is not None:
            earlier = parse(data, f"{path}:{DELTA_NAME}")
            held.update({b.digest: b.size for b in earlier.base_blobs if b.digest not in held})
            repos.update(earlier.base_repositories)
            lock = lock or earlier.lock_digest
    return Base(path.name, lock, held, tuple(sorted(repos)))


async def from_lock(path: Path, planner: Planner) -> Base:
    data = path.read_bytes()
    lock = parse_lock(data, str(path))
    result = await plan_from_lock(planner, lock)
    held: dict[str, int] = {l.descriptor.digest: l.descriptor.size for l in streamed(result.nodes)}
    return Base(path.name, digests.of(data), held, tuple(sorted(lock)))


async def load(path: Path, planner: Planner) -> Base:
    if not path.exists():
        raise UsageError(f"--since {path} does not exist")
    if path.is_dir() or tarfile.is_tarfile(path):
        return await anyio.to_thread.run_sync(from_layout, path)
    return await from_lock(path, planner)


def size_line(base: Base, nodes: Sequence[Node]) -> str:
    """What the dry run says about a delta: its layer bytes against a full bundle's."""
    blobs = streamed(nodes)
    full = sum(l.descriptor.size for l in blobs)
    left = base.omitted(nodes)
    left_bytes = sum(b.size for b in left)
    delta = full - left_bytes
    pct = f" ({100 * delta / full:.0f}%)" if full else ""
    return (
        f"delta over {base.name}: {len(blobs) - len(left)} layer blobs, {human(delta)} ({delta} bytes){pct}"
        f" of the full bundle's {len(blobs)}, {human(full)} ({full} bytes); {len(left)} blobs,"
        f" {human(left_bytes)} ({left_bytes} bytes) left to the base"
    )
