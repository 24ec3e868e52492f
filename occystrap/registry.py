"""The registry client: the only module that imports aiohttp.

Transport exceptions become the library's own errors here and nowhere else.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import random
import socket
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from occystrap import auth
from occystrap.errors import (
    AuthError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    OccystrapError,
    PlatformNotFoundError,
    RateLimitedError,
    TransferError,
    UsageError,
)
from occystrap.events import BlobRetry, NullReporter, Reporter
from occystrap.lazyssl import cheap_default_contexts
from occystrap.model import (
    ACCEPT,
    DOCKER_SCHEMA1,
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Image,
    Platform,
    build_image,
    check_media_type,
    choose_platform,
    load_json,
    parse_index,
    sha256_digest,
)
from occystrap.reference import Reference

# aiohttp builds two SSL contexts as it is imported: see lazyssl.
with cheap_default_contexts():
    import aiohttp
    import aiohttp.abc
    import aiohttp.resolver

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# aiohttp's buffer per response: it stops reading from the socket at twice this and
# resumes below it. Measured: 128 KiB made that pause/resume dance cost about 7% of a
# big fetch; 512 KiB gets nearly all of 1 MiB's speed for less memory per blob.
READ_BUFSIZE = 512 * 1024
PROGRESS_RESET = 4 * 1024 * 1024
MAX_REDIRECTS = 5


@dataclass
class ClientOptions:
    username: str | None = None
    # Kept out of repr(): options reach debug logs and tracebacks that way.
    password: str | None = field(default=None, repr=False)
    insecure_registries: frozenset[str] = frozenset()
    ca_cert: Path | None = None
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    connections_per_host: int = 16
    # Host name -> address, like curl's --resolve: TLS still checks the name.
    resolve: dict[str, str] = field(default_factory=dict)
    # Registry -> credentials for that registry alone (a mirror spec's `registries:`).
    credentials: dict[str, auth.Credentials] = field(default_factory=dict, repr=False)


@dataclass
class _Host:
    """What we learned about one registry: how to reach it and how to authenticate."""

    base_url: str
    ssl: ssl.SSLContext | bool
    credentials: auth.Credentials | None
    challenge: auth.Challenge | None = None
    # Bearer tokens are credentials: never in repr() (logs, tracebacks).
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pinged: bool = False


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after

    @property
    def rate_limited(self) -> bool:
        # Only the status says so: a reason such as "body ended at byte 14290" must not.
        return self.reason.startswith("HTTP 429")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


class RegistryClient:
    def __init__(
        self,
        options: ClientOptions | None = None,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options or ClientOptions()
        self._clock = clock  # token expiry is judged by this
        self.reporter: Reporter = reporter or NullReporter()
        self._hosts: dict[str, _Host] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self.retries_done = 0

    @property
    def _verified_ssl(self) -> ssl.SSLContext:
        """Built on first use: loading the system CA store costs time a loopback fetch never needs."""
        if self._ssl_context is None:
            context = ssl.create_default_context()
            if self.options.ca_cert:
                try:
                    context.load_verify_locations(cafile=str(self.options.ca_cert))
                except (OSError, ssl.SSLError) as exc:
                    # The file the user named is unusable: a usage error (exit 2), not refused credentials.
                    raise UsageError(f"cannot load CA certificate {self.options.ca_cert}: {exc}") from None
            self._ssl_context = context
        return self._ssl_context

    async def __aenter__(self) -> RegistryClient:
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=self.options.connect_timeout,
            sock_read=self.options.read_timeout,
        )
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=self.options.connections_per_host,
            resolver=_PinnedResolver(self.options.resolve) if self.options.resolve else None,
        )
        self._session = aiohttp.ClientSession(
            read_bufsize=READ_BUFSIZE,
            timeout=timeout,
            connector=connector,
            auto_decompress=False,
            headers={"User-Agent": "occystrap"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        return self._session

    # --- hosts, auth -------------------------------------------------------

    def _host(self, ref: Reference) -> _Host:
        host = self._hosts.get(ref.registry)
        if host is None:
            insecure = ref.registry in self.options.insecure_registries
            ssl_arg: ssl.SSLContext | bool
            if ref.is_loopback:
                base, ssl_arg = f"http://{ref.api_host}", False
            elif insecure:
                base, ssl_arg = f"https://{ref.api_host}", False
            else:
                base, ssl_arg = f"https://{ref.api_host}", self._verified_ssl
            creds = self.options.credentials.get(ref.registry) or auth.resolve_credentials(
                ref.registry, self.options.username, self.options.password
            )
            host = _Host(base, ssl_arg, creds)
            self._hosts[ref.registry] = host
        return host

    async def _ping(self, ref: Reference, host: _Host) -> None:
        """Learn how the registry wants us to authenticate, and whether it is there at all."""
        async with host.lock:
            if host.pinged:
                return
            try:
                await self._retrying(lambda: self._ping_once(host), f"{host.base_url}/v2/")
            except TransferError as exc:
                insecure = ref.registry in self.options.insecure_registries
                if insecure and host.base_url.startswith("https://"):
                    # Docker's rule for insecure registries: TLS first, then plain HTTP.
                    host.base_url = "http://" + host.base_url.removeprefix("https://")
                    await self._retrying(lambda: self._ping_once(host), f"{host.base_url}/v2/")
                else:
                    raise TransferError(f"cannot reach registry {ref.registry}: {exc}") from None
            host.pinged = True

    async def _ping_once(self, host: _Host) -> None:
        url = f"{host.base_url}/v2/"
        async with self._transport("GET", url, {}, host.ssl) as resp:
            if resp.status == 401:
                challenges = auth.parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                host.challenge = next(
                    (c for c in challenges if c.scheme == "bearer"),
                    next((c for c in challenges if c.scheme == "basic"), None),
                )
            elif resp.status in RETRY_STATUSES:
                raise _Retryable(f"HTTP {resp.status}", parse_retry_after(resp.headers.get("Retry-After")))
            elif resp.status == 404:
                raise NotFoundError(f"{url} is not a registry API endpoint (HTTP 404)")
            elif resp.status >= 400 and resp.status != 403:
                raise TransferError(f"registry ping {url} failed: HTTP {resp.status}")

    async def _auth_header(self, ref: Reference, host: _Host, scope: str) -> str | None:
        challenge = host.challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if host.credentials is None:
                raise AuthError(f"{ref.registry} requires credentials (use --username/--password)")
            return host.credentials.basic_header()
        if challenge.scheme != "bearer":
            raise AuthError(f"{ref.registry} asks for unsupported auth scheme {challenge.scheme!r}")
        cached = host.tokens.get(scope)
        if cached and cached[1] > self._clock():
            return f"Bearer {cached[0]}"
        token, lifetime = await self._fetch_token(ref, host, challenge, scope)
        # Refresh a little early so a token never expires mid-request.
        host.tokens[scope] = (token, self._clock() + max(lifetime - 10, lifetime / 2))
        return f"Bearer {token}"

    async def _fetch_token(
        self, ref: Reference, host: _Host, challenge: auth.Challenge, scope: str
    ) -> tuple[str, float]:
        realm = challenge.realm
        if not realm:
            raise AuthError(f"{ref.registry} sent a bearer challenge without a realm")
        query = {"scope": scope}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        headers = {}
        if host.credentials is not None:
            headers["Authorization"] = host.credentials.basic_header()
        ssl_arg = self._ssl_for(url, host)

        async def once() -> tuple[str, float]:
            async with self._transport("GET", url, headers, ssl_arg) as resp:
                if resp.status in (401, 403):
                    who = "credentials were refused" if host.credentials else "anonymous access refused"
                    raise AuthError(f"token server for {ref.registry}: {who} (HTTP {resp.status})")
                if resp.status in RETRY_STATUSES:
                    raise _Retryable(
                        f"HTTP {resp.status}", parse_retry_after(resp.headers.get("Retry-After"))
                    )
                if resp.status != 200:
                    raise AuthError(f"token server for {ref.registry} answered HTTP {resp.status}")
                body = await resp.read()
            doc = load_json(body, f"token response from {ref.registry}")
            token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
            if not isinstance(token, str) or not token:
                raise AuthError(f"token server for {ref.registry} returned no token")
            expires = doc.get("expires_in", 60)
            return token, float(expires) if isinstance(expires, (int, float)) and expires > 0 else 60.0

        result: tuple[str, float] = await self._retrying(once, urlsplit(url)._replace(query="").geturl())
        return result

    def _ssl_for(self, url: str, host: _Host) -> ssl.SSLContext | bool:
        if urlsplit(url).netloc == urlsplit(host.base_url).netloc:
            return host.ssl
        return self._verified_ssl if url.startswith("https://") else False

    # --- requests ----------------------------------------------------------

    @asynccontextmanager
    async def _transport(
        self, method: str, url: str, headers: dict[str, str], ssl_arg: ssl.SSLContext | bool
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One HTTP exchange; transport failures become _Retryable or TransferError."""
        log.debug("%s %s", method, _safe_url(url))
        started = time.monotonic()
        try:
            resp = await self.session.request(
                method, url, headers=headers, ssl=ssl_arg, allow_redirects=False
            )
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TransferError(
                f"TLS certificate of {urlsplit(url).netloc} not trusted: {exc.certificate_error}"
            ) from None
        except aiohttp.ClientConnectorDNSError as exc:
            raise TransferError(f"cannot resolve {urlsplit(url).hostname}: {exc.os_error}") from None
        except aiohttp.ClientSSLError as exc:
            reason = getattr(exc, "os_error", None) or exc
            raise TransferError(f"TLS failure talking to {urlsplit(url).netloc}: {reason}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _Retryable(_describe(exc)) from None
        log.debug(
            "%s %s -> %s in %.0f ms", method, _safe_url(url), resp.status, (time.monotonic() - started) * 1000
        )
        try:
            yield resp
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise _Retryable(_describe(exc)) from None
        finally:
            resp.release()

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        ref: Reference,
        path: str,
        headers: dict[str, str] | None = None,
        push: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An authenticated request that follows redirects safely. Yields a non-401, non-3xx response."""
        host = self._host(ref)
        await self._ping(ref, host)
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        url = f"{host.base_url}{path}"
        for auth_try in range(2):
            req_headers = dict(headers or {})
            auth_header = await self._auth_header(ref, host, scope)
            if auth_header:
                req_headers["Authorization"] = auth_header
            async with self._follow(method, url, req_headers, host) as resp:
                if resp.status == 401:
                    if auth_try == 0 and host.challenge and host.challenge.scheme == "bearer":
                        # Token may have been revoked or expired early: fetch a fresh one once.
                        host.tokens.pop(scope, None)
                        challenges = auth.parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                        host.challenge = next((c for c in challenges if c.scheme == "bearer"), host.challenge)
                        continue
                    if host.challenge is None:
                        host.challenge = next(
                            iter(auth.parse_challenges(resp.headers.get("WWW-Authenticate", ""))), None
                        )
                        if host.challenge is not None and auth_try == 0:
                            continue
                    if host.credentials is None:
                        raise AuthError(
                            f"{ref.registry} refused anonymous access to {ref.repository}"
                            " (it may not exist, or needs --username/--password)"
                        )
                    raise AuthError(
                        f"{ref.registry} refused the credentials for user {host.credentials.username!r}"
                    )
                if resp.status == 403:
                    raise AuthError(f"{ref.registry} denied access to {ref.repository} (HTTP 403)")
                if resp.status == 429:
                    raise _Retryable(
                        "HTTP 429 (rate limited)", parse_retry_after(resp.headers.get("Retry-After"))
                    )
                if resp.status in RETRY_STATUSES:
                    raise _Retryable(
                        f"HTTP {resp.status}", parse_retry_after(resp.headers.get("Retry-After"))
                    )
                yield resp
                return
        raise AuthError(f"{ref.registry} kept refusing authentication")

    @asynccontextmanager
    async def _follow(
        self, method: str, url: str, headers: dict[str, str], host: _Host
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        origin = urlsplit(host.base_url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            async with self._transport(method, url, headers, self._ssl_for(url, host)) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    target = urljoin(url, resp.headers["Location"])
                    if url.startswith("https://") and target.startswith("http://"):
                        raise TransferError(
                            f"refusing redirect from HTTPS to plain HTTP: {_safe_url(target)}"
                        )
                    if urlsplit(target).netloc != origin:
                        # Our credentials are for the registry, never for a blob store it points to.
                        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                    url = target
                    continue
                yield resp
                return
        raise TransferError(f"too many redirects fetching {_safe_url(url)}")

    async def _retrying(self, attempt: Any, what: str, digest: str | None = None) -> Any:
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except _Retryable as exc:
                await self._backoff(tries, exc, what, digest)

    async def _backoff(self, tries: int, exc: _Retryable, what: str, digest: str | None) -> None:
        """Wait before try number tries + 1, or give up with the library's own error."""
        if tries > self.options.retries:
            cls = RateLimitedError if exc.rate_limited else TransferError
            raise cls(f"{_safe_url(what)}: {exc.reason} after {tries} tries") from None
        delay = min(self.options.max_backoff, self.options.backoff * (2 ** (tries - 1)))
        delay = delay * (0.5 + random.random() / 2)
        if exc.retry_after is not None:
            delay = min(max(delay, exc.retry_after), 300.0)
        self.retries_done += 1
        self.reporter.emit(BlobRetry(digest, _safe_url(what), tries, delay, exc.reason))
        await asyncio.sleep(delay)

    # --- manifests ---------------------------------------------------------

    async def get_manifest(self, ref: Reference, reference: str | None = None) -> tuple[bytes, str, str]:
        """Exact manifest bytes, their media type and digest (verified when pinned)."""
        target = reference or ref.reference
        path = f"/v2/{ref.repository}/manifests/{target}"

        async def once() -> tuple[bytes, str]:
            async with self._request("GET", ref, path, {"Accept": ACCEPT}) as resp:
                if resp.status == 404:
                    what = f"digest {target}" if target.startswith("sha256:") else f"tag {target!r}"
                    raise NotFoundError(f"{ref.full_name}: {what} not found on {ref.registry}")
                if resp.status != 200:
                    raise TransferError(f"GET {path} on {ref.registry}: HTTP {resp.status}")
                length = resp.content_length
                if length is not None and length > MAX_MANIFEST_BYTES:
                    raise ManifestError(
                        f"manifest for {ref} is {length} bytes, over the {MAX_MANIFEST_BYTES} cap"
                    )
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_MANIFEST_BYTES:
                        raise ManifestError(f"manifest for {ref} is over the {MAX_MANIFEST_BYTES} byte cap")
                media = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
                return bytes(body), media

        data, media = await self._retrying(once, f"{self._host(ref).base_url}{path}")
        digest = sha256_digest(data)
        if target.startswith("sha256:") and digest != target:
            raise IntegrityError(f"manifest for {ref} hashes to {digest}, not {target}")
        if not media or media == "application/octet-stream":
            doc = load_json(data, f"manifest of {ref}")
            media = ""
            if isinstance(doc, dict):
                # Schema1 manifests have no mediaType field; schemaVersion gives them away.
                media = doc.get("mediaType") or (DOCKER_SCHEMA1 if doc.get("schemaVersion") == 1 else "")
        check_media_type(media, f"manifest of {ref}")
        return data, media, digest

    async def resolve(self, ref: Reference, platform: Platform) -> Image:
        """Turn a reference into an Image: manifest (picked from an index if need be) and config."""
        data, media, digest = await self.get_manifest(ref)
        chosen: Platform | None = None
        if media in INDEX_TYPES:
            entries = parse_index(data, str(ref))
            entry = choose_platform(entries, platform)
            if entry is None:
                available = sorted({str(e.platform) for e in entries if e.platform})
                raise PlatformNotFoundError(str(platform), available)
            chosen = entry.platform
            data, media, digest = await self.get_manifest(ref, entry.digest)
            if media in INDEX_TYPES:
                raise ManifestError(f"{ref}: nested index for platform {platform} is not supported")
        descriptor = Descriptor(media, digest, len(data))
        config_desc = _config_descriptor(data, str(ref))
        config = await self.get_small_blob(ref, config_desc)
        return build_image(ref, descriptor, data, config, chosen)

    async def get_small_blob(self, ref: Reference, desc: Descriptor) -> bytes:
        if desc.size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"config of {ref} is {desc.size} bytes, over the {MAX_MANIFEST_BYTES} cap")
        body = bytearray()
        async for chunk in self.blob_chunks(ref, desc):
            body += chunk
        data = bytes(body)
        if sha256_digest(data) != desc.digest:
            raise IntegrityError(f"config of {ref} does not match its digest {desc.digest}")
        return data

    async def list_tags(self, ref: Reference) -> list[str]:
        """Every tag of the repository, following `Link` pagination."""
        tags: list[str] = []
        path: str | None = f"/v2/{ref.repository}/tags/list?n=1000"
        while path:
            page, path = await self._retrying(
                functools.partial(self._tags_page, ref, path), f"{self._host(ref).base_url}{path}"
            )
            tags.extend(page)
        return tags

    async def _tags_page(self, ref: Reference, path: str) -> tuple[list[str], str | None]:
        async with self._request("GET", ref, path) as resp:
            if resp.status == 404:
                raise NotFoundError(f"{ref.full_name} not found on {ref.registry}")
            if resp.status != 200:
                raise TransferError(f"GET {path} on {ref.registry}: HTTP {resp.status}")
            body = await resp.read()
            link = resp.headers.get("Link")
        doc = load_json(body, f"tag list of {ref.full_name}")
        page = doc.get("tags") if isinstance(doc, dict) else None
        nxt = None
        if link and 'rel="next"' in link:
            target = link.split(";")[0].strip().strip("<>")
            parts = urlsplit(target)
            nxt = parts.path + (f"?{parts.query}" if parts.query else "")
        return [t for t in page or [] if isinstance(t, str)], nxt

    # --- blobs -------------------------------------------------------------

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
                async with self._request("GET", ref, path, headers) as resp:
                    if resp.status == 404:
                        raise NotFoundError(
                            f"blob {desc.digest} of {ref.full_name} not found on {ref.registry}"
                        )
                    skip = 0
                    if resp.status == 206:
                        start = _content_range_start(resp.headers.get("Content-Range"))
                        if start != received:
                            raise _Retryable(f"server resumed at byte {start}, not {received}")
                    elif resp.status == 200:
                        skip = received  # Range ignored: the body starts at byte 0 again.
                    else:
                        raise TransferError(f"GET blob {desc.digest} on {ref.registry}: HTTP {resp.status}")
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
                        raise _Retryable(f"body ended at byte {received} of {desc.size}")
                    return
            except _Retryable as exc:
                if received == desc.size:
                    # Every byte arrived and only the connection's end went wrong (a Content-Length
                    # longer than the blob, a reset after the last byte): asking for `bytes=size-`
                    # would only earn a 416. The caller's digest check judges the bytes.
                    return
                tries += 1
                await self._backoff(tries, exc, self._host(ref).base_url + path, desc.digest)


class _PinnedResolver(aiohttp.abc.AbstractResolver):
    def __init__(self, pins: dict[str, str]) -> None:
        self._pins = pins
        self._default = aiohttp.resolver.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        address = self._pins.get(host)
        if address is None:
            return await self._default.resolve(host, port, family)
        af = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": af,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        await self._default.close()


def _config_descriptor(manifest: bytes, what: str) -> Descriptor:
    doc = load_json(manifest, f"manifest of {what}")
    if not isinstance(doc, dict):
        raise ManifestError(f"malformed manifest for {what}")
    return Descriptor.from_json(doc.get("config"), what)


def _content_range_start(value: str | None) -> int | None:
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-")[0])
    except ValueError:
        return None


def _safe_url(url: str) -> str:
    """A URL without query string or userinfo: signed blob URLs carry secrets there."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


__all__ = ["ClientOptions", "OccystrapError", "RegistryClient"]
