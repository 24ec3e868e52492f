"""HTTP exchanges with registries: the only module that imports aiohttp's client.

Transport exceptions become the library's own errors (or Retryable) here and nowhere
else. Redirects are followed by hand so credentials never travel to another host and
HTTPS never falls back to plain HTTP. Proxies come from the environment (see proxy.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

from occystrap.errors import AuthError, TransferError, UsageError
from occystrap.lazyssl import cheap_default_contexts
from occystrap.registry.options import ClientOptions
from occystrap.registry.proxy import Proxy, proxy_for
from occystrap.registry.retry import Retryable

# aiohttp builds two SSL contexts as it is imported: see lazyssl.
with cheap_default_contexts():
    import aiohttp
    import aiohttp.abc
    import aiohttp.resolver

log = logging.getLogger(__name__)

# aiohttp's buffer per response: it stops reading from the socket at twice this and
# resumes below it. Measured: 128 KiB made that pause/resume dance cost about 7% of a
# big fetch; 512 KiB gets nearly all of 1 MiB's speed for less memory per blob.
READ_BUFSIZE = 512 * 1024
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)

SSLArg = ssl.SSLContext | bool
Response = aiohttp.ClientResponse


class Transport:
    def __init__(self, options: ClientOptions, environ: Mapping[str, str] | None = None) -> None:
        self.options = options
        self._environ = os.environ if environ is None else environ
        self._session: aiohttp.ClientSession | None = None
        self._ssl_context: ssl.SSLContext | None = None

    @property
    def verified_ssl(self) -> ssl.SSLContext:
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

    async def open(self) -> None:
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Transport used outside 'async with' of its client")
        return self._session

    def ssl_for(self, url: str, origin: str, origin_ssl: SSLArg) -> SSLArg:
        """The origin's TLS settings for the origin; verified TLS for any other HTTPS host."""
        if urlsplit(url).netloc == urlsplit(origin).netloc:
            return origin_ssl
        return self.verified_ssl if url.startswith("https://") else False

    def _proxy_args(self, proxy: Proxy | None) -> dict[str, Any]:
        if proxy is None:
            return {}
        args: dict[str, Any] = {"proxy": proxy.url}
        if proxy.username is not None:
            args["proxy_auth"] = aiohttp.BasicAuth(proxy.username, proxy.password or "")
        return args

    @asynccontextmanager
    async def exchange(
        self, method: str, url: str, headers: Mapping[str, str], ssl_arg: SSLArg, data: Any = None
    ) -> AsyncIterator[Response]:
        """One HTTP exchange; transport failures become Retryable or TransferError."""
        log.debug("%s %s", method, safe_url(url))
        started = time.monotonic()
        proxy = proxy_for(url, self._environ, self.options.proxy)
        try:
            resp = await self.session.request(
                method,
                url,
                headers=dict(headers),
                ssl=ssl_arg,
                allow_redirects=False,
                data=data,
                **self._proxy_args(proxy),
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
        except aiohttp.ClientProxyConnectionError as exc:
            raise Retryable(f"proxy unreachable: {describe(exc)}") from None
        except aiohttp.ClientHttpProxyError as exc:
            if exc.status == 407 and proxy is not None:
                raise proxy_refusal(proxy, url) from None
            raise Retryable(f"proxy answered HTTP {exc.status}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Retryable(describe(exc)) from None
        log.debug(
            "%s %s -> %s in %.0f ms", method, safe_url(url), resp.status, (time.monotonic() - started) * 1000
        )
        if resp.status == 407 and proxy is not None:
            # Plain HTTP goes through the proxy as an absolute-URI request, so its 407 arrives
            # as a response rather than as a failed CONNECT.
            resp.release()
            raise proxy_refusal(proxy, url)
        try:
            yield resp
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise Retryable(describe(exc)) from None
        finally:
            resp.release()

    @asynccontextmanager
    async def follow(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        origin: str,
        origin_ssl: SSLArg,
        data: Any = None,
    ) -> AsyncIterator[Response]:
        """exchange(), following redirects: credentials stay with the origin, HTTPS stays HTTPS."""
        origin_netloc = urlsplit(origin).netloc
        for _ in range(MAX_REDIRECTS + 1):
            async with self.exchange(
                method, url, headers, self.ssl_for(url, origin, origin_ssl), data
            ) as resp:
                if resp.status in REDIRECTS and "Location" in resp.headers:
                    target = urljoin(url, resp.headers["Location"])
                    if url.startswith("https://") and target.startswith("http://"):
                        raise TransferError(f"refusing redirect from HTTPS to plain HTTP: {safe_url(target)}")
                    if urlsplit(target).netloc != origin_netloc:
                        # Our credentials are for the registry, never for a blob store it points to.
                        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                    url = target
                    continue
                yield resp
                return
        raise TransferError(f"too many redirects fetching {safe_url(url)}")


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


def proxy_refusal(proxy: Proxy, url: str) -> AuthError:
    """One line for a 407: which proxy, and whether credentials were sent (never what they were)."""
    where = f"the proxy {proxy.url} (for {urlsplit(url).netloc})"
    if proxy.username is None:
        return AuthError(
            f"{where} requires credentials (HTTP 407): put them in the proxy URL, "
            "http://USER:PASSWORD@HOST:PORT"
        )
    return AuthError(f"{where} refused the credentials in the proxy URL (HTTP 407)")


def safe_url(url: str) -> str:
    """A URL without query string or userinfo: signed blob URLs carry secrets there."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
