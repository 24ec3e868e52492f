"""The delta bundle's sink: a bundle tarball without the blobs its base holds.

The engine asks every sink which blobs it already has; this one answers "base" for the
left-out blobs, so they are never fetched, and lays the tarball out without them, with
`occystrap-delta.json` saying what was left out. Everything else (in-place writes,
resume, rename when complete) is the bundle's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from occystrap.delta.meta import BASE_REASON, DELTA_NAME, DeltaMeta
from occystrap.model import Layer, Node
from occystrap.platform import Platform
from occystrap.reference import Reference
from occystrap.sinks.inplace import InPlace
from occystrap.sinks.tarball import TarballSink, plan
from occystrap.sinks.tarformat import Member


class DeltaTarballSink(TarballSink):
    def __init__(self, path: Path, meta: DeltaMeta, platform: Platform | None = None) -> None:
        super().__init__(path, platform=platform)
        self.meta = meta
        self.left_out = meta.base_digests

    def _begin(self, nodes: list[Node]) -> None:
        members = [
            m
            for m in plan(nodes, self.platform)
            if m.layer is None or m.layer.descriptor.digest not in self.left_out
        ]
        data = self.meta.to_bytes()
        members.append(Member(DELTA_NAME, len(data), data=data))
        self._direct = InPlace(self.partial, self.progress, members)

    async def present(self, layer: Layer, refs: Sequence[Reference]) -> str | None:
        if layer.descriptor.digest in self.left_out:
            return BASE_REASON
        return await super().present(layer, refs)
