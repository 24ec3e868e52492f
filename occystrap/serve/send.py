"""Response bodies with bounded memory and a write deadline.

A blob goes from its file to the socket with sendfile(2) on plain connections (the
kernel copies; the process never holds the bytes) and with pread in a worker thread
plus a write under TLS, in chunks either way. Each chunk must be taken by the client
within the deadline, so a client that stops reading is cut off instead of holding a
connection, a descriptor and a slot forever.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from occystrap.serve.index import Blob

# sendfile chunk: large enough that the per-call cost vanishes, small enough that the
# deadline below means "a client slower than 4 MiB per deadline is cut off".
SENDFILE_CHUNK = 4 * 1024 * 1024
# Under TLS the bytes pass through the process. Each transfer holds about a chunk in
# flight plus the TLS transport's buffer; the chunks shrink as transfers multiply, so
# fifty at once stay within a few MiB while one alone gets large, cheap chunks.
COPY_BUDGET = 4 * 1024 * 1024
COPY_CHUNK = (64 * 1024, 256 * 1024)
TLS_BUFFER = 64 * 1024
T = TypeVar("T")
SENT = "occystrap.sent"  # request key: body bytes written, for the access log


class ClientGone(Exception):
    """The client went away or stopped reading; the connection has been dropped."""


@dataclass
class Deadline:
    seconds: float
    copying: int = 0  # transfers going through the process (TLS) right now

    async def write(self, request: web.BaseRequest, response: web.StreamResponse, data: bytes) -> None:
        step = COPY_CHUNK[0]
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            await self._guard(request, response.write(chunk))
            request[SENT] = request.get(SENT, 0) + len(chunk)

    async def region(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        blob: Blob,
        fd: int,
        first: int,
        count: int,
    ) -> None:
        """`count` bytes of `blob` from its byte `first`, read from `fd` (the file that holds it)."""
        transport = request.transport
        if transport is None:
            raise ClientGone
        offset = blob.offset + first
        if transport.get_extra_info("sslcontext") is None:
            try:
                return await self._sendfile(request, transport, fd, offset, count)
            except (NotImplementedError, asyncio.SendfileNotAvailableError):
                pass  # nothing was sent yet: copy instead
        # asyncio's TLS transport buffers up to 512 KiB of records by default, on top of the
        # socket's buffer: with fifty slow clients that alone would be most of the budget.
        transport.set_write_buffer_limits(high=TLS_BUFFER)
        self.copying += 1
        try:
            await self._copy(request, response, fd, offset, count)
        finally:
            self.copying -= 1

    async def _sendfile(
        self, request: web.BaseRequest, transport: asyncio.Transport, fd: int, offset: int, count: int
    ) -> None:
        loop = asyncio.get_running_loop()
        # A file object over the shared descriptor: sendfile takes explicit offsets, so
        # concurrent transfers from one tarball never depend on a file position.
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fobj:
            while count > 0:
                n = min(count, SENDFILE_CHUNK)
                sent = await self._guard(request, loop.sendfile(transport, fobj, offset, n, fallback=False))
                if sent != n:  # the file shrank under us: better no body than a short one
                    transport.abort()
                    raise ClientGone
                offset += n
                count -= n
                request[SENT] = request.get(SENT, 0) + n

    async def _copy(
        self, request: web.BaseRequest, response: web.StreamResponse, fd: int, offset: int, count: int
    ) -> None:
        while count > 0:
            step = max(COPY_CHUNK[0], min(COPY_CHUNK[1], COPY_BUDGET // max(1, self.copying)))
            n = min(count, step)
            data = await asyncio.to_thread(os.pread, fd, n, offset)
            if len(data) != n:
                if request.transport is not None:
                    request.transport.abort()
                raise ClientGone
            await self._guard(request, response.write(data))
            offset += n
            count -= n
            request[SENT] = request.get(SENT, 0) + n

    async def _guard(self, request: web.BaseRequest, step: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.seconds):
                return await step
        except (TimeoutError, ConnectionError, OSError) as exc:
            if request.transport is not None:
                request.transport.abort()
            raise ClientGone from exc
