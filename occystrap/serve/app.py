"""The distribution API's pull side over indexed content: one aiohttp handler for every request.

No router: `names.route` reads the raw path, since a router would decode and match before
we could refuse what the spec's grammar does not allow. The order of checks is fixed:
credentials, then the method (everything but GET and HEAD is a write, refused whatever
the path), then the path, name and reference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from occystrap.digest import Digest
from occystrap.serve import names
from occystrap.serve.auth import Htpasswd
from occystrap.serve.index import Blob, Content
from occystrap.serve.names import RequestError, Route
from occystrap.serve.send import ClientGone, Deadline

JSON = "application/json"
COMMON_HEADERS = {"Docker-Distribution-Api-Version": "registry/2.0", "X-Content-Type-Options": "nosniff"}

Handler = Callable[[web.BaseRequest, Route, "Snapshot"], Awaitable[web.StreamResponse]]


def error_response(exc: RequestError) -> web.Response:
    """The spec's error document (aiohttp leaves the body out of a HEAD answer, keeping its length)."""
    body = json.dumps({"errors": [{"code": exc.code, "message": exc.message, "detail": None}]}).encode()
    headers = {**COMMON_HEADERS, **exc.headers}
    return web.Response(status=exc.status, body=body, headers=headers, content_type=JSON)


def _response(status: int = 200, headers: dict[str, str] | None = None) -> web.StreamResponse:
    return web.StreamResponse(status=status, headers={**COMMON_HEADERS, **(headers or {})})


class Snapshot:
    """One indexing of PATH, and the descriptors its blobs are read through. A tarball is
    opened once and shared (reads take explicit offsets), so a tarball replaced while
    serving is still read as it was indexed. A request keeps the snapshot it started with."""

    def __init__(self, content: Content) -> None:
        self.content = content
        self._shared: dict[str, int] = {}
        if content.source.is_file():
            self._shared[str(content.source)] = os.open(content.source, os.O_RDONLY | os.O_CLOEXEC)

    def open(self, blob: Blob) -> tuple[int, bool]:
        """The descriptor, and whether the caller must close it."""
        shared = self._shared.get(blob.file)
        if shared is not None:
            return shared, False
        return os.open(blob.file, os.O_RDONLY | os.O_CLOEXEC), True

    def close(self) -> None:
        for fd in self._shared.values():
            os.close(fd)
        self._shared.clear()


class RegistryApp:
    def __init__(self, content: Content, deadline: Deadline, auth: Htpasswd | None = None) -> None:
        self.snapshot = Snapshot(content)
        self.deadline = deadline
        self.auth = auth
        # Replaced snapshots: transfers that started on them may still be reading their tarball.
        self._retired: list[Snapshot] = []
        self._handlers: dict[str, Handler] = {
            "base": self._base,
            "catalog": self._catalog,
            "tags": self._tags,
            "manifest": self._manifest,
            "blob": self._blob,
        }

    def replace(self, content: Content) -> None:
        """Serve `content` from now on (a re-read of PATH)."""
        self._retired.append(self.snapshot)
        self.snapshot = Snapshot(content)

    def close(self) -> None:
        for snapshot in (*self._retired, self.snapshot):
            snapshot.close()
        self._retired.clear()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        snapshot = self.snapshot
        try:
            if self.auth is not None and not await self.auth.allows(request.headers.get("Authorization")):
                raise RequestError(
                    401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": self.auth.challenge}
                )
            route = names.route(request.raw_path) if request.method in ("GET", "HEAD") else None
            if request.method not in ("GET", "HEAD") or (route is not None and route.kind == "upload"):
                raise RequestError(
                    405, "UNSUPPORTED", f"{request.method[:32]} {route.kind if route else 'of anything'}"
                    " is not supported: this registry is read-only", {"Allow": "GET, HEAD"},
                )  # fmt: skip
            if route is None:
                raise RequestError(404, "UNSUPPORTED", "no such endpoint")
            return await self._handlers[route.kind](request, route, snapshot)
        except RequestError as exc:
            return error_response(exc)

    async def _base(self, request: web.BaseRequest, route: Route, snap: Snapshot) -> web.StreamResponse:
        return await self._send(request, _response(), b"{}", JSON)

    async def _catalog(self, request: web.BaseRequest, route: Route, snap: Snapshot) -> web.StreamResponse:
        return await self._listing(request, "/v2/_catalog", "repositories", snap.content.catalog(), {})

    async def _tags(self, request: web.BaseRequest, route: Route, snap: Snapshot) -> web.StreamResponse:
        repo = snap.content.repository(route.name)
        path = f"/v2/{route.name}/tags/list"
        return await self._listing(request, path, "tags", sorted(repo.tags), {"name": route.name})

    async def _listing(
        self, request: web.BaseRequest, path: str, key: str, items: list[str], extra: dict[str, Any]
    ) -> web.StreamResponse:
        n = request.query.get("n")
        chosen, more = names.page(items, n, request.query.get("last"))
        response = _response()
        if more and chosen:
            response.headers["Link"] = names.next_link(path, len(chosen), chosen[-1])
        body = json.dumps({**extra, key: chosen}).encode()
        return await self._send(request, response, body, JSON)

    async def _manifest(self, request: web.BaseRequest, route: Route, snap: Snapshot) -> web.StreamResponse:
        repo = snap.content.repository(route.name)
        wanted = names.check_reference(route.reference)
        digest = wanted if isinstance(wanted, Digest) else repo.tags.get(wanted)
        if digest is None or digest not in repo.manifests:
            raise RequestError(404, "MANIFEST_UNKNOWN", f"manifest {route.reference} is not in {route.name}")
        manifest = snap.content.manifests[digest]
        response = _response(headers={"Docker-Content-Digest": digest, "ETag": f'"{digest}"'})
        return await self._send(request, response, manifest.data, manifest.media_type)

    async def _blob(self, request: web.BaseRequest, route: Route, snap: Snapshot) -> web.StreamResponse:
        repo = snap.content.repository(route.name)
        digest = names.check_digest(route.reference)
        blob = snap.content.blobs.get(digest)
        if blob is None or digest not in repo.blobs:
            raise RequestError(404, "BLOB_UNKNOWN", f"blob {digest} is not in {route.name}")
        wanted = names.parse_range(request.headers.get("Range"), blob.size)
        first, last = wanted if wanted is not None else (0, blob.size - 1)
        count = last - first + 1
        response = _response(
            206 if wanted is not None else 200,
            headers={"Docker-Content-Digest": digest, "ETag": f'"{digest}"', "Accept-Ranges": "bytes"},
        )
        if wanted is not None:
            response.headers["Content-Range"] = f"bytes {first}-{last}/{blob.size}"
        if blob.data is not None:
            return await self._send(
                request, response, blob.data[first : last + 1], "application/octet-stream"
            )
        try:
            fd, owned = snap.open(blob)
        except OSError:  # removed since start-up (a directory being rewritten)
            raise RequestError(404, "BLOB_UNKNOWN", f"blob {digest} is no longer readable") from None
        try:
            response.content_type = "application/octet-stream"
            response.content_length = count
            await response.prepare(request)
            if request.method == "GET" and count:
                await self.deadline.region(request, response, blob, fd, first, count)
            await response.write_eof()
        except ClientGone:
            pass
        finally:
            if owned:
                os.close(fd)
        return response

    async def _send(
        self, request: web.BaseRequest, response: web.StreamResponse, body: bytes, content_type: str
    ) -> web.StreamResponse:
        response.content_type = content_type
        response.content_length = len(body)
        try:
            await response.prepare(request)
            if request.method == "GET":
                await self.deadline.write(request, response, body)
            await response.write_eof()
        except ClientGone:
            pass
        return response
