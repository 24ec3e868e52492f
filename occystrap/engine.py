"""The one place that starts tasks: resolve images, fetch each needed blob once, commit.

One task group owns everything; one capacity limiter bounds blob bodies in flight,
largest first so the last straggler is small. The event loop only reads the network;
each blob's hashing, decompression and writing run on its own stage threads
(pipeline.BlobStages) in batches whose size shares a fixed budget among the blobs in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass

import anyio

from occystrap.errors import IntegrityError, OccystrapError, TransferError
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
    Info,
    Reporter,
)
from occystrap.model import Image, Layer, Platform
from occystrap.pipeline import BlobStages
from occystrap.reference import Reference
from occystrap.registry import RegistryClient
from occystrap.sinks.base import BlobBusy, BlobTarget, Sink
from occystrap.tuning import DEFAULT_PARALLEL
from occystrap.verify import BlobCheck

# Bytes per hand-off to a blob's stage threads, shared out among the blobs in flight.
# One big layer runs fastest with 512 KiB batches (1 MiB bought nothing); four blobs in
# flight with 256 KiB each keep the five-layer image's peak RSS near 57 MB rather than
# 64 MB, for about 5% more time on it.
BATCH_BUDGET = 1024 * 1024
MAX_BATCH = 512 * 1024
MIN_BATCH = 128 * 1024

# BlobProgress about every MiB, as the JSON schema says: finer steps only cost the
# reporters time (a refresh draws at most ten times a second).
PROGRESS_STEP = 1024 * 1024


def batch_size(in_flight: int) -> int:
    return max(MIN_BATCH, min(MAX_BATCH, BATCH_BUDGET // max(1, in_flight)))


@dataclass(frozen=True)
class _Job:
    ref: Reference
    layer: Layer
    images: tuple[str, ...]


class Engine:
    def __init__(self, client: RegistryClient, reporter: Reporter, parallel: int = DEFAULT_PARALLEL) -> None:
        self.client = client
        self.reporter = reporter
        self.parallel = max(1, parallel)
        self.limiter = anyio.CapacityLimiter(self.parallel)
        # Each blob in flight runs up to three stage threads; their own limiter keeps them
        # from starving (or being starved by) the short calls that share anyio's default one.
        self.stage_limiter = anyio.CapacityLimiter(3 * self.parallel)

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

    async def fetch_images(self, images: list[Image], sink: Sink) -> None:
        try:
            await anyio.to_thread.run_sync(sink.begin, images)
            unique = {l.descriptor.digest: l for i in images for l in i.layers}
            # Reuse means re-hashing what is on disk: off the event loop.
            present = await anyio.to_thread.run_sync(
                lambda: {d for d, layer in unique.items() if sink.has_layer(layer)}
            )
            jobs: dict[str, _Job] = {}
            for image in images:
                name = str(image.reference)
                for layer in image.layers:
                    digest, size = layer.descriptor.digest, layer.descriptor.size
                    if digest in present:
                        self.reporter.emit(BlobSkipped(digest, size, name, "present"))
                    elif digest in jobs:
                        old = jobs[digest]
                        jobs[digest] = _Job(old.ref, old.layer, (*old.images, name))
                        self.reporter.emit(BlobSkipped(digest, size, name, "shared"))
                    else:
                        jobs[digest] = _Job(image.reference, layer, (name,))
                        self.reporter.emit(BlobQueued(digest, size, name))
            ordered = sorted(jobs.values(), key=lambda j: j.layer.descriptor.size, reverse=True)
            batch = batch_size(min(self.parallel, len(ordered)))
            async with anyio.create_task_group() as tg:
                for job in ordered:
                    tg.start_soon(self._fetch_layer, job, sink, batch)
            destination = str(sink.destination)
            self.reporter.emit(CommitStarted(tuple(str(i.reference) for i in images), destination))
            await anyio.to_thread.run_sync(sink.commit, images)
        except BaseException as exc:
            failure = _leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
            resumable = not isinstance(failure, IntegrityError)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(sink.abort, resumable)
            if isinstance(failure, (TransferError, KeyboardInterrupt, anyio.get_cancelled_exc_class())):
                self.reporter.emit(Info("what was downloaded is kept: run the same command again to resume"))
            raise
        for image in images:
            self.reporter.emit(ImageCommitted(str(image.reference), destination))

    async def _fetch_layer(self, job: _Job, sink: Sink, batch: int) -> None:
        desc = job.layer.descriptor
        opened = await self._open(job, sink)
        if opened is None:
            self.reporter.emit(BlobSkipped(desc.digest, desc.size, job.images[0], "present"))
            return
        target: BlobTarget = opened
        try:
            async with self.limiter:
                offset = target.prefix_size()
                if offset > desc.size:
                    await anyio.to_thread.run_sync(target.restart)
                    offset = 0
                try:
                    plain_size = await self._transfer(job, target, offset, batch)
                except IntegrityError:
                    if offset == 0:
                        raise
                    # What an earlier run left did not check out: fetch this blob afresh.
                    await anyio.to_thread.run_sync(target.restart)
                    plain_size = await self._transfer(job, target, 0, batch)
                await anyio.to_thread.run_sync(target.commit, plain_size)
        except BaseException as exc:
            # Bad data is thrown away; a prefix cut short by the network or Ctrl-C is kept to resume.
            keep = not isinstance(exc, IntegrityError)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(target.abort, keep)
            raise
        self.reporter.emit(BlobDone(desc.digest, desc.size))

    async def _open(self, job: _Job, sink: Sink) -> BlobTarget | None:
        """The layer's target, waiting (cancellably) while another process fetches the same blob."""
        waiting = False
        while True:
            try:
                return await anyio.to_thread.run_sync(sink.open_layer, job.layer)
            except BlobBusy:
                if not waiting:
                    waiting = True
                    digest = job.layer.descriptor.digest
                    self.reporter.emit(Info(f"{digest[7:19]} is being fetched by another process: waiting"))
                await anyio.sleep(0.2)

    async def _transfer(self, job: _Job, target: BlobTarget, offset: int, batch: int) -> int:
        desc = job.layer.descriptor
        check = BlobCheck(
            desc.digest,
            desc.size,
            job.layer.diff_id,
            target.write_raw if target.wants_raw else None,
            target.write_plain if target.wants_plain else None,
            already_written=offset,
        )
        self.reporter.emit(BlobStarted(desc.digest, desc.size, offset))
        try:
            await self._pipeline(job, check, target, offset, batch)
        except BaseExceptionGroup as group:
            raise _leaf(group) from None
        self.reporter.emit(BlobVerifying(desc.digest, desc.size))
        await anyio.to_thread.run_sync(check.finish)
        return check.plain_size

    async def _pipeline(
        self, job: _Job, check: BlobCheck, target: BlobTarget, offset: int, batch: int
    ) -> None:
        stages = BlobStages(check, batch, self.stage_limiter)
        async with anyio.create_task_group() as tg:
            tg.start_soon(stages.run)
            # A failed transfer must not cancel the stages: they first write what did arrive,
            # so that a later run resumes after it.
            failure: Exception | None = None
            try:
                await self._produce(job, stages, target, offset)
            except Exception as exc:
                failure = exc
            finally:
                stages.close()
        if failure is not None:
            raise failure

    async def _produce(self, job: _Job, stages: BlobStages, target: BlobTarget, offset: int) -> None:
        desc = job.layer.descriptor
        if offset:
            # The prefix on disk goes through the same hashers and decoder, so nothing is trusted.
            prefix = target.read_prefix()
            while (chunk := await anyio.to_thread.run_sync(next, prefix, None)) is not None:
                await stages.feed([chunk])
        pending: list[bytes] = []
        pending_size = 0
        done = reported = offset
        try:
            async with aclosing(self.client.blob_chunks(job.ref, desc, offset)) as chunks:
                async for chunk in chunks:
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= stages.batch:
                        done += pending_size
                        batch, pending, pending_size = pending, [], 0
                        await stages.feed(batch)
                        if done - reported >= PROGRESS_STEP:
                            reported = done
                            self.reporter.emit(BlobProgress(desc.digest, done, desc.size))
        except OccystrapError:
            if pending:
                await stages.feed(pending)
            raise
        if pending:
            done += pending_size
            await stages.feed(pending)
            self.reporter.emit(BlobProgress(desc.digest, done, desc.size))


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that broke a blob's pipeline, rather than the group around it."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _leaf(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group
