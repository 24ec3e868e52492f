"""Layers streamed from any Source (a registry, a tarball, a layout) as forensics reads them.

The forensics library is synchronous and runs in a worker thread; sources are async. The
bridge: when the worker opens a layer, a task on the event loop (started through a
BlockingPortal, so that any thread may ask, as `search`'s do at once) streams the blob into
the engine's own `BlobStages`: raw digest, inflate and diff_id each on a thread of its own,
exactly as a fetch checks a layer. The plain stage hands its output to a bounded `Channel`
that the worker reads as a file, so a few MiB per layer are in flight whatever its size, and
a slow reader slows the download instead of filling memory. The verdict (size, digest,
diff_id) comes with the end of the stream: the reader sees EOF only after it, or the error.

Ctrl-C cancels the command's task; `Streams.call` then stops the worker (its reads fail at
once) and the downloads (their tasks are cancelled), and waits for the worker to unwind, so
nothing writes after the command has cleaned up.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from typing import BinaryIO, TypeVar, cast

import anyio
from anyio.from_thread import BlockingPortal

from occystrap.concurrency import Limits, first_error
from occystrap.engine import batch_size
from occystrap.errors import NotFoundError, OccystrapError
from occystrap.events import BlobDone, BlobProgress, BlobQueued, BlobStarted, BlobVerifying, Event, Reporter
from occystrap.forensics.layers import LayerRef, OpenLayer, drain
from occystrap.model import Descriptor, Image
from occystrap.pipeline import BlobStages, Channel, feed_from
from occystrap.reference import Reference
from occystrap.sources.base import Source
from occystrap.streamcheck import BlobCheck
from occystrap.tarstream import ChunkReader

T = TypeVar("T")

# Batches of plain chunks waiting for the reader (a stage's batch inflated, about 1-2 MiB):
# with the stages' own batches, 3-5 MiB per layer in flight.
PLAIN_DEPTH = 2


class Interrupted(OccystrapError):
    """The command was cancelled (Ctrl-C) while a layer was being read."""

    exit_code = 130


class _Transfer:
    """One layer being streamed: the loop's task writes `plain`, the worker reads it."""

    def __init__(self, ref: LayerRef) -> None:
        self.ref = ref
        self.plain: Channel[list[bytes]] = Channel(PLAIN_DEPTH)
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.future: Future[None] | None = None


def _plain_chunks(t: _Transfer, streams: Streams) -> Callable[[], bytes | None]:
    """The worker's side of a transfer: blocking gets of the plain chunks, the end once verified."""

    held: list[bytes] = []

    def next_chunk() -> bytes | None:
        while not held:
            batch = t.plain.get()
            if batch is None:
                t.ended.wait()
                streams.raise_if_interrupted()
                if t.error is not None:
                    raise t.error
                return None
            held.extend(reversed(batch))
        return held.pop()

    return next_chunk


class Streams:
    """Opens layers of images from their sources for forensics code running in `call`."""

    def __init__(self, portal: BlockingPortal, reporter: Reporter, limits: Limits, readers: int = 1) -> None:
        self._portal = portal
        self._reporter = reporter
        self._limits = limits
        self._batch = batch_size(min(readers, limits.parallel))
        self._lock = threading.Lock()
        self._active: set[_Transfer] = set()
        self._interrupted = False
        self._queued: set[str] = set()

    # -- the loop's side ----------------------------------------------------------

    def queue(self, image: Image, layers: list[LayerRef] | None = None) -> None:
        """Announce the layers that will be read (each digest once), so the display knows
        the total and can give an ETA."""
        wanted = {r.digest for r in layers} if layers is not None else None
        for layer in image.layers:
            desc = layer.descriptor
            with self._lock:
                fresh = (wanted is None or desc.digest in wanted) and desc.digest not in self._queued
                if fresh:
                    self._queued.add(desc.digest)
            if fresh:
                self._reporter.emit(BlobQueued(desc.digest, desc.size, str(image.reference)))

    async def call(self, work: Callable[[], T]) -> T:
        """work() in a worker thread. Cancelled (Ctrl-C), it stops the worker's reads and the
        downloads, and returns only once the worker has unwound."""
        finished = threading.Event()
        started = False

        def run() -> T:
            nonlocal started
            with self._lock:
                if self._interrupted:
                    raise Interrupted("interrupted")
                started = True
            try:
                return work()
            finally:
                finished.set()

        try:
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            self.interrupt()
            with self._lock:
                wait = started
            if wait:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(finished.wait)
            raise

    def interrupt(self) -> None:
        """Fail every read in progress and to come, and cancel the downloads (on the loop)."""
        with self._lock:
            self._interrupted = True
            active = [(t, t.future) for t in self._active]
        for t, future in active:
            t.plain.abandon()
            t.plain.close()
            if future is not None:  # else its opener cancels it, seeing the flag
                future.cancel()

    async def _stream(self, t: _Transfer, source: Source, ref: Reference, desc: Descriptor) -> None:
        try:
            async with self._limits.transfers:  # held for the whole body, as a fetch does
                check = BlobCheck(desc.digest, desc.size, t.ref.diff_id, raw_out=None, plain_out=t.plain.put)
                self._reporter.emit(BlobStarted(desc.digest, desc.size))
                stages = BlobStages(check, self._batch, self._limits.stages)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stages.run)
                    try:
                        await self._feed(source, ref, desc, stages)
                    finally:
                        stages.close()
                self._reporter.emit(BlobVerifying(desc.digest, desc.size))
                await anyio.to_thread.run_sync(check.finish)
            self._reporter.emit(BlobDone(desc.digest, desc.size))
        except BaseException as exc:
            t.error = first_error(exc)
            raise
        finally:
            t.plain.close()
            t.ended.set()

    async def _feed(self, source: Source, ref: Reference, desc: Descriptor, stages: BlobStages) -> None:
        def progress(done: int) -> None:
            self._reporter.emit(BlobProgress(desc.digest, done, desc.size))

        await feed_from(source.blob(ref, desc), stages, progress)

    # -- the worker's side --------------------------------------------------------

    def raise_if_interrupted(self) -> None:
        if self._interrupted:
            raise Interrupted("interrupted")

    def emit(self, event: Event) -> None:
        """Report from a worker thread (reporters are called on the loop)."""
        self._portal.call(self._reporter.emit, event)

    def opener(self, source: Source, ref: Reference, image: Image) -> OpenLayer:
        """OpenLayer for `image`'s layers, as `source` knows the image by `ref`."""
        descriptors: dict[str, Descriptor] = {
            str(layer.descriptor.digest): layer.descriptor for layer in image.layers
        }

        @contextmanager
        def open_layer(layer: LayerRef) -> Iterator[BinaryIO]:
            desc = descriptors.get(layer.digest)
            if desc is None:
                raise NotFoundError(f"{ref} has no layer {layer.digest}")
            t = _Transfer(layer)
            with self._lock:
                if self._interrupted:
                    raise Interrupted("interrupted")
                self._active.add(t)
                announce = desc.digest not in self._queued  # not announced by queue()
                self._queued.add(desc.digest)
            future: Future[None] | None = None
            finished = False
            try:
                if announce:
                    self.emit(BlobQueued(desc.digest, desc.size, str(image.reference)))
                future = self._portal.start_task_soon(self._stream, t, source, ref, desc)
                with self._lock:
                    t.future = future
                    missed = self._interrupted  # interrupt() ran before there was a task to cancel
                if missed:
                    future.cancel()
                stream = cast(BinaryIO, ChunkReader(_plain_chunks(t, self)))
                yield stream
                drain(stream)  # EOF comes after the checks: this raises if they failed
                finished = True
            finally:
                if future is not None:
                    if not finished:
                        # The reader gave up (its own error, or another layer's): stop the download.
                        t.plain.abandon()
                        future.cancel()
                    t.ended.wait()
                with self._lock:
                    self._active.discard(t)

        return open_layer


@asynccontextmanager
async def layer_streams(reporter: Reporter, limits: Limits, readers: int = 1) -> AsyncIterator[Streams]:
    """Streams for one command; `readers`: how many layers the forensics code reads at once."""
    try:
        async with BlockingPortal() as portal:
            yield Streams(portal, reporter, limits, readers)
    except BaseExceptionGroup as group:
        # The portal's task group wraps what the body raised: callers want the error itself.
        raise first_error(group) from None
