"""Registry mirrors: a registry's mirrors are tried first, in order, for every pull, then the
registry itself.

A mirror (`HOST[:PORT][/PREFIX]`) serves the registry's repositories under an optional path
prefix, as a pull-through cache does (distribution's proxy mode, Harbor's proxy projects,
mirror.gcr.io). Manifests, tag lists and blobs go to the mirrors first: a 404 moves on to
the next for that one request; any other failure puts that mirror aside for the rest of the
run, with one warning, so a dead mirror costs its retries once, not once per request. A blob
cut short by a mirror carries on from the registry where it stopped. Manifests by digest and
blobs are checked against their digests whoever serves them; a tag is what the mirror says
it is, as with docker's `registry-mirrors`.

Mirrors are reached through a client of their own: it sends a mirror only what is configured
for the mirror's own host (`registries:` settings, docker's config.json), never the
credentials given for the registry it mirrors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

from occystrap.digest import Digest
from occystrap.errors import AuthError, NotFoundError, OccystrapError
from occystrap.events import BlobSource, Reporter, Warning_
from occystrap.locations import parse_registry_prefix
from occystrap.model import Descriptor
from occystrap.reference import Reference
from occystrap.registry.auth import Credentials
from occystrap.registry.options import ClientOptions
from occystrap.sources.base import Fetched
from occystrap.sources.registry import RegistrySource

T = TypeVar("T")

# A mirror only saves time; the registry behind it must not wait long for a dead one.
MIRROR_RETRIES = 1


@dataclass(frozen=True)
class Endpoint:
    """One mirror: a registry host and the path prefix its repositories live under."""

    registry: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        registry, prefix = parse_registry_prefix(text.removeprefix("https://").rstrip("/"))
        return cls(registry, prefix)

    def place(self, ref: Reference) -> Reference:
        repository = f"{self.prefix}/{ref.repository}" if self.prefix else ref.repository
        return Reference(self.registry, repository, ref.tag, ref.digest)

    def __str__(self) -> str:
        return f"{self.registry}/{self.prefix}" if self.prefix else self.registry


def mirror_options(options: ClientOptions) -> ClientOptions:
    """The mirrors' client: credentials only as configured per host (a mirror on the registry's
    own host may have the registry's), few retries, no mirrors of its own, no reserve (a
    mirror's quota is not the one the reserve guards)."""
    credentials = dict(options.credentials)
    if options.username is not None:
        for registry, entries in options.mirrors.items():
            for text in entries:
                host = Endpoint.parse(text).registry
                if host == registry and host not in credentials:
                    credentials[host] = Credentials(options.username, options.password or "")
    return replace(
        options,
        username=None,
        password=None,
        credentials=credentials,
        configured_credentials_only=True,
        retries=min(options.retries, MIRROR_RETRIES),
        mirrors={},
        rate_limit_reserve=None,
    )


class MirroredSource:
    def __init__(
        self,
        origin: RegistrySource,
        mirrors: RegistrySource,
        table: Mapping[str, Sequence[str]],
        reporter: Reporter,
    ) -> None:
        self.origin = origin
        self.mirrors = mirrors
        self.table = {registry: [Endpoint.parse(t) for t in entries] for registry, entries in table.items()}
        self.reporter = reporter
        self._set_aside: set[str] = set()

    @property
    def name(self) -> str:
        return self.origin.name

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """ref's registry's mirrors still in use, in order."""
        return [e for e in self.table.get(ref.registry, ()) if str(e) not in self._set_aside]

    def _failed(self, endpoint: Endpoint, ref: Reference, exc: OccystrapError) -> None:
        if str(endpoint) in self._set_aside:
            return
        self._set_aside.add(str(endpoint))
        hint = ""
        if isinstance(exc, AuthError):
            hint = (
                f" (a mirror gets only the credentials configured for {endpoint.registry} itself:"
                " its registries: entry, or docker's config.json)"
            )
        self.reporter.emit(
            Warning_(f"mirror {endpoint} failed, {ref.registry} itself is used from now on: {exc}{hint}")
        )

    async def _first(self, ref: Reference, call: Callable[[RegistrySource, Reference], Awaitable[T]]) -> T:
        for endpoint in self.endpoints(ref):
            try:
                return await call(self.mirrors, endpoint.place(ref))
            except NotFoundError:
                continue
            except OccystrapError as exc:
                self._failed(endpoint, ref, exc)
        return await call(self.origin, ref)

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        return await self._first(ref, lambda source, r: source.manifest(r, target))

    async def head(self, ref: Reference) -> Digest | None:
        for endpoint in self.endpoints(ref):
            try:
                found = await self.mirrors.head(endpoint.place(ref))
            except OccystrapError as exc:
                self._failed(endpoint, ref, exc)
                continue
            if found is not None:
                return found
        return await self.origin.head(ref)

    async def tags(self, ref: Reference) -> list[str]:
        return await self._first(ref, lambda source, r: source.tags(r))

    async def referrers(self, ref: Reference, digest: str) -> list[Descriptor] | None:
        # What refers to a manifest is the registry's own knowledge; a cache may lack it.
        return await self.origin.referrers(ref, digest)

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        received = offset
        for endpoint in self.endpoints(ref):
            try:
                async with self._stream(
                    self.mirrors, endpoint.place(ref), desc, received, str(endpoint)
                ) as chunks:
                    async for chunk in chunks:
                        received += len(chunk)
                        yield chunk
                return
            except NotFoundError:
                continue
            except OccystrapError as exc:
                self._failed(endpoint, ref, exc)
        async with self._stream(self.origin, ref, desc, received, ref.registry) as chunks:
            async for chunk in chunks:
                yield chunk

    @asynccontextmanager
    async def _stream(
        self, source: RegistrySource, ref: Reference, desc: Descriptor, offset: int, where: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob from one place, announcing that place with its first bytes; closed on exit."""

        async def chunks() -> AsyncIterator[bytes]:
            announced = False
            async with aclosing(source.blob(ref, desc, offset)) as inner:  # type: ignore[type-var]
                async for chunk in inner:
                    if not announced:
                        announced = True
                        self.reporter.emit(BlobSource(desc.digest, where, source is self.mirrors))
                    yield chunk

        async with aclosing(chunks()) as stream:  # type: ignore[type-var]
            yield stream

    async def aclose(self) -> None:
        await self.origin.aclose()
        await self.mirrors.aclose()
