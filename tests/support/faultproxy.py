"""A fault-injecting reverse proxy to put in front of the real registry in tests.

It runs aiohttp on a free 127.0.0.1 port in its own thread with its own event
loop (like the token server), so synchronous tests, the CLI in a subprocess and
in-process async tests can all talk to it. Bodies are streamed, never buffered
whole, and headers pass through (Location is rewritten to point at the proxy).

Faults are `Fault` objects: each matches requests by method and path (a
substring, or a regex) and applies to the first `times` matching requests
(None: all of them). Several faults can apply to one request (e.g. "drop after
N bytes" once, plus "ignore Range" always). Faults can be added, replaced or
cleared while the proxy runs; every request is recorded with its Range header
so tests can check that a resume asked for the right offset.

    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault(match=layer.digest, drop_after=100_000))
        ok("fetch-to-tarfile", proxy.ref("team/app", "v1"), ...)
        assert proxy.ranges(layer.digest) == ["bytes=100000-"]

Registry behaviours beyond single faults: `set_rate_limit(RateLimit(limit=N))` imposes
Docker Hub's pull quota (headers on manifest responses, 429 once spent; see ratelimit.py),
`set_tag_pages(TagPages(page_size=N))` serves tag lists in pages with `Link` headers, as the
spec and the hosted registries do (see tagpages.py), and
`Fault(rewrite_challenge=without_realm, ...)` edits the registry's WWW-Authenticate challenge
(distribution refuses to start token auth without a realm, so a realm-less challenge can only
be made on the way out).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.support.loopserver import LoopServer
from tests.support.ratelimit import TOO_MANY_REQUESTS_MESSAGE, RateLimit
from tests.support.tagpages import TagPages

BLOB_GETS = "/blobs/sha256:"
STREAM_CHUNK = 64 * 1024

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself.
_SKIP_REQUEST = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}
)
_SKIP_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"})


@dataclass
class Fault:
    """What to do to matching requests. Knobs combine; unset knobs do nothing.

    match: substring of the path (with query) to match, or a regex when regex=True.
    method: only requests with this method (None: any method).
    times: how many matching requests to affect (None: every one).
    status: answer this status instead of forwarding (e.g. 429, 503), with
        Retry-After: retry_after when given.
    drop_after: close the connection after this many body bytes.
    drop_linger: seconds to wait, with the bytes sent, before closing (after
        drop_after or length_delta); lets the client consume them first, so its
        resume offset is exactly what was sent. 0 closes at once, and the client
        may then lose bytes it had received but not yet read.
    stall: seconds to pause; stall_at is the body offset to pause at
        (0: after the headers, before the body; None: before the headers).
    flip_at: XOR one byte at this offset of the resource (a 206 body's offset
        is taken from Content-Range, so the same byte is flipped on resume).
    ignore_range: drop the request's Range header, so the registry replies 200
        with the whole body.
    length_delta: declare Content-Length as the real length plus this, send at
        most the declared bytes, then close the connection.
    rewrite_challenge: replace a WWW-Authenticate header's value by what this returns
        for it (e.g. without_realm).
    error_code: the distribution-spec error code in the body of a `status` answer
        (e.g. "MANIFEST_INVALID", "DENIED").
    cut_upload_after: read this many bytes of the request's body (an upload), then close
        the connection without answering.
    body: answer these bytes instead of the registry's body, with the registry's status and
        headers (Content-Length follows): a man in the middle serving other content under
        the same name (e.g. another valid manifest under a pinned digest).
    headers: response headers to set on a forwarded answer, replacing the registry's (e.g. a
        Docker-Content-Digest other than the content's).
    """

    match: str = BLOB_GETS
    regex: bool = False
    method: str | None = "GET"
    times: int | None = 1
    status: int | None = None
    retry_after: float | str | None = None
    drop_after: int | None = None
    drop_linger: float = 0.2
    stall: float = 0.0
    stall_at: int | None = 0
    flip_at: int | None = None
    ignore_range: bool = False
    length_delta: int = 0
    rewrite_challenge: Callable[[str], str] | None = None
    error_code: str = "INJECTED"
    cut_upload_after: int | None = None
    body: bytes | None = None
    headers: dict[str, str] | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.regex:
            return re.search(self.match, path) is not None
        return self.match in path


@dataclass
class Seen:
    """One request the proxy handled; recorded on arrival, updated as it goes."""

    method: str
    path: str
    range: str | None
    faults: tuple[Fault, ...]
    status: int = 0  # what the client got (0: nothing yet, or closed before headers)
    body_bytes: int = 0  # body bytes sent to the client
    done: bool = False
    # Requests the proxy already held unanswered (no status yet) when this one arrived: with
    # faults that stall before the headers, how many were in flight at once.
    waiting: int = 0


@dataclass
class _Active:
    """Faults applying to one request, merged."""

    faults: list[Fault] = field(default_factory=list)
    status: int | None = None
    retry_after: float | str | None = None
    drop_after: int | None = None
    drop_linger: float = 0.0
    stall: float = 0.0
    stall_at: int | None = 0
    flip_at: int | None = None
    ignore_range: bool = False
    length_delta: int = 0
    rewrite_challenge: Callable[[str], str] | None = None
    error_code: str = "INJECTED"
    cut_upload_after: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def add(self, f: Fault) -> None:
        self.faults.append(f)
        if f.status is not None:
            self.status, self.retry_after, self.error_code = f.status, f.retry_after, f.error_code
        if f.cut_upload_after is not None:
            self.cut_upload_after = f.cut_upload_after
        if f.drop_after is not None:
            self.drop_after, self.drop_linger = f.drop_after, f.drop_linger
        if f.stall:
            self.stall, self.stall_at = f.stall, f.stall_at
        if f.flip_at is not None:
            self.flip_at = f.flip_at
        self.ignore_range = self.ignore_range or f.ignore_range
        if f.length_delta:
            self.length_delta, self.drop_linger = f.length_delta, f.drop_linger
        if f.rewrite_challenge is not None:
            self.rewrite_challenge = f.rewrite_challenge
        if f.body is not None:
            self.body = f.body
        self.headers.update(f.headers or {})


class FaultProxy:
    def __init__(self, upstream: str, shutdown_timeout: float = 0.5) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self._lock = threading.Lock()
        self._faults: list[tuple[Fault, list[int]]] = []  # fault, [uses left] (-1: unlimited)
        self._seen: list[Seen] = []
        self._server = LoopServer("faultproxy", shutdown_timeout)
        self._session: aiohttp.ClientSession | None = None
        self.rate_limit: RateLimit | None = None
        self.tag_pages: TagPages | None = None

    # -- addresses -----------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, repo: str, reference: str) -> str:
        """'127.0.0.1:PROXYPORT/repo:tag' (or '@sha256:...')."""
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"{self.host}/{repo}{sep}{reference}"

    # -- knobs (thread-safe; may change while requests are in flight) --------

    def add(self, *faults: Fault) -> FaultProxy:
        with self._lock:
            for f in faults:
                self._faults.append((f, [-1 if f.times is None else f.times]))
        return self

    def set(self, *faults: Fault) -> FaultProxy:
        """Replace every fault (none: pass everything through untouched)."""
        with self._lock:
            self._faults = [(f, [-1 if f.times is None else f.times]) for f in faults]
        return self

    def clear(self) -> FaultProxy:
        return self.set()

    def set_rate_limit(self, rate_limit: RateLimit | None) -> FaultProxy:
        """Impose a pull quota on manifest GETs (None: lift it). Faults with a status come first."""
        self.rate_limit = rate_limit
        return self

    def set_tag_pages(self, tag_pages: TagPages | None) -> FaultProxy:
        """Serve tag lists in pages (None: pass them through whole)."""
        self.tag_pages = tag_pages
        return self

    def reset_counts(self) -> None:
        with self._lock:
            self._seen.clear()

    def _take(self, method: str, path: str) -> _Active:
        active = _Active()
        with self._lock:
            for f, left in self._faults:
                if left[0] != 0 and f.matches(method, path):
                    if left[0] > 0:
                        left[0] -= 1
                    active.add(f)
        return active

    # -- what was seen -------------------------------------------------------

    def seen(self, match: str = "", method: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self._seen if match in s.path and (method is None or s.method == method)]

    def count(self, match: str = "", method: str | None = "GET") -> int:
        return len(self.seen(match, method))

    def counts(self) -> dict[str, int]:
        """Requests per path."""
        out: dict[str, int] = {}
        for s in self.seen():
            out[s.path] = out.get(s.path, 0) + 1
        return out

    def ranges(self, match: str = BLOB_GETS) -> list[str]:
        """Range headers received on matching GETs, in order."""
        return [s.range for s in self.seen(match, "GET") if s.range is not None]

    def in_flight(self, match: str = BLOB_GETS, method: str | None = "GET") -> int:
        """The most matching requests held unanswered at once (see Seen.waiting), this one included."""
        return max((s.waiting + 1 for s in self.seen(match, method)), default=0)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            seen.waiting = sum(
                1 for s in self._seen if not s.done and s.status == 0 and s.method == seen.method
            )
            self._seen.append(seen)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> FaultProxy:
        self.port = self._server.start(self._app)
        return self

    async def _app(self) -> web.Application:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        )
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stop(self) -> None:
        self._server.stop(after=self._close_session)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the proxy -----------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        active = self._take(request.method, request.path_qs)
        seen = Seen(request.method, request.path_qs, request.headers.get("Range"), tuple(active.faults))
        self._record(seen)
        try:
            return await self._proxy(request, active, seen)
        finally:
            seen.done = True

    async def _proxy(self, request: web.Request, active: _Active, seen: Seen) -> web.StreamResponse:
        if active.stall and active.stall_at is None:
            await asyncio.sleep(active.stall)
        if active.cut_upload_after is not None:
            # Take part of the upload, then hang up: the client sees its PUT/PATCH cut short.
            got = 0
            while got < active.cut_upload_after:
                piece = await request.content.read(min(65536, active.cut_upload_after - got))
                if not piece:
                    break
                got += len(piece)
            seen.body_bytes = got
            await self._close(request, 0)
            return web.Response(status=500)
        if active.status is not None:
            headers = {}
            if active.retry_after is not None:
                ra = active.retry_after
                headers["Retry-After"] = str(int(ra)) if isinstance(ra, (int, float)) else ra
            seen.status = active.status
            return web.json_response(
                {"errors": [{"code": active.error_code, "message": f"fault proxy says {active.status}"}]},
                status=active.status,
                headers=headers,
            )
        quota = self.rate_limit.charge(request.method, request.path_qs) if self.rate_limit else None
        if quota is not None and not quota[0]:
            seen.status = 429
            return web.json_response(
                {"errors": [{"code": "TOOMANYREQUESTS", "message": TOO_MANY_REQUESTS_MESSAGE}]},
                status=429,
                headers=dict(quota[1]),
            )

        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST}
        name = self.tag_pages.matches(request.method, request.path_qs) if self.tag_pages else None
        if name is not None:
            return await self._tag_page(request, name, headers, seen)
        if active.ignore_range:
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() in _SKIP_RESPONSE:
                    continue
                if k.lower() == "location" and v.startswith(self.upstream):
                    v = self.url + v[len(self.upstream) :]
                if k.lower() == "www-authenticate" and active.rewrite_challenge is not None:
                    v = active.rewrite_challenge(v)
                resp.headers.add(k, v)
            for k, v in quota[1] if quota is not None else ():
                resp.headers[k] = v
            for k, v in active.headers.items():
                resp.headers[k] = v
            if active.body is not None:
                await up.read()
                resp.content_length = len(active.body)
                seen.status = up.status
                await resp.prepare(request)
                if request.method != "HEAD":
                    await resp.write(active.body)
                    seen.body_bytes = len(active.body)
                await resp.write_eof()
                return resp
            real = up.content_length
            declared = real
            if real is not None and active.length_delta:
                declared = max(0, real + active.length_delta)
            if declared is not None:
                resp.content_length = declared
            # A 206 body starts at Content-Range's first byte: flip_at is an offset in the blob.
            start = _range_start(up.headers.get("Content-Range")) if up.status == 206 else 0
            limit = declared
            if active.drop_after is not None:
                limit = active.drop_after if limit is None else min(limit, active.drop_after)
            # Drop only when the cut falls inside the body; a shorter body passes untouched.
            dropping = active.drop_after is not None and (declared is None or active.drop_after < declared)
            close_after = dropping or (bool(active.length_delta) and real is not None)

            seen.status = up.status
            try:
                await resp.prepare(request)
                if request.method == "HEAD":
                    await resp.write_eof()
                    return resp
                await self._pump(up, resp, active, start, limit, seen)
                if close_after:
                    await self._close(request, active.drop_linger)
                    return resp
                await resp.write_eof()
            except aiohttp.ClientPayloadError:
                # The registry's body broke off (or lied about its length): pass that on.
                await self._close(request, 0)
            except (ConnectionError, aiohttp.ClientConnectionError):
                # The client gave up (read timeout) or we closed on purpose: nothing more to say.
                pass
            return resp

    async def _tag_page(
        self, request: web.Request, name: str, headers: dict[str, str], seen: Seen
    ) -> web.StreamResponse:
        """One page of the registry's whole tag list (fetched without n or last)."""
        assert self._session is not None and self.tag_pages is not None
        async with self._session.get(f"{self.upstream}/v2/{name}/tags/list", headers=headers) as up:
            body = await up.read()
            if up.status != 200:
                seen.status = up.status
                return web.Response(status=up.status, body=body, content_type="application/json")
        tags = json.loads(body).get("tags") or []
        page, link = self.tag_pages.page(name, request.path_qs, tags, self.url)
        seen.status, seen.body_bytes = 200, len(page)
        return web.Response(
            status=200, body=page, content_type="application/json", headers={"Link": link} if link else {}
        )

    async def _pump(
        self,
        up: aiohttp.ClientResponse,
        resp: web.StreamResponse,
        active: _Active,
        start: int,
        limit: int | None,
        seen: Seen,
    ) -> None:
        """Stream the upstream body to the client, applying stall, flip and cut-off."""
        stalled = False

        async def send(piece: bytes) -> None:
            if active.flip_at is not None:
                at = active.flip_at - start - seen.body_bytes
                if 0 <= at < len(piece):
                    mutable = bytearray(piece)
                    mutable[at] ^= 0xFF
                    piece = bytes(mutable)
            await resp.write(piece)
            seen.body_bytes += len(piece)

        async for chunk in up.content.iter_chunked(STREAM_CHUNK):
            if limit is not None:
                chunk = chunk[: max(0, limit - seen.body_bytes)]
            if active.stall and not stalled and active.stall_at is not None:
                at = active.stall_at - seen.body_bytes
                if 0 <= at < len(chunk):
                    # Exactly stall_at bytes go out first, then the pause.
                    if at:
                        await send(chunk[:at])
                        chunk = chunk[at:]
                    _flush_headers(resp)
                    await asyncio.sleep(active.stall)
                    stalled = True
            if chunk:
                await send(chunk)
            if limit is not None and seen.body_bytes >= limit:
                return

    async def _close(self, request: web.Request, linger: float) -> None:
        """Close the connection once what was written has left, mimicking a dropped link."""
        transport = request.transport
        if transport is None:
            return
        for _ in range(200):
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        if linger:
            await asyncio.sleep(linger)
        transport.close()


def without_realm(challenge: str) -> str:
    """'Bearer realm="…",service="…",scope="…"' -> 'Bearer service="…",scope="…"'."""
    scheme, _, params = challenge.partition(" ")
    kept = [p for p in re.findall(r'\w+="[^"]*"|\w+=[^,]*', params) if not p.lower().startswith("realm=")]
    return f"{scheme} {','.join(kept)}"


def _flush_headers(resp: web.StreamResponse) -> None:
    # aiohttp holds the headers back to send them with the first body bytes; a stall
    # "after the headers" must really put them on the wire first.
    writer = resp._payload_writer
    send = getattr(writer, "send_headers", None)
    if send is not None:
        send()


def _range_start(value: str | None) -> int:
    if value and value.startswith("bytes "):
        try:
            return int(value[6:].split("-")[0])
        except ValueError:
            return 0
    return 0


__all__ = ["BLOB_GETS", "Fault", "FaultProxy", "RateLimit", "Seen", "TagPages", "without_realm"]
