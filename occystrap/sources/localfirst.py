"""A source that takes small blobs (configs) from a layout we already hold, when it holds
exactly them, and everything else from the real source: an incremental mirror run then
asks the registry for manifests only."""

from __future__ import annotations

from collections.abc import AsyncIterator

from occystrap.errors import OccystrapError
from occystrap.layout.reader import LayoutReader
from occystrap.mediatypes import MAX_MANIFEST_BYTES
from occystrap.model import Descriptor
from occystrap.reference import Reference
from occystrap.sources.base import Fetched, Source


class LocalFirst:
    def __init__(self, source: Source, held: LayoutReader) -> None:
        self.source = source
        self.held = held

    @property
    def name(self) -> str:
        return self.source.name

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        return await self.source.manifest(ref, target)

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        # Only small blobs, and only when they hash right: a damaged local copy is not an
        # error here, the source has the real one.
        if desc.size <= MAX_MANIFEST_BYTES and self.held.blob_size(desc.digest) == desc.size:
            try:
                data = self.held.read_blob(desc.digest)
            except OccystrapError:
                data = None
            if data is not None:
                yield data[offset:]
                return
        async for chunk in self.source.blob(ref, desc, offset):
            yield chunk

    async def tags(self, ref: Reference) -> list[str]:
        return await self.source.tags(ref)

    async def aclose(self) -> None:
        await self.source.aclose()
