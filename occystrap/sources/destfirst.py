"""For a mirror or copy into a registry: what the destination already holds is read from it,
so a re-run of an up-to-date mirror (or a copy) spends none of the source's pull quota.

A tag is asked of the source with a HEAD (HeldFirst); when the destination holds the
manifest that digest names (one GET there, by digest, verified against it), the plan is
built from the destination's copy. What such a manifest names that
the plan reads (an index's children, a manifest's config) is asked of the destination first
too, and checked against its digest; anything it lacks comes from the source, so a wrong
guess costs one request, never a wrong byte. This is regsync's rule (compare
digests with HEADs, pull only what moved); skopeo sync GETs every tag on every run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from occystrap import digest as digests
from occystrap.errors import OccystrapError
from occystrap.mediatypes import INDEX_TYPES, MAX_MANIFEST_BYTES
from occystrap.model import Descriptor
from occystrap.reference import Reference
from occystrap.sources.base import Fetched, Source
from occystrap.sources.heldfirst import HeldFirst


class DestinationFirst(HeldFirst):
    def __init__(self, source: Source, destination: Source, place: Callable[[Reference], Reference]) -> None:
        """place: where a source repository's content lands in the destination."""
        super().__init__(source)
        self.destination = destination
        self.place = place
        # Per repository (a registry holds content per repository, and one index may be
        # mirrored into two: keyed by digest alone, which one was asked first decided the
        # other's answer) and digest: many tags of one manifest read it once.
        self._held: dict[tuple[str, str], Fetched | None] = {}
        # What manifests the destination held name: likely held too, so asked there first.
        self._expected: set[tuple[str, str]] = set()

    async def held(self, ref: Reference, digest: str, named: bool) -> Fetched | None:
        key = (_repository(ref), digest)
        if not named and key not in self._expected:
            return None  # a first run would only hear 404s
        if key not in self._held:
            placed = self.place(Reference(ref.registry, ref.repository, None, digest))
            try:
                found: Fetched | None = await self.destination.manifest(placed, digest)
            except OccystrapError:
                found = None  # not there (or not readable): the source has it
            self._held[key] = found
            if found is not None:
                self._expect(ref, found)
        return self._held[key]

    def _expect(self, ref: Reference, fetched: Fetched) -> None:
        self._expected.update((_repository(ref), d) for d in _named(fetched.data))

    def fetched(self, ref: Reference, fetched: Fetched) -> None:
        if fetched.media_type in INDEX_TYPES:
            # A single platform mirrored from an index: DEST holds the platform's manifest,
            # not the index, so the index costs its pull but the child need not.
            self._expect(ref, fetched)

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        wanted = (_repository(ref), desc.digest) in self._expected
        held = await self._small_blob(ref, desc) if wanted else None
        if held is not None:
            yield held[offset:]
            return
        async for chunk in self.source.blob(ref, desc, offset):
            yield chunk

    async def _small_blob(self, ref: Reference, desc: Descriptor) -> bytes | None:
        """A config the destination holds, whole and hashing right; else None."""
        if desc.size > MAX_MANIFEST_BYTES:
            return None
        placed = self.place(Reference(ref.registry, ref.repository, None, desc.digest))
        try:
            data = b"".join([chunk async for chunk in self.destination.blob(placed, desc)])
        except OccystrapError:
            return None
        return data if digests.of(data) == desc.digest else None


def _repository(ref: Reference) -> str:
    return f"{ref.registry}/{ref.repository}"


def _named(data: bytes) -> list[str]:
    """The digests an index lists, or a manifest's config (the bytes match their digest; what
    they name is checked when read)."""
    try:
        doc = json.loads(data)
        entries = [*doc.get("manifests", []), doc.get("config")]
        return [e["digest"] for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    except (ValueError, AttributeError):
        return []
