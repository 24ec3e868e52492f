"""The one copy: from any Source to any Sink, each needed blob moved once, then a commit.

One task group owns everything; one capacity limiter bounds blob bodies in flight,
largest first so the last straggler is small. The event loop only reads the source;
each blob's hashing, decompression and writing run on its own stage threads
(pipeline.BlobStages) in batches whose size shares a fixed budget among the blobs in
flight. A target fed on the loop (an upload) gets each batch there as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from occystrap.concurrency import BUSY_POLL, Busy, Limits, first_error
from occystrap.errors import IntegrityError, TransferError
from occystrap.events import (
    BlobDone,
    BlobProgress,
    BlobQueued,
    BlobSkipped,
    BlobStarted,
    BlobVerifying,
    CommitStarted,
    ImageCommitted,
    Info,
    Reporter,
)
from occystrap.layout.writer import streamed
from occystrap.model import Layer, Node
from occystrap.pipeline import BlobStages, feed_from
from occystrap.reference import Reference
from occystrap.registry.retry import Retryable, RetryPolicy
from occystrap.sinks.base import BlobTarget, PlainWriter, Resumable, RetryBlob, Sink, StreamFed
from occystrap.sources.base import Source
from occystrap.streamcheck import BlobCheck

# Bytes per hand-off to a blob's stage threads, shared out among the blobs in flight.
# One big layer runs fastest with 512 KiB batches (1 MiB bought nothing); four blobs in
# flight with 256 KiB each keep the five-layer image's peak RSS near 57 MB rather than
# 64 MB, for about 5% more time on it.
BATCH_BUDGET = 1024 * 1024
MAX_BATCH = 512 * 1024
MIN_BATCH = 128 * 1024


def batch_size(in_flight: int) -> int:
    return max(MIN_BATCH, min(MAX_BATCH, BATCH_BUDGET // max(1, in_flight)))


@dataclass(frozen=True)
class Item:
    """One root to copy: where the source knows it, and the node as the destination names it."""

    source_ref: Reference
    node: Node


@dataclass(frozen=True)
class Preview:
    """What a copy would do (a dry run): the blobs it would move, and why the rest need not."""

    move: list[Layer]
    skipped: dict[str, tuple[Layer, str]]  # digest -> (blob, reason: "present", "mounted")

    @property
    def move_bytes(self) -> int:
        return sum(l.descriptor.size for l in self.move)


@dataclass(frozen=True)
class _Job:
    ref: Reference  # the source's name for a repository holding the blob
    layer: Layer
    images: tuple[str, ...]
    destinations: tuple[Reference, ...]


class Engine:
    def __init__(self, reporter: Reporter, limits: Limits | None = None, retries: int = 5) -> None:
        self.reporter = reporter
        self.limits = limits or Limits()
        self.retry = RetryPolicy(retries, reporter=reporter)

    @property
    def parallel(self) -> int:
        return self.limits.parallel

    async def copy(self, source: Source, sink: Sink, items: Sequence[Item]) -> None:
        nodes = [i.node for i in items]
        names = tuple(str(n.reference) for n in nodes)
        try:
            await sink.begin(nodes)
            jobs = _jobs(items)
            present = await self._present(sink, jobs)
            todo: list[_Job] = []
            for job in jobs:
                desc = job.layer.descriptor
                reason = present.get(desc.digest)
                if reason is not None:
                    for name in job.images:
                        self.reporter.emit(BlobSkipped(desc.digest, desc.size, name, reason))
                    continue
                todo.append(job)
                self.reporter.emit(BlobQueued(desc.digest, desc.size, job.images[0]))
                for name in job.images[1:]:
                    self.reporter.emit(BlobSkipped(desc.digest, desc.size, name, "shared"))
            todo.sort(key=lambda j: j.layer.descriptor.size, reverse=True)
            batch = batch_size(min(self.parallel, len(todo)))
            async with anyio.create_task_group() as tg:
                for job in todo:
                    tg.start_soon(self._move, source, sink, job, batch)
            self.reporter.emit(CommitStarted(names, sink.destination))
            await sink.commit(nodes)
        except BaseException as exc:
            failure = first_error(exc)
            with anyio.CancelScope(shield=True):
                await sink.abort(not isinstance(failure, IntegrityError))
            if isinstance(failure, (TransferError, KeyboardInterrupt, anyio.get_cancelled_exc_class())):
                self.reporter.emit(Info("what was transferred is kept: run the same command again to resume"))
            raise
        for name in names:
            self.reporter.emit(ImageCommitted(name, sink.destination))

    async def preview(self, sink: Sink, items: Sequence[Item]) -> Preview:
        """Only the looking half of copy: nothing is moved or written."""
        jobs = _jobs(items)
        present = await self._present(sink, jobs)
        move = [j.layer for j in jobs if j.layer.descriptor.digest not in present]
        skipped: dict[str, tuple[Layer, str]] = {}
        for job in jobs:
            reason = present.get(job.layer.descriptor.digest)
            if reason is not None:
                skipped[job.layer.descriptor.digest] = (job.layer, reason)
        return Preview(sorted(move, key=lambda l: -l.descriptor.size), skipped)

    async def _present(self, sink: Sink, jobs: list[_Job]) -> dict[str, str]:
        """Which blobs the destination holds already (checks run concurrently, bounded)."""
        found: dict[str, str] = {}

        async def one(job: _Job) -> None:
            async with self.limits.resolves:
                reason = await sink.present(job.layer, job.destinations)
            if reason is not None:
                found[job.layer.descriptor.digest] = reason

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(one, job)
        return found

    async def _move(self, source: Source, sink: Sink, job: _Job, batch: int) -> None:
        desc = job.layer.descriptor
        tries = 0
        while True:
            try:
                moved = await self._move_once(source, sink, job, batch)
            except RetryBlob as exc:
                # The destination lost the blob midway (an upload cut): again from the first byte.
                tries += 1
                await self.retry.wait(
                    tries, Retryable(str(exc)), f"{sink.destination}: {desc.digest}", desc.digest
                )
                continue
            break
        if moved:
            self.reporter.emit(BlobDone(desc.digest, desc.size))
        else:
            self.reporter.emit(BlobSkipped(desc.digest, desc.size, job.images[0], "present"))

    async def _move_once(self, source: Source, sink: Sink, job: _Job, batch: int) -> bool:
        """False when another process put the blob there meanwhile."""
        desc = job.layer.descriptor
        waited = False
        while True:
            # The slot is taken before the blob is opened, so blobs start in the order the run
            # sorted them (largest first): opening may hop to a thread, and whichever came back
            # first would otherwise take the next slot. A blob that another process is writing
            # is waited for outside the slot.
            async with self.limits.transfers:
                try:
                    opened = await sink.open_blob(job.layer, job.destinations)
                except Busy:
                    pass
                else:
                    if opened is None:
                        return False
                    await self._fill(source, sink, job, opened, batch)
                    return True
            if not waited:
                waited = True
                self.reporter.emit(Info(f"{desc.digest.short} is being fetched by another process: waiting"))
            await anyio.sleep(BUSY_POLL)

    async def _fill(self, source: Source, sink: Sink, job: _Job, target: BlobTarget, batch: int) -> None:
        desc = job.layer.descriptor
        try:
            offset = target.prefix_size() if isinstance(target, Resumable) else 0
            if offset > desc.size and isinstance(target, Resumable):
                await anyio.to_thread.run_sync(target.restart)
                offset = 0
            try:
                plain_size = await self._transfer(source, sink, job, target, offset, batch)
            except IntegrityError:
                if offset == 0 or not isinstance(target, Resumable):
                    raise
                # What an earlier run left did not check out: fetch this blob afresh.
                await anyio.to_thread.run_sync(target.restart)
                plain_size = await self._transfer(source, sink, job, target, 0, batch)
            await target.commit(plain_size)
        except BaseException as exc:
            # Bad data is thrown away; a prefix cut short by the network or Ctrl-C is kept to resume.
            with anyio.CancelScope(shield=True):
                await target.abort(not isinstance(exc, IntegrityError))
            raise

    async def _transfer(
        self, source: Source, sink: Sink, job: _Job, target: BlobTarget, offset: int, batch: int
    ) -> int:
        desc = job.layer.descriptor
        check = BlobCheck(
            desc.digest,
            desc.size,
            job.layer.diff_id if sink.check_diff_ids else None,
            target.write_raw,
            target.write_plain if isinstance(target, PlainWriter) else None,
            already_written=offset,
        )
        self.reporter.emit(BlobStarted(desc.digest, desc.size, offset))
        try:
            await self._pipeline(source, job, check, target, offset, batch)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        self.reporter.emit(BlobVerifying(desc.digest, desc.size))
        await anyio.to_thread.run_sync(check.finish)
        return check.plain_size

    async def _pipeline(
        self, source: Source, job: _Job, check: BlobCheck, target: BlobTarget, offset: int, batch: int
    ) -> None:
        stages = BlobStages(check, batch, self.limits.stages)
        async with anyio.create_task_group() as tg:
            tg.start_soon(stages.run)
            # A failed transfer must not cancel the stages: they first write what did arrive,
            # so that a later run resumes after it.
            failure: Exception | None = None
            try:
                await self._produce(source, job, stages, target, offset)
            except Exception as exc:
                failure = exc
            finally:
                stages.close()
        if failure is not None:
            raise failure

    async def _produce(
        self, source: Source, job: _Job, stages: BlobStages, target: BlobTarget, offset: int
    ) -> None:
        desc = job.layer.descriptor
        fed = target if isinstance(target, StreamFed) else None
        if offset and isinstance(target, Resumable):
            # The prefix on disk goes through the same hashers and decoder, so nothing is trusted.
            prefix = target.read_prefix()
            while (chunk := await anyio.to_thread.run_sync(next, prefix, None)) is not None:
                await stages.feed([chunk])

        def progress(done: int) -> None:
            self.reporter.emit(BlobProgress(desc.digest, done, desc.size))

        also = fed.feed if fed is not None else None
        await feed_from(source.blob(job.ref, desc, offset), stages, progress, also, offset)


def _jobs(items: Sequence[Item]) -> list[_Job]:
    """Every streamed blob once, with every image (and destination) that needs it."""
    # Names collected in dicts (ordered, O(1) membership): growing tuples made a base layer
    # shared by every tag cost O(tags²), 80,000 copies for 400 tags.
    first: dict[str, tuple[Reference, Layer]] = {}
    needs: dict[str, dict[str, Reference]] = {}
    for item in items:
        name = str(item.node.reference)
        for layer in streamed([item.node]):
            digest = layer.descriptor.digest
            first.setdefault(digest, (item.source_ref, layer))
            needs.setdefault(digest, {}).setdefault(name, item.node.reference)
    return [_Job(ref, layer, tuple(needs[d]), tuple(needs[d].values())) for d, (ref, layer) in first.items()]
