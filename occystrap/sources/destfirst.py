"""For a mirror into a registry: what the destination already holds is read from it, so a
re-run of an up-to-date mirror spends none of the source's pull quota.

Docker Hub counts manifest GETs, not HEADs. A tag is asked of the source with a HEAD; when
the destination holds the manifest that digest names (one GET there, by digest, verified
against it), the plan is built from the destination's copy. What such a manifest names that
the plan reads (an index's children, a manifest's config) is asked of the destination first
too, and checked against its digest; anything it lacks comes from the source, so a wrong
guess costs one request, never a wrong byte. This is regsync's rule (compare
digests with HEADs, pull only what moved); skopeo sync GETs every tag on every run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from occystrap import digest as digests
from occystrap.digest import Digest, is_digest
from occystrap.errors import OccystrapError
from occystrap.mediatypes import INDEX_TYPES, MAX_MANIFEST_BYTES
from occystrap.model import Descriptor
from occystrap.naming import Placement
from occystrap.reference import Reference
from occystrap.sources.base import Fetched, HasHead, HasReferrers, Source


class DestinationFirst:
    def __init__(self, source: Source, destination: Source, placement: Placement) -> None:
        self.source = source
        self.destination = destination
        self.placement = placement
        # By digest: many tags of one manifest (400 tags over 20 manifests) read it once.
        self._held: dict[str, Fetched | None] = {}
        # What manifests the destination held name: likely held too, so asked there first.
        self._expected: set[str] = set()

    @property
    def name(self) -> str:
        return self.source.name

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        wanted = target or ref.reference
        if is_digest(wanted):
            held = await self._from_destination(ref, wanted) if wanted in self._expected else None
            return held or await self.source.manifest(ref, target)
        if isinstance(self.source, HasHead):
            try:
                named = await self.source.head(Reference(ref.registry, ref.repository, wanted))
            except OccystrapError:
                named = None  # the GET below says what is wrong, if anything is
            held = await self._from_destination(ref, named) if named is not None else None
            if held is not None:
                return held
        fetched = await self.source.manifest(ref, target)
        if fetched.media_type in INDEX_TYPES:
            # A single platform mirrored from an index: DEST holds the platform's manifest,
            # not the index, so the index costs its pull but the child need not.
            self._expected.update(_named(fetched.data))
        return fetched

    async def _from_destination(self, ref: Reference, digest: str) -> Fetched | None:
        if digest not in self._held:
            placed = self.placement.place(Reference(ref.registry, ref.repository, None, digest))
            try:
                fetched: Fetched | None = await self.destination.manifest(placed, digest)
            except OccystrapError:
                fetched = None  # not there (or not readable): the source has it
            self._held[digest] = fetched
            if fetched is not None:
                self._expected.update(_named(fetched.data))
        return self._held[digest]

    async def head(self, ref: Reference) -> Digest | None:
        return await self.source.head(ref) if isinstance(self.source, HasHead) else None

    async def referrers(self, ref: Reference, digest: str) -> list[Descriptor] | None:
        # What refers to a manifest is the source's knowledge: the destination may lag.
        return await self.source.referrers(ref, digest) if isinstance(self.source, HasReferrers) else None

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        held = await self._small_blob(ref, desc) if desc.digest in self._expected else None
        if held is not None:
            yield held[offset:]
            return
        async for chunk in self.source.blob(ref, desc, offset):
            yield chunk

    async def _small_blob(self, ref: Reference, desc: Descriptor) -> bytes | None:
        """A config the destination holds, whole and hashing right; else None."""
        if desc.size > MAX_MANIFEST_BYTES:
            return None
        placed = self.placement.place(Reference(ref.registry, ref.repository, None, desc.digest))
        try:
            data = b"".join([chunk async for chunk in self.destination.blob(placed, desc)])
        except OccystrapError:
            return None
        return data if digests.of(data) == desc.digest else None

    async def tags(self, ref: Reference) -> list[str]:
        return await self.source.tags(ref)

    async def aclose(self) -> None:
        await self.source.aclose()


def _named(data: bytes) -> list[str]:
    """The digests an index lists, or a manifest's config (the bytes match their digest; what
    they name is checked when read)."""
    try:
        doc = json.loads(data)
        entries = [*doc.get("manifests", []), doc.get("config")]
        return [e["digest"] for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    except (ValueError, AttributeError):
        return []
