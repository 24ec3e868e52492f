"""A shard's sink: the plan's manifests and configs as usual, but only its own share of blobs.

The engine asks every sink which blobs need no transfer; this one answers "shard" for the
blobs another shard fetches, so they are never fetched here (as a delta bundle answers "base").
Into a merged directory the marker goes in first, before any blob, so a directory that lacks
blobs on purpose always says so; then the directory's own commit writes every manifest, config
and catalog.json. Into a registry nothing is committed at all: no manifest, no tag. A normal
mirror run afterwards finds every blob by HEAD and writes those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from occystrap.model import Layer, Node
from occystrap.reference import Reference
from occystrap.sinks.base import BlobTarget, Sink

SHARD_REASON = "shard"  # why the engine skips another shard's blob (BlobSkipped.reason)


class ShardSink:
    def __init__(
        self,
        inner: Sink,
        own: frozenset[str],
        first: Callable[[], None] | None = None,
        commits: bool = True,
    ) -> None:
        """own: the digests this shard moves; first: what to write before any blob (the
        marker); commits: whether the inner sink's commit runs (not for a registry)."""
        self.inner = inner
        self.own = own
        self.first = first
        self.commits = commits
        self.check_diff_ids = inner.check_diff_ids

    @property
    def destination(self) -> str:
        return self.inner.destination

    async def begin(self, nodes: list[Node]) -> None:
        await self.inner.begin(nodes)
        if self.first is not None:
            await anyio.to_thread.run_sync(self.first)

    async def present(self, layer: Layer, refs: Sequence[Reference]) -> str | None:
        if layer.descriptor.digest not in self.own:
            return SHARD_REASON
        return await self.inner.present(layer, refs)

    async def open_blob(self, layer: Layer, refs: Sequence[Reference]) -> BlobTarget | None:
        return await self.inner.open_blob(layer, refs)

    async def commit(self, nodes: list[Node]) -> None:
        # A registry shard stops here: its blobs landed, and a registry sink holds nothing to release.
        if self.commits:
            await self.inner.commit(nodes)

    async def abort(self, keep: bool) -> None:
        await self.inner.abort(keep)
