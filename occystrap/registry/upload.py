"""The push side of the distribution API: blob existence, cross-repository mounts, uploads
(one streamed monolithic PUT, or PATCH chunks), and manifests.

Every call names the repository it writes and asks for a `pull,push` token; a mount also
asks to pull from the repository it mounts from. An upload session's Location is followed
as given (relative or absolute, with its own query), never rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from occystrap import digest as digests
from occystrap.digest import Digest
from occystrap.errors import (
    AuthError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    OccystrapError,
    QuotaError,
    TransferError,
)
from occystrap.model import Descriptor
from occystrap.reference import Reference
from occystrap.registry.authflow import scope_for
from occystrap.registry.client import RegistryClient
from occystrap.registry.retry import Retryable
from occystrap.registry.transport import Response, safe_url

OCTET = "application/octet-stream"


def with_query(url: str, **params: str) -> str:
    """url with params added to whatever query it already carries."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


async def error_text(resp: Response) -> str:
    """The registry's own words: the first error's code and message, else the status."""
    try:
        doc = json.loads(await resp.read())
        first = doc["errors"][0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, KeyError, IndexError, TypeError, OccystrapError):
        return f"HTTP {resp.status}"


async def refused(resp: Response, ref: Reference, what: str) -> OccystrapError:
    """The one-line error for an upload or manifest the registry will not take."""
    text = await error_text(resp)
    where = f"{ref.registry}/{ref.repository}"
    if resp.status in (413, 507) or "QUOTA" in text.upper():
        return QuotaError(f"{where} refused {what}: over its size or storage quota ({text})")
    if resp.status == 404:
        return NotFoundError(f"{where}: {what}: {text}")
    if "DENIED" in text.upper():
        return AuthError(f"{where} denied {what} (scope repository:{ref.repository}:pull,push): {text}")
    if "MANIFEST" in text.upper() or "BLOB_UNKNOWN" in text.upper():
        return ManifestError(f"{where} refused {what}: {text}")
    if "DIGEST_INVALID" in text.upper():
        return IntegrityError(f"{where} refused {what}: {text}")
    return TransferError(f"{where} refused {what}: {text}")


class Uploader:
    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def _url(self, ref: Reference, location: str) -> str:
        base = f"{self.client.base_url(ref)}/v2/{ref.repository}/blobs/uploads/"
        return urljoin(base, location)

    async def has_blob(self, ref: Reference, desc: Descriptor) -> bool:
        return await self.client.head_blob(ref, desc, push=True)

    async def mount(self, ref: Reference, desc: Descriptor, source: str) -> str | None:
        """Mount desc from repository `source` of the same registry: None when mounted (201),
        else the upload session the registry opened instead (202)."""
        path = f"/v2/{ref.repository}/blobs/uploads/?{urlencode({'mount': desc.digest, 'from': source})}"
        return await self._open(
            ref, path, scope_for(ref, push=True, mount_from=source), f"mount of {desc.digest}"
        )

    async def start(self, ref: Reference) -> str:
        location = await self._open(
            ref, f"/v2/{ref.repository}/blobs/uploads/", scope_for(ref, push=True), "an upload"
        )
        if location is None:
            raise TransferError(f"{ref.registry} answered an upload request with 201 and no session")
        return location

    async def _open(self, ref: Reference, path: str, scope: str, what: str) -> str | None:
        async def once() -> str | None:
            headers = {"Content-Length": "0"}
            async with self.client.request("POST", ref, path, headers, scope=scope) as resp:
                if resp.status == 201:
                    return None
                if resp.status != 202 or "Location" not in resp.headers:
                    raise await refused(resp, ref, what)
                return self._url(ref, resp.headers["Location"])

        result: str | None = await self.client.retry.run(once, safe_url(self.client.base_url(ref) + path))
        return result

    async def put_stream(
        self, ref: Reference, location: str, desc: Descriptor, body: AsyncIterable[bytes]
    ) -> None:
        """The whole blob in one PUT, streamed from body (the monolithic upload)."""
        url = with_query(location, digest=desc.digest)
        headers = {"Content-Type": OCTET, "Content-Length": str(desc.size)}
        async with self.client.request(
            "PUT", ref, "", headers, scope=scope_for(ref, push=True), data=body, url=url
        ) as resp:
            await self._landed(resp, ref, desc)

    async def patch(
        self, ref: Reference, location: str, start: int, size: int, body: AsyncIterable[bytes]
    ) -> str:
        """One chunk of `size` bytes at `start`, streamed from body; the registry must confirm it
        holds everything up to the chunk's end. Returns the session's next Location."""
        headers = {
            "Content-Type": OCTET,
            "Content-Length": str(size),
            "Content-Range": f"{start}-{start + size - 1}",
        }
        async with self.client.request(
            "PATCH", ref, "", headers, scope=scope_for(ref, push=True), data=body, url=location
        ) as resp:
            if resp.status != 202:
                if resp.status in (408, 429, 500, 502, 503, 504):
                    raise Retryable(f"HTTP {resp.status} on PATCH")
                raise await refused(resp, ref, "a blob chunk")
            end = _range_end(resp.headers.get("Range"))
            if end != start + size - 1:
                raise TransferError(
                    f"{ref.registry} holds the upload up to byte {end}, not {start + size - 1}"
                )
            return self._url(ref, resp.headers.get("Location") or location)

    async def close(self, ref: Reference, location: str, desc: Descriptor) -> None:
        """The closing PUT of a chunked upload: the registry checks the digest, then commits."""
        url = with_query(location, digest=desc.digest)
        headers = {"Content-Type": OCTET, "Content-Length": "0"}
        async with self.client.request(
            "PUT", ref, "", headers, scope=scope_for(ref, push=True), url=url
        ) as resp:
            await self._landed(resp, ref, desc)

    async def cancel(self, ref: Reference, location: str) -> None:
        """Drop an upload session (best effort: registries expire them anyway)."""
        try:
            async with self.client.request("DELETE", ref, "", scope=scope_for(ref, push=True), url=location):
                pass
        except (OccystrapError, Retryable):
            pass

    async def _landed(self, resp: Response, ref: Reference, desc: Descriptor) -> None:
        if resp.status in (408, 429, 500, 502, 503, 504):
            raise Retryable(f"HTTP {resp.status} on the closing PUT")
        if resp.status != 201:
            raise await refused(resp, ref, f"blob {desc.digest}")
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != desc.digest:
            raise IntegrityError(f"{ref.registry} stored blob {desc.digest} as {got}")

    async def put_blob(self, ref: Reference, desc: Descriptor, data: bytes) -> None:
        """A small blob held in memory (an image config): monolithic, retried whole."""

        async def once() -> None:
            location = await self.start(ref)

            async def body() -> AsyncIterable[bytes]:
                yield data

            await self.put_stream(ref, location, desc, body())

        await self.client.retry.run(once, f"{ref.registry}/{ref.repository} blob {desc.digest}", desc.digest)

    async def put_manifest(self, ref: Reference, reference: str, data: bytes, media_type: str) -> Digest:
        """Exact bytes under a tag or digest; the registry's digest must be ours."""
        path = f"/v2/{ref.repository}/manifests/{reference}"
        ours = digests.of(data)

        async def once() -> Digest:
            headers = {"Content-Type": media_type, "Content-Length": str(len(data))}
            async with self.client.request(
                "PUT", ref, path, headers, scope=scope_for(ref, push=True), data=data
            ) as resp:
                if resp.status not in (200, 201):
                    raise await refused(resp, ref, f"manifest {reference}")
                got = resp.headers.get("Docker-Content-Digest", "")
            try:
                stored = Digest.parse(got)
            except ValueError:
                raise TransferError(f"{ref.registry} stored manifest {reference} without a digest") from None
            if stored != ours:
                raise IntegrityError(f"{ref.registry} stored manifest {reference} as {stored}, not {ours}")
            return stored

        result: Digest = await self.client.retry.run(once, safe_url(self.client.base_url(ref) + path))
        return result


def _range_end(value: str | None) -> int | None:
    """The end of a `Range: 0-N` (or `bytes=0-N`) answer."""
    if not value:
        return None
    try:
        return int(value.rpartition("-")[2])
    except ValueError:
        return None
