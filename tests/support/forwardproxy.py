"""A small HTTP forward proxy for tests: absolute-URI requests (plain HTTP) and CONNECT tunnels.

It maps made-up host names to loopback (`hosts={"registry.example": "127.0.0.1"}`): those names
resolve nowhere else, so a client that reached `registry.example:PORT` must have gone through
the proxy. Any other host but a loopback literal gets 502, so nothing leaves the machine.
With `credentials` it wants Basic proxy authentication (`Proxy-Authorization`) and answers 407
otherwise. Every request is logged (method, target, status, whether it authenticated).

It runs on asyncio streams rather than aiohttp's server, which cannot hand over the raw socket
a CONNECT tunnel needs. Each client connection carries one request: the proxy tells both sides
`Connection: close`, so the response body is simply everything until the origin closes, with no
framing to parse in either direction.

    with ForwardProxy(hosts={"registry.example": "127.0.0.1"}, credentials=("bob", "pw")) as fp:
        async with session.get(f"http://registry.example:{port}/v2/", proxy=fp.url,
                               proxy_auth=aiohttp.BasicAuth("bob", "pw")) as r: ...
        assert fp.requests[-1].authenticated
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import threading
import urllib.parse
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

HEAD_LIMIT = 64 * 1024
CHUNK = 64 * 1024
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Hop-by-hop request headers (RFC 9110 §7.6.1) the proxy consumes or replaces.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"}
)


@dataclass(frozen=True)
class ProxyRequest:
    """One request the proxy handled."""

    method: str
    target: str  # as on the request line: "http://host:port/path" or, for CONNECT, "host:port"
    host: str
    port: int
    status: int  # the origin's status, 200 for an established tunnel, or the proxy's own error
    authenticated: bool  # carried Proxy-Authorization with the configured credentials
    user: str | None  # the user name in Proxy-Authorization, right or wrong (None: no header)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class ForwardProxy:
    def __init__(
        self,
        hosts: Mapping[str, str] | None = None,
        credentials: tuple[str, str] | None = None,
        allow_loopback: bool = True,
    ) -> None:
        self.hosts = dict(hosts or {})
        self.credentials = credentials
        self.allow_loopback = allow_loopback
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[ProxyRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    # -- addresses -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with_credentials(self, user: str | None = None, password: str | None = None) -> str:
        """The proxy URL with user:password in it, as HTTP_PROXY carries them."""
        u, p = (user, password) if user is not None else (self.credentials or ("", ""))
        quote = urllib.parse.quote
        return f"http://{quote(u, safe='')}:{quote(p or '', safe='')}@127.0.0.1:{self.port}"

    def env(self, with_credentials: bool = False) -> dict[str, str]:
        """HTTP_PROXY / HTTPS_PROXY (both cases) pointing here, NO_PROXY empty."""
        url = self.url_with_credentials() if with_credentials else self.url
        out = {"NO_PROXY": "", "no_proxy": ""}
        for name in ("HTTP_PROXY", "HTTPS_PROXY"):
            out[name] = out[name.lower()] = url
        return out

    # -- the log ---------------------------------------------------------------

    @property
    def requests(self) -> list[ProxyRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, entry: ProxyRequest) -> None:
        with self._lock:
            self._requests.append(entry)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> ForwardProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="forwardproxy", daemon=True)
        self._thread.start()
        self.port = self._call(self._serve())
        return self

    async def _serve(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=HEAD_LIMIT)
        return int(self._server.sockets[0].getsockname()[1])

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        assert self._loop is not None, "the forward proxy is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        # Python 3.11's wait_closed does not wait for open connections: end open tunnels here.
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one connection ----------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent no complete head: nothing to answer
        finally:
            self._conns.discard(task)
            writer.close()

    def _check_auth(self, headers: Mapping[str, str]) -> tuple[bool, str | None]:
        value = headers.get("proxy-authorization")
        if value is None:
            return False, None
        scheme, _, b64 = value.partition(" ")
        try:
            user, _, password = base64.b64decode(b64.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        if scheme.lower() != "basic" or self.credentials is None:
            return False, user
        ok_user = secrets.compare_digest(user, self.credentials[0])
        ok_password = secrets.compare_digest(password, self.credentials[1])
        return ok_user and ok_password, user

    def _resolve(self, host: str) -> str:
        if host in self.hosts:
            return self.hosts[host]
        if self.allow_loopback and host in LOOPBACK:
            return host
        raise _Refused(502, f"unknown host {host}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, headers, raw_headers = _parse_head(head)
        method, target, version = [*request_line.split(" ", 2), "", ""][:3]
        authenticated, user = self._check_auth(headers)
        host, port = "", 0

        def record(status: int) -> None:
            self._record(ProxyRequest(method, target, host, port, status, authenticated, user))

        try:
            if method == "CONNECT":
                host, port = _split_host_port(target, 443)
            else:
                url = urllib.parse.urlsplit(target)
                if url.scheme != "http" or not url.hostname:
                    raise _Refused(400, "absolute http:// URI expected")
                host, port = url.hostname, url.port or 80
            if self.credentials is not None and not authenticated:
                raise _Refused(407, "proxy authentication required")
            up_reader, up_writer = await self._open(host, port)
        except _Refused as refused:
            record(refused.status)
            await _answer(writer, refused.status, refused.reason)
            return
        if method == "CONNECT":
            record(200)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _tunnel(reader, writer, up_reader, up_writer)
            return
        path = url.path or "/"
        path += f"?{url.query}" if url.query else ""
        kept = [(k, v) for k, v in raw_headers if k.lower() not in _HOP_BY_HOP]
        if not any(k.lower() == "host" for k, _ in kept):
            kept.insert(0, ("Host", url.netloc))
        lines = [f"{method} {path} {version}", *(f"{k}: {v}" for k, v in kept), "Connection: close", "", ""]
        up_writer.write("\r\n".join(lines).encode("latin-1"))
        body = asyncio.create_task(_pipe(reader, up_writer))  # whatever the client sends next is body
        try:
            status, response_head = await _response_head(up_reader, writer)
            record(status)  # before the client can have it all: tests read the log right after
            writer.write(response_head)
            await _pipe(up_reader, writer)
        except asyncio.IncompleteReadError:
            record(502)  # the origin closed before a whole response head
            await _answer(writer, 502, f"{host}:{port} closed the connection")
        finally:
            body.cancel()
            await asyncio.gather(body, return_exceptions=True)
            up_writer.close()

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self._resolve(host)
        try:
            return await asyncio.wait_for(asyncio.open_connection(address, port), timeout=10)
        except (OSError, TimeoutError) as e:
            raise _Refused(502, f"cannot reach {host}:{port}: {e}") from e


def _parse_head(head: bytes) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    raw = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
    return lines[0], {k.lower(): v for k, v in raw}, raw


def _split_host_port(target: str, default: int) -> tuple[str, int]:
    url = urllib.parse.urlsplit(f"//{target}")
    if not url.hostname:
        raise _Refused(400, f"bad CONNECT target {target!r}")
    try:
        return url.hostname, url.port or default
    except ValueError as e:
        raise _Refused(400, f"bad CONNECT target {target!r}") from e


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    phrase = {400: "Bad Request", 407: "Proxy Authentication Required", 502: "Bad Gateway"}[status]
    body = (reason + "\n").encode()
    extra = 'Proxy-Authenticate: Basic realm="occystrap-test-proxy"\r\n' if status == 407 else ""
    writer.write(
        f"HTTP/1.1 {status} {phrase}\r\n{extra}Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _response_head(up: asyncio.StreamReader, client: asyncio.StreamWriter) -> tuple[int, bytes]:
    """The origin's final status and its head rewritten to `Connection: close`; 1xx heads
    (100 Continue) come before it and go straight on to the client."""
    while True:
        status_line, _, raw = _parse_head(await up.readuntil(b"\r\n\r\n"))
        status = int(status_line.split(" ", 2)[1])
        kept = [(k, v) for k, v in raw if k.lower() not in ("connection", "keep-alive")]
        if status >= 200:
            kept.append(("Connection", "close"))
        head = "\r\n".join([status_line, *(f"{k}: {v}" for k, v in kept), "", ""]).encode("latin-1")
        if status >= 200:
            return status, head
        client.write(head)
        await client.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()  # pass the half-close on: TLS peers wait for it
    except (ConnectionError, OSError):
        pass


async def _tunnel(
    c_reader: asyncio.StreamReader,
    c_writer: asyncio.StreamWriter,
    u_reader: asyncio.StreamReader,
    u_writer: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(_pipe(c_reader, u_writer), _pipe(u_reader, c_writer))
    finally:
        u_writer.close()


__all__ = ["ForwardProxy", "ProxyRequest"]
