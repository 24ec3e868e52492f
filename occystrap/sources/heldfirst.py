"""The rule both incremental wrappers share: a tag is asked of the source with a HEAD, and
when the digest it names is held where the mirror is going, the manifest comes from there.

Docker Hub counts manifest GETs, not HEADs, so a re-run of an up-to-date mirror spends no
pull. Subclasses say what "held" means (a directory DEST, a registry DEST); everything else
the source offers is passed through, optional abilities included (a wrapper that hid the
source's referrers API once made `mirror --referrers` into an existing directory fall back
to the tag schema alone).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from occystrap.digest import Digest, is_digest
from occystrap.errors import OccystrapError
from occystrap.model import Descriptor
from occystrap.reference import Reference
from occystrap.sources.base import Fetched, HasHead, HasReferrers, Source


class HeldFirst:
    def __init__(self, source: Source) -> None:
        self.source = source

    @property
    def name(self) -> str:
        return self.source.name

    async def held(self, ref: Reference, digest: str, named: bool) -> Fetched | None:
        """The held copy of a manifest, checked against digest; None to ask the source.
        named: the source's HEAD named it (else the plan asked for it by digest)."""
        raise NotImplementedError

    def fetched(self, ref: Reference, fetched: Fetched) -> None:
        """Told of every manifest the source had to send for a tag of ref's repository."""

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        wanted = target or ref.reference
        if is_digest(wanted):
            return await self.held(ref, wanted, named=False) or await self.source.manifest(ref, target)
        if isinstance(self.source, HasHead):
            try:
                named = await self.source.head(Reference(ref.registry, ref.repository, wanted))
            except OccystrapError:
                named = None  # the GET below says what is wrong, if anything is
            found = await self.held(ref, named, named=True) if named is not None else None
            if found is not None:
                return found
        fetched = await self.source.manifest(ref, target)
        self.fetched(ref, fetched)
        return fetched

    async def head(self, ref: Reference) -> Digest | None:
        return await self.source.head(ref) if isinstance(self.source, HasHead) else None

    async def referrers(self, ref: Reference, digest: str) -> list[Descriptor] | None:
        # What refers to a manifest is the source's knowledge: what is held may lag.
        return await self.source.referrers(ref, digest) if isinstance(self.source, HasReferrers) else None

    def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        return self.source.blob(ref, desc, offset)

    async def tags(self, ref: Reference) -> list[str]:
        return await self.source.tags(ref)

    async def aclose(self) -> None:
        await self.source.aclose()
