"""A layout on disk as a source: a tarball (docker save, classic or Docker 25, OCI archive,
our bundles) or a directory (extracted, merged, OCI layout), read through LayoutReader.

Blobs are read at their offsets (pread for a tarball), so a local source gets the same
parallel transfers, progress, verification and resume as a registry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import anyio

from occystrap import reference
from occystrap.digest import Digest
from occystrap.errors import IntegrityError, NotFoundError
from occystrap.layout.reader import Entry, LayoutReader
from occystrap.model import Descriptor, load_json
from occystrap.reference import Reference
from occystrap.sources.base import Fetched

# Bytes per read: big enough that a thread hop per read costs nothing, small enough to stream.
READ_SIZE = 1024 * 1024


class LayoutSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = LayoutReader.open(path)
        self._named: dict[str, Entry] = {}

    @property
    def name(self) -> str:
        return str(self.path)

    async def aclose(self) -> None:
        self.reader.close()

    def reference_for(self, wanted: Reference | str | None) -> Reference:
        """The reference an entry goes by (its full name, else a made-up `untagged/…` one)."""
        return self._remember(self.reader.find(wanted), wanted)

    def references(self) -> list[Reference]:
        """Every name the layout holds, each once."""
        out: dict[str, Reference] = {}
        if self.reader.catalog:
            for name, tags in sorted(self.reader.catalog.items()):
                for key in sorted(tags):
                    ref = reference.parse(f"{name}@{key}" if key.startswith("sha256:") else f"{name}:{key}")
                    out.setdefault(str(ref), self.reference_for(ref))
            return list(out.values())
        for entry in self.reader.entries():
            ref = self._remember(entry, entry.reference)
            out.setdefault(str(ref), ref)
        return list(out.values())

    def _remember(self, entry: Entry, wanted: Reference | str | None) -> Reference:
        ref = entry.reference if entry.reference is not None else wanted
        if not isinstance(ref, Reference):
            ref = self._untagged(entry)
        self._named[str(ref)] = entry
        return ref

    def _untagged(self, entry: Entry) -> Reference:
        """A name for an unnamed image, from its config digest, as the classic importer gave."""
        data, _ = self.reader.manifest(entry.descriptor.digest, entry.descriptor.media_type)
        doc = load_json(data, entry.descriptor.digest)
        config = doc.get("config", {}).get("digest") if isinstance(doc, dict) else None
        digest = Digest.parse(config) if isinstance(config, str) else entry.descriptor.digest
        return reference.parse(f"untagged/{digest.short}", "latest")

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        if target is not None or ref.digest:
            digest = Digest.parse(target or ref.digest)
            declared = ""
        else:
            entry = self._named.get(str(ref)) or self.reader.find(ref)
            digest, declared = entry.descriptor.digest, entry.descriptor.media_type
        data, media = await anyio.to_thread.run_sync(self.reader.manifest, digest, declared)
        return Fetched(data, media, digest)

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        size = self.reader.blob_size(desc.digest)
        if size is None:
            raise NotFoundError(f"{self.path} does not hold blob {desc.digest} of {ref}")
        if size != desc.size:
            raise IntegrityError(f"blob {desc.digest} in {self.path} is {size} bytes, not {desc.size}")
        chunks: Generator[bytes, None, None] = self.reader.blob_chunks(desc.digest, offset)
        try:
            while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
                yield chunk
        finally:
            chunks.close()

    async def tags(self, ref: Reference) -> list[str]:
        return sorted({r.tag for r in self.references() if r.full_name == ref.full_name and r.tag})
