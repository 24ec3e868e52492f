"""Many layouts as one source, for `merge`: a name's manifests come from the input that named
it, a blob from whichever input holds it (the engine verifies it as from any other source)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from occystrap.digest import Digest
from occystrap.errors import NotFoundError
from occystrap.model import Descriptor
from occystrap.reference import Reference
from occystrap.sources.base import Fetched
from occystrap.sources.layout import LayoutSource


class MergeSource:
    def __init__(self, inputs: Sequence[LayoutSource], owners: dict[str, LayoutSource]) -> None:
        """owners: name (str of a reference) -> the input whose content that name takes."""
        self.inputs = list(inputs)
        self.owners = owners

    @property
    def name(self) -> str:
        return ", ".join(s.name for s in self.inputs)

    def holder(self, desc: Descriptor) -> LayoutSource | None:
        """The first input holding a file of the blob's size (its bytes are checked as they stream)."""
        for source in self.inputs:
            if source.reader.blob_size(desc.digest) == desc.size:
                return source
        return None

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        owner = self.owners.get(str(ref))
        if owner is None:
            digest = Digest.parse(target or ref.digest) if (target or ref.digest) else None
            owner = next((s for s in self.inputs if digest and s.reader.blob_size(digest) is not None), None)
        if owner is None:
            raise NotFoundError(f"no input holds {ref}")
        return await owner.manifest(ref, target)

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        source = self.holder(desc)
        if source is None:
            raise NotFoundError(f"no input holds blob {desc.digest} of {ref}")
        async for chunk in source.blob(ref, desc, offset):
            yield chunk

    async def tags(self, ref: Reference) -> list[str]:
        found: set[str] = set()
        for source in self.inputs:
            found.update(await source.tags(ref))
        return sorted(found)

    async def aclose(self) -> None:
        for source in self.inputs:
            await source.aclose()
