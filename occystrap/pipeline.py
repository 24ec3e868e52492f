"""One blob's bytes through its checks, on threads that hand work straight to each other.

The event loop only reads the network: it puts each batch into the first channels and
goes back to the socket. Raw hashing and writing, inflating, and plain hashing and
writing each run on a thread of their own and pass results directly to the next
through a bounded channel, so a batch costs no event-loop round trip between stages.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Generic, TypeVar

import anyio

from occystrap.errors import OccystrapError
from occystrap.streamcheck import BlobCheck

T = TypeVar("T")

# Batches waiting in each channel. One keeps a stage fed (the next batch is ready
# when it finishes one); two bought no measurable speed and cost memory per blob.
DEPTH = 1


class Channel(Generic[T]):
    """A bounded hand-off between threads. The writer closes it when done; the reader
    abandons it when it stops early, which turns later puts into no-ops rather than
    leaving the writer blocked for ever."""

    def __init__(self, depth: int = DEPTH) -> None:
        self._items: deque[T] = deque()
        self._depth = depth
        self._cond = threading.Condition()
        self._closed = False
        self._abandoned = False
        self._room: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def try_put(self, item: T) -> bool:
        """Without blocking: False if full."""
        with self._cond:
            if self._abandoned:
                return True
            if len(self._items) >= self._depth:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    async def put_async(self, item: T) -> None:
        """From the event loop: waits for room as a future the reader resolves, so
        back-pressure costs no worker thread and no round trip through one."""
        while not self.try_put(item):
            loop = asyncio.get_running_loop()
            room: asyncio.Future[None] = loop.create_future()
            with self._cond:
                if len(self._items) < self._depth or self._abandoned:
                    continue  # room was made since try_put looked
                self._room = (loop, room)
            try:
                await room
            finally:
                with self._cond:
                    self._room = None  # also when cancelled: the reader must not wake a gone writer

    def put(self, item: T) -> None:
        with self._cond:
            while len(self._items) >= self._depth and not self._abandoned:
                self._cond.wait()
            if not self._abandoned:
                self._items.append(item)
                self._cond.notify_all()

    def get(self) -> T | None:
        """The next item, or None once the writer has closed and everything is taken."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            self._wake_writer()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._items.clear()
            self._cond.notify_all()
            self._wake_writer()

    def _wake_writer(self) -> None:
        if self._room is not None:
            loop, room = self._room
            self._room = None
            loop.call_soon_threadsafe(_resolve, room)


def _resolve(room: asyncio.Future[None]) -> None:
    if not room.done():  # a cancelled writer has gone
        room.set_result(None)


def _consume(
    inbox: Channel[T], work: Callable[[T], Iterable[list[bytes]]], outbox: Channel[list[bytes]] | None
) -> None:
    try:
        while (item := inbox.get()) is not None:
            for result in work(item):
                if outbox is not None:
                    outbox.put(result)
    finally:
        inbox.abandon()
        if outbox is not None:
            outbox.close()


class BlobStages:
    """The threads of one blob's pipeline: started by run(), fed by feed(), ended by close().

    A failing stage abandons its input and closes its output, so the others finish
    and the failure surfaces from run(). On close (also after a network error or
    Ctrl-C) every stage first processes what was already handed to it: a later run
    then resumes after the bytes that really reached the disk.
    """

    def __init__(self, check: BlobCheck, batch: int, limiter: anyio.CapacityLimiter) -> None:
        self._check = check
        self.batch = batch
        self._limiter = limiter
        self._raw: Channel[list[bytes]] = Channel()
        self._compressed: Channel[list[bytes]] | None = Channel() if check.wants_plain else None
        self._plain: Channel[list[bytes]] = Channel()

    async def run(self) -> None:
        """Runs the stage threads until close() and the data before it are through."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._thread, _consume, self._raw, self._raw_work, None)
            if self._compressed is not None:
                tg.start_soon(self._thread, _consume, self._compressed, self._inflate_work, self._plain)
                tg.start_soon(self._thread, _consume, self._plain, self._plain_work, None)

    async def _thread(self, fn: Callable[..., None], *args: object) -> None:
        await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def feed(self, batch: list[bytes]) -> None:
        """batch: chunks as the network delivered them; never joined, so never copied."""
        for channel in (self._raw, self._compressed):
            if channel is not None:
                await channel.put_async(batch)

    def close(self) -> None:
        self._raw.close()
        if self._compressed is not None:
            self._compressed.close()

    def _raw_work(self, batch: list[bytes]) -> Iterable[list[bytes]]:
        for data in batch:
            self._check.feed_raw(data)
        return ()

    def _inflate_work(self, batch: list[bytes]) -> Iterable[list[bytes]]:
        # Output goes on in steps of about one batch: a highly compressed batch never
        # sits whole in memory on its way to the plain stage.
        out: list[bytes] = []
        size = 0
        for data in batch:
            done = False
            while not done:
                chunks, done = self._check.inflate(data, self.batch - size)
                data = b""
                out.extend(chunks)
                size += sum(len(c) for c in chunks)
                if size >= self.batch:
                    yield out
                    out, size = [], 0
        if out:
            yield out

    def _plain_work(self, chunks: list[bytes]) -> Iterable[list[bytes]]:
        self._check.feed_plain(chunks)
        return ()


# Progress about every MiB, as the JSON schema says: finer steps only cost the reporters
# time (a refresh draws at most ten times a second).
PROGRESS_STEP = 1024 * 1024


async def feed_from(
    chunks: AsyncIterator[bytes],
    stages: BlobStages,
    progress: Callable[[int], None],
    also: Callable[[list[bytes]], Awaitable[None]] | None = None,
    done: int = 0,
) -> None:
    """Every chunk of a blob's stream into its stages in batches of about stages.batch (chunks
    as the network delivered them, never joined), and into `also` (an upload); progress(bytes
    so far) about every MiB and at the end. When the stream fails, what did arrive still goes
    to the stages, so a later run resumes after the bytes that reached the disk."""
    pending: list[bytes] = []
    pending_size = 0
    reported = done
    try:
        async with aclosing(chunks) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= stages.batch:
                    done += pending_size
                    ready, pending, pending_size = pending, [], 0
                    await stages.feed(ready)
                    if also is not None:
                        await also(ready)
                    if done - reported >= PROGRESS_STEP:
                        reported = done
                        progress(done)
    except OccystrapError:
        if pending:
            await stages.feed(pending)
        raise
    if pending:
        done += pending_size
        await stages.feed(pending)
        if also is not None:
            await also(pending)
    if done != reported or done == 0:
        progress(done)
