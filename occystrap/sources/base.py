"""What every source offers: manifests by tag or digest, blobs as streams, tag lists.

These are the storage verbs regclient's backends share; `occystrap.resolve` builds
images, artifacts and indexes from them once, for every source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from occystrap.digest import Digest
from occystrap.model import Descriptor
from occystrap.reference import Reference


@dataclass(frozen=True)
class Fetched:
    """A manifest or index: its exact bytes, its media type and their digest."""

    data: bytes
    media_type: str
    digest: Digest


class Source(Protocol):
    @property
    def name(self) -> str:
        """What the user named as the source: for messages."""
        ...

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        """ref's manifest or index (target: another tag or digest in the same repository).
        A digest target is verified against the bytes."""
        ...

    def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from offset; size enforced here, the digest is the reader's to check."""
        ...

    async def tags(self, ref: Reference) -> list[str]:
        """Every tag of ref's repository."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class HasReferrers(Protocol):
    """A source that can say what refers to a manifest (the OCI 1.1 referrers API)."""

    async def referrers(self, ref: Reference, digest: str) -> list[Descriptor] | None:
        """The referrers' descriptors; None when the source has no such API."""
        ...


@runtime_checkable
class HasHead(Protocol):
    """A source that can say which digest a tag names without sending the manifest (a HEAD,
    which Docker Hub does not count against its pull quota)."""

    async def head(self, ref: Reference) -> Digest | None:
        """The digest ref names now; None when the source cannot say (or holds no such tag)."""
        ...
