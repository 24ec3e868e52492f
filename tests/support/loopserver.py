"""An aiohttp app served on 127.0.0.1 from a thread with its own event loop.

Synchronous tests, and the CLI subprocesses they start, can then both reach it; the
token server, the fault proxy and the redirect servers of the security tests share it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")


class LoopServer:
    def __init__(self, name: str, shutdown_timeout: float = 0.5) -> None:
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self, make_app: Callable[[], Awaitable[web.Application]]) -> int:
        """Serve the app make_app builds (on the server's loop); returns the port."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        self.port = self.call(self._serve(make_app))
        return self.port

    async def _serve(self, make_app: Callable[[], Awaitable[web.Application]]) -> int:
        runner = web.AppRunner(await make_app(), access_log=None, shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        return int(runner.addresses[0][1])

    def call(self, coro: Awaitable[T], timeout: float = 10) -> T:
        """Run a coroutine on the server's loop from any other thread."""
        assert self._loop is not None, f"{self.name} is not running"
        return asyncio.run_coroutine_threadsafe(_awaited(coro), self._loop).result(timeout=timeout)

    def stop(self, after: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop serving; `after` runs on the loop once the app is down (close client sessions there)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self.call(self._shutdown(after), timeout=15)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = self._runner = None

    async def _shutdown(self, after: Callable[[], Awaitable[None]] | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if after is not None:
            await after()
        # Handlers still asleep (a stalled response) outlive the shutdown timeout: end them
        # before the loop closes.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _awaited(value: Awaitable[T]) -> T:
    return await value
