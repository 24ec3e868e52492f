"""A source that takes what a layout we already hold (an incremental mirror's DEST) has, and
everything else from the real source.

- Small blobs (configs) come from DEST when it holds exactly them.
- Manifests by digest come from DEST when it holds them: their bytes are checked against
  the digest, so no request is needed at all.
- A tag is asked for with a HEAD, never a GET, when the source can (Docker Hub does not
  count HEADs against its pull quota): when the digest it names is one DEST holds, the
  manifest comes from DEST. So a re-run of an up-to-date mirror spends no quota.
- With `keep`, an index fetched by tag is kept in DEST's blob store (content-addressed, never
  referenced: verify re-hashes it and misses nothing): a mirror of one platform stores only
  the platform's manifest, and without the index the next run's HEAD would find nothing to
  match, so every multi-platform tag would cost a pull on every run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from occystrap.digest import Digest
from occystrap.errors import OccystrapError
from occystrap.layout.reader import LayoutReader
from occystrap.mediatypes import INDEX_TYPES, MAX_MANIFEST_BYTES
from occystrap.model import Descriptor
from occystrap.reference import Reference
from occystrap.sinks.base import write_atomic
from occystrap.sources.base import Fetched, Source
from occystrap.sources.heldfirst import HeldFirst


class LocalFirst(HeldFirst):
    def __init__(self, source: Source, held: LayoutReader, keep: Path | None = None) -> None:
        super().__init__(source)
        self.layout = held
        self.keep = keep
        self._declared: dict[str, str] | None = None
        # Manifests read from DEST and checked, by digest: many tags of one manifest read and
        # hash it once (a re-run of 400 tags over 20 manifests: 380 reads fewer).
        self._read: dict[str, Fetched] = {}

    async def held(self, ref: Reference, digest: str, named: bool) -> Fetched | None:
        return self._held_manifest(digest)

    def _held_manifest(self, digest: str) -> Fetched | None:
        """DEST's copy of a manifest or index, when it holds one that hashes right."""
        if digest in self._read:
            return self._read[digest]
        size = self.layout.blob_size(digest)
        if size is None or size > MAX_MANIFEST_BYTES:
            return None
        if self._declared is None:
            try:
                entries = self.layout.entries()
            except OccystrapError:
                entries = []
            self._declared = {e.descriptor.digest: e.descriptor.media_type for e in entries}
        try:
            data, media = self.layout.manifest(digest, self._declared.get(digest, ""))
        except OccystrapError:
            return None  # damaged or not a manifest: the source has the real one
        self._read[digest] = Fetched(data, media, Digest.parse(digest))
        return self._read[digest]

    def fetched(self, ref: Reference, fetched: Fetched) -> None:
        if self.keep is None or fetched.media_type not in INDEX_TYPES:
            return
        if self.layout.blob_size(fetched.digest) == len(fetched.data):
            return
        with contextlib.suppress(OSError):  # only a saving for the next run
            write_atomic(self.keep / fetched.digest.path, fetched.data)

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        # Only small blobs, and only when they hash right: a damaged local copy is not an
        # error here, the source has the real one.
        if desc.size <= MAX_MANIFEST_BYTES and self.layout.blob_size(desc.digest) == desc.size:
            try:
                data = self.layout.read_blob(desc.digest)
            except OccystrapError:
                data = None
            if data is not None:
                yield data[offset:]
                return
        async for chunk in self.source.blob(ref, desc, offset):
            yield chunk
