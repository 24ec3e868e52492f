"""The one place that starts tasks: resolve images, fetch each needed blob once, commit.

One task group owns everything; one capacity limiter bounds blob bodies in flight,
largest first so the last straggler is small. CPU work (hashing, decompression,
writing) runs in worker threads on batches of at least BATCH bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from occystrap.events import (
    BlobDone,
    BlobProgress,
    BlobQueued,
    BlobSkipped,
    BlobStarted,
    BlobVerifying,
    CommitStarted,
    ImageCommitted,
    ImageResolved,
    Reporter,
)
from occystrap.model import Image, Layer, Platform
from occystrap.reference import Reference
from occystrap.registry import RegistryClient
from occystrap.sinks.base import BlobTarget, Sink
from occystrap.verify import BlobCheck

BATCH = 1024 * 1024
DEFAULT_PARALLEL = 4


@dataclass(frozen=True)
class _Job:
    ref: Reference
    layer: Layer
    images: tuple[str, ...]


class Engine:
    def __init__(self, client: RegistryClient, reporter: Reporter, parallel: int = DEFAULT_PARALLEL) -> None:
        self.client = client
        self.reporter = reporter
        self.limiter = anyio.CapacityLimiter(max(1, parallel))

    async def resolve_all(self, refs: Sequence[Reference], platform: Platform) -> list[Image]:
        images: list[Image | None] = [None] * len(refs)

        async def one(i: int, ref: Reference) -> None:
            image = await self.client.resolve(ref, platform)
            images[i] = image
            self.reporter.emit(
                ImageResolved(
                    str(ref),
                    image.manifest.digest,
                    str(image.platform) if image.platform else None,
                    len(image.layers),
                    sum(l.descriptor.size for l in image.layers),
                )
            )

        async with anyio.create_task_group() as tg:
            for i, ref in enumerate(refs):
                tg.start_soon(one, i, ref)
        return [i for i in images if i is not None]

    async def fetch(self, refs: Sequence[Reference], platform: Platform, sink: Sink) -> list[Image]:
        images = await self.resolve_all(refs, platform)
        await self.fetch_images(images, sink)
        return images

    async def fetch_images(self, images: list[Image], sink: Sink) -> None:
        jobs: dict[str, _Job] = {}
        for image in images:
            name = str(image.reference)
            for layer in image.layers:
                digest = layer.descriptor.digest
                if digest in jobs:
                    old = jobs[digest]
                    jobs[digest] = _Job(old.ref, old.layer, (*old.images, name))
                    self.reporter.emit(BlobSkipped(digest, layer.descriptor.size, name, "shared"))
                elif sink.has_layer(layer):
                    self.reporter.emit(BlobSkipped(digest, layer.descriptor.size, name, "present"))
                else:
                    jobs[digest] = _Job(image.reference, layer, (name,))
                    self.reporter.emit(BlobQueued(digest, layer.descriptor.size, name))
        ordered = sorted(jobs.values(), key=lambda j: j.layer.descriptor.size, reverse=True)
        try:
            async with anyio.create_task_group() as tg:
                for job in ordered:
                    tg.start_soon(self._fetch_layer, job, sink)
            destination = str(getattr(sink, "path", getattr(sink, "root", "")))
            self.reporter.emit(CommitStarted(tuple(str(i.reference) for i in images), destination))
            await anyio.to_thread.run_sync(sink.commit, images)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(sink.abort)
            raise
        for image in images:
            self.reporter.emit(ImageCommitted(str(image.reference), destination))

    async def _fetch_layer(self, job: _Job, sink: Sink) -> None:
        desc = job.layer.descriptor
        async with self.limiter:
            target: BlobTarget = sink.open_layer(job.layer)
            check = BlobCheck(
                desc.digest,
                desc.size,
                job.layer.diff_id,
                target.write_raw if target.wants_raw else None,
                target.write_plain if target.wants_plain else None,
            )
            self.reporter.emit(BlobStarted(desc.digest, desc.size))
            try:
                await self._pipeline(job, check)
                self.reporter.emit(BlobVerifying(desc.digest, desc.size))
                await anyio.to_thread.run_sync(check.finish)
                await anyio.to_thread.run_sync(target.commit, check.plain_size)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(target.abort)
                raise
        self.reporter.emit(BlobDone(desc.digest, desc.size))

    async def _pipeline(self, job: _Job, check: BlobCheck) -> None:
        """network → (raw hash + write) and (inflate → plain hash + write), each stage its own thread."""
        raw_send, raw_recv = anyio.create_memory_object_stream[bytes](1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stage, raw_recv, check.feed_raw, None)
            if check.wants_plain:
                z_send, z_recv = anyio.create_memory_object_stream[bytes](1)
                p_send, p_recv = anyio.create_memory_object_stream[list[bytes]](1)
                tg.start_soon(_stage, z_recv, check.inflate, p_send)
                tg.start_soon(_stage, p_recv, check.feed_plain, None)
                async with raw_send, z_send:
                    await self._produce(job, (raw_send, z_send))
            else:
                async with raw_send:
                    await self._produce(job, (raw_send,))

    async def _produce(self, job: _Job, sends: tuple[ObjectSendStream[bytes], ...]) -> None:
        desc = job.layer.descriptor
        buf = bytearray()
        done = 0
        async with aclosing(self.client.blob_chunks(job.ref, desc)) as chunks:
            async for chunk in chunks:
                buf += chunk
                if len(buf) >= BATCH:
                    done += len(buf)
                    batch, buf = bytes(buf), bytearray()
                    for send in sends:
                        await send.send(batch)
                    self.reporter.emit(BlobProgress(desc.digest, done, desc.size))
        if buf:
            done += len(buf)
            batch = bytes(buf)
            for send in sends:
                await send.send(batch)
            self.reporter.emit(BlobProgress(desc.digest, done, desc.size))


async def _stage(
    receive: ObjectReceiveStream[Any],
    work: Callable[[Any], Any],
    forward: ObjectSendStream[Any] | None,
) -> None:
    async with receive:
        if forward is None:
            async for item in receive:
                await anyio.to_thread.run_sync(work, item)
            return
        async with forward:
            async for item in receive:
                await forward.send(await anyio.to_thread.run_sync(work, item))
