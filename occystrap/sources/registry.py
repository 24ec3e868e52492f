"""A registry as a source: the client's verbs under the Source protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

from occystrap.digest import Digest
from occystrap.model import Descriptor
from occystrap.reference import Reference
from occystrap.registry import listing
from occystrap.registry.client import RegistryClient
from occystrap.sources.base import Fetched


class RegistrySource:
    def __init__(self, client: RegistryClient, name: str = "registry") -> None:
        self.client = client
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        return await self.client.manifest(ref, target)

    async def head(self, ref: Reference) -> Digest | None:
        return await self.client.head_manifest(ref)

    def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        return self.client.blob_chunks(ref, desc, offset)

    async def referrers(self, ref: Reference, digest: str) -> list[Descriptor] | None:
        return await listing.referrers(self.client, ref, digest)

    async def tags(self, ref: Reference) -> list[str]:
        return await listing.tags(self.client, ref)

    async def aclose(self) -> None:
        return None
