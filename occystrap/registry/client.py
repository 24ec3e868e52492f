"""The registry client: manifests, tag lists and blob streams over authenticated requests.

Layered as httpx is: transport.py does HTTP (and is the only importer of aiohttp's client),
authflow.py decides how to authenticate, retry.py when to try again; this module speaks
the distribution API. Uploads are in upload.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from occystrap import digest as digests
from occystrap.digest import Digest
from occystrap.errors import IntegrityError, ManifestError, NotFoundError, TransferError
from occystrap.events import NullReporter, PullQuota, Reporter
from occystrap.mediatypes import ACCEPT, MAX_MANIFEST_BYTES
from occystrap.model import Descriptor, check_media_type, media_type_of
from occystrap.reference import Reference
from occystrap.registry.authflow import Authenticator, HostState, scope_for
from occystrap.registry.budget import Budget
from occystrap.registry.options import ClientOptions
from occystrap.registry.retry import RETRY_STATUSES, Retryable, RetryPolicy, for_status
from occystrap.registry.transport import Response, Transport, safe_url
from occystrap.sources.base import Fetched

PROGRESS_RESET = 4 * 1024 * 1024


class RegistryClient:
    def __init__(
        self,
        options: ClientOptions | None = None,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.options = options or ClientOptions()
        self.reporter: Reporter = reporter or NullReporter()
        self.transport = Transport(self.options, environ)
        self.retry = RetryPolicy(
            self.options.retries, self.options.backoff, self.options.max_backoff, reporter=self.reporter
        )
        if sleep is not None:
            self.retry.sleep = sleep
        self.auth = Authenticator(self.transport, self.options, self.retry, clock)
        self.budget = Budget(self.options.rate_limit_reserve)

    async def __aenter__(self) -> RegistryClient:
        await self.transport.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.close()

    def base_url(self, ref: Reference) -> str:
        return self.auth.host(ref).base_url

    @asynccontextmanager
    async def request(
        self,
        method: str,
        ref: Reference,
        path: str,
        headers: Mapping[str, str] | None = None,
        scope: str | None = None,
        data: Any = None,
        url: str | None = None,
    ) -> AsyncIterator[Response]:
        """An authenticated request that follows redirects safely. Yields a response that is not
        401, 403, 429 or another status worth a retry (those raise). `url`: an absolute URL on the
        registry (an upload's Location) instead of base + path."""
        host = await self.auth.ping(ref)
        scope = scope or scope_for(ref)
        target = url or f"{host.base_url}{path}"
        # An upload's Location may name another host (a blob store): our credentials stay home.
        foreign = urlsplit(target).netloc != urlsplit(host.base_url).netloc
        for attempt in range(2):
            req_headers = dict(headers or {})
            auth_header = None if foreign else await self.auth.header(ref, host, scope)
            if auth_header:
                req_headers["Authorization"] = auth_header
            async with self.transport.follow(
                method, target, req_headers, host.base_url, host.ssl, data
            ) as resp:
                quota = self.budget.note(ref.registry, resp.status, resp.headers)
                if quota is not None:
                    self.reporter.emit(
                        PullQuota(ref.registry, quota.remaining, quota.limit, quota.window, quota.reset)
                    )
                if resp.status == 401:
                    if self.auth.refused(
                        ref, host, scope, resp.headers.get("WWW-Authenticate", ""), attempt == 0
                    ):
                        continue
                    raise self.auth.refusal(ref, host, scope, 401)
                if resp.status == 403:
                    raise self.auth.refusal(ref, host, scope, 403)
                if resp.status in RETRY_STATUSES:
                    raise for_status(resp.status, resp.headers.get("Retry-After"))
                yield resp
                return
        raise self.auth.refusal(ref, host, scope, 401)

    def host(self, ref: Reference) -> HostState:
        return self.auth.host(ref)

    # --- manifests ---------------------------------------------------------

    async def get_manifest(self, ref: Reference, reference: str | None = None) -> tuple[bytes, str, str]:
        """Exact manifest bytes, their media type and digest (verified when pinned)."""
        fetched = await self.manifest(ref, reference)
        return fetched.data, fetched.media_type, fetched.digest

    async def manifest(self, ref: Reference, reference: str | None = None) -> Fetched:
        target = reference or ref.reference
        path = f"/v2/{ref.repository}/manifests/{target}"

        await self.budget.learn(ref.registry, lambda: self.head_manifest(ref, target))

        async def once() -> tuple[bytes, str]:
            # Docker Hub counts manifest GETs: each is admitted against the reserve, if any.
            async with (
                self.budget.spend(ref.registry) as settle,
                self.request("GET", ref, path, {"Accept": ACCEPT}) as resp,
            ):
                settle()
                if resp.status == 404:
                    what = f"digest {target}" if target.startswith("sha256:") else f"tag {target!r}"
                    raise NotFoundError(f"{ref.full_name}: {what} not found on {ref.registry}")
                if resp.status != 200:
                    raise TransferError(f"GET {path} on {ref.registry}: HTTP {resp.status}")
                body = await read_capped(resp, f"manifest for {ref}")
                return body, (resp.headers.get("Content-Type") or "").split(";")[0].strip()

        data, declared = await self.retry.run(once, f"{self.base_url(ref)}{path}")
        digest = digests.of(data)
        if target.startswith("sha256:") and digest != target:
            raise IntegrityError(f"manifest for {ref} hashes to {digest}, not {target}")
        media = media_type_of(data, declared, f"manifest of {ref}")
        check_media_type(media, f"manifest of {ref}")
        return Fetched(data, media, digest)

    async def head_manifest(
        self, ref: Reference, reference: str | None = None, push: bool = False
    ) -> Digest | None:
        """The digest the registry holds under a tag or digest, or None: one HEAD, which Docker
        Hub does not count against the pull limit."""
        target = reference or ref.reference
        path = f"/v2/{ref.repository}/manifests/{target}"

        async def once() -> Digest | None:
            async with self.request("HEAD", ref, path, {"Accept": ACCEPT}, scope_for(ref, push)) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise TransferError(f"HEAD {path} on {ref.registry}: HTTP {resp.status}")
                found = resp.headers.get("Docker-Content-Digest")
                try:
                    return Digest.parse(found) if found else None
                except ValueError:
                    return None

        return await self.retry.run(once, f"{self.base_url(ref)}{path}")

    # --- blobs -------------------------------------------------------------

    async def head_blob(self, ref: Reference, desc: Descriptor, push: bool = False) -> bool:
        path = f"/v2/{ref.repository}/blobs/{desc.digest}"

        async def once() -> bool:
            async with self.request("HEAD", ref, path, scope=scope_for(ref, push)) as resp:
                if resp.status == 404:
                    return False
                if resp.status != 200:
                    raise TransferError(f"HEAD blob {desc.digest} on {ref.registry}: HTTP {resp.status}")
                length = resp.content_length
                return length is None or length == desc.size

        return await self.retry.run(once, f"{self.base_url(ref)}{path}")

    async def blob_chunks(
        self, ref: Reference, desc: Descriptor, offset: int = 0
    ) -> AsyncGenerator[bytes, None]:
        """Yield a blob's bytes from `offset`, resuming with Range after a break.

        Consumers see one unbroken stream: a resumed body continues exactly where
        the last one stopped, and a server that ignores Range is skipped forward.
        Size is enforced here; the digest is the caller's to check.
        """
        path = f"/v2/{ref.repository}/blobs/{desc.digest}"
        received = offset
        tries = 0
        # Only real progress earns fresh retries: a link that breaks every few kilobytes
        # must still run out of attempts rather than crawl on for ever.
        progress_mark = offset
        while True:
            headers = {"Range": f"bytes={received}-"} if received else {}
            try:
                async with self.request("GET", ref, path, headers) as resp:
                    skip = _body_start(resp, ref, desc, received)
                    # iter_chunks hands over aiohttp's buffers one by one, never joined or copied.
                    async for chunk, _ in resp.content.iter_chunks():
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk, skip = chunk[skip:], 0
                        received += len(chunk)
                        if received > desc.size:
                            raise IntegrityError(
                                f"blob {desc.digest} is larger than the {desc.size} bytes its descriptor says"
                            )
                        if received - progress_mark >= PROGRESS_RESET:
                            tries, progress_mark = 0, received
                        yield chunk
                    if received < desc.size:
                        raise Retryable(f"body ended at byte {received} of {desc.size}")
                    return
            except Retryable as exc:
                if received == desc.size:
                    # Every byte arrived and only the connection's end went wrong (a Content-Length
                    # longer than the blob, a reset after the last byte): asking for `bytes=size-`
                    # would only earn a 416. The caller's digest check judges the bytes.
                    return
                tries += 1
                await self.retry.wait(tries, exc, safe_url(self.base_url(ref) + path), desc.digest)


def _body_start(resp: Response, ref: Reference, desc: Descriptor, received: int) -> int:
    """How many bytes of the body to skip: a 206 must start where we asked; a 200 is whole."""
    if resp.status == 404:
        raise NotFoundError(f"blob {desc.digest} of {ref.full_name} not found on {ref.registry}")
    if resp.status == 206:
        start = _content_range_start(resp.headers.get("Content-Range"))
        if start != received:
            raise Retryable(f"server resumed at byte {start}, not {received}")
        return 0
    if resp.status == 200:
        return received  # Range ignored: the body starts at byte 0 again.
    raise TransferError(f"GET blob {desc.digest} on {ref.registry}: HTTP {resp.status}")


async def read_capped(resp: Response, what: str) -> bytes:
    length = resp.content_length
    if length is not None and length > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{what} is {length} bytes, over the {MAX_MANIFEST_BYTES} cap")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += chunk
        if len(body) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{what} is over the {MAX_MANIFEST_BYTES} byte cap")
    return bytes(body)


def _content_range_start(value: str | None) -> int | None:
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-")[0])
    except ValueError:
        return None
