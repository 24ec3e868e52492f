"""forensics.remote, in process: the bridge from an async Source to the blocking file the
forensics library reads. Concurrent opens from many threads, verification at the end of the
stream, a reader that gives up, bounded memory, and cancellation (Ctrl-C) of a stalled read."""

from __future__ import annotations

import hashlib
import random
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from occystrap.concurrency import Limits
from occystrap.errors import IntegrityError
from occystrap.events import BlobDone, BlobProgress, BlobQueued, BlobStarted, Event
from occystrap.forensics.files import file_table
from occystrap.forensics.layers import LayerRef, OpenLayer, drain, layer_refs
from occystrap.forensics.remote import layer_streams
from occystrap.model import Descriptor, Image
from occystrap.platform import Platform
from occystrap.reference import Reference
from occystrap.resolve import require_image, resolve
from occystrap.sources.layout import LayoutSource
from tests.support import images
from tests.support.forensics import rich_layers, store
from tests.support.images import BuiltImage, directory, file


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def _layout(tmp: Path, image: BuiltImage) -> Path:
    return images.write_oci_layout(tmp / "layout", image, "v1")


async def _open(path: Path) -> tuple[LayoutSource, Reference, Image]:
    source = LayoutSource(path)
    ref = source.reference_for("v1")
    found = await resolve(source, ref, Platform.parse("linux/amd64"))
    return source, ref, require_image(found.nodes[0])


def _with_streams(
    path: Path, work: Callable[[OpenLayer, list[LayerRef]], Any], readers: int = 4, reporter: Any = None
) -> Any:
    async def main() -> Any:
        source, ref, image = await _open(path)
        async with layer_streams(reporter or Recorder(), Limits(4), readers) as streams:
            streams.queue(image)
            return await streams.call(lambda: work(streams.opener(source, ref, image), layer_refs(image)))

    return anyio.run(main)


def _read(open_layer: OpenLayer, ref: LayerRef, step: int = 65536) -> bytes:
    out = bytearray()
    with open_layer(ref) as stream:
        while data := stream.read(step):
            out += data
    return bytes(out)


def test_many_threads_open_layers_at_once(tmp_path: Path) -> None:
    layers = [
        [directory("d"), file(f"d/f{i}", random.Random(i).randbytes(200_000 * (i + 1)))] for i in range(6)
    ]
    image = images.build_image(layers, fmt="oci")

    def work(open_layer: OpenLayer, refs: list[LayerRef]) -> dict[int, bytes]:
        got: dict[int, bytes] = {}
        jobs = [*refs, refs[2], refs[2]]  # the same layer read by three threads at once too
        errors: list[BaseException] = []

        def one(i: int, ref: LayerRef) -> None:
            try:
                data = _read(open_layer, ref)
                assert data == image.layers[ref.index].tar
                got[i] = data
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        return got

    recorder = Recorder()
    got = _with_streams(_layout(tmp_path, image), work, reporter=recorder)
    assert len(got) == 8
    kinds = [type(e) for e in recorder.events]
    assert kinds.count(BlobQueued) == 6 and kinds.count(BlobStarted) == 8 and kinds.count(BlobDone) == 8
    assert BlobProgress in kinds


def test_the_library_reads_through_it(tmp_path: Path) -> None:
    stored = store(tmp_path / "s", rich_layers())
    expected = file_table(stored.refs, stored.open_layer()).to_json()
    got = _with_streams(_layout(tmp_path, stored.image), lambda ol, refs: file_table(refs, ol).to_json())
    assert got == expected


def test_a_digest_mismatch_fails_at_the_end(tmp_path: Path) -> None:
    """Valid gzip of the right tar (so every byte reads and the diff_id matches), but not the
    blob the digest names: the error comes when the layer ends, never as silent success."""
    image = images.build_image(rich_layers(), fmt="oci")
    path = _layout(tmp_path, image)
    blob = path / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[4] ^= 1  # gzip header MTIME
    blob.write_bytes(bytes(data))
    seen: list[int] = []

    def work(open_layer: OpenLayer, refs: list[LayerRef]) -> None:
        with open_layer(refs[0]) as stream:
            while chunk := stream.read(16384):
                seen.append(len(chunk))

    with pytest.raises(IntegrityError, match="digest mismatch"):
        _with_streams(path, work)
    # Everything but the last read's worth came through before the verdict.
    assert sum(seen) > len(image.layers[0].tar) - 16384


def test_a_reader_that_gives_up_stops_the_download(tmp_path: Path) -> None:
    image = images.build_image([[file("big", random.Random(1).randbytes(8_000_000))]], fmt="oci")

    def work(open_layer: OpenLayer, refs: list[LayerRef]) -> bytes:
        with pytest.raises(RuntimeError), open_layer(refs[0]) as stream:
            stream.read(1000)
            raise RuntimeError("the reader's own failure")
        return _read(open_layer, refs[0])  # and the next open works

    assert _with_streams(_layout(tmp_path, image), work) == image.layers[0].tar


def test_a_slow_reader_holds_memory_down(tmp_path: Path) -> None:
    """A 48 MB layer read in small steps: the download waits for the reader, so only a few
    MiB are ever held, whatever the layer's size."""
    size = 48_000_000
    image = images.build_image([[file("big", random.Random(2).randbytes(size))]], fmt="oci")
    path = _layout(tmp_path, image)
    tracemalloc.start()
    try:

        def work(open_layer: OpenLayer, refs: list[LayerRef]) -> str:
            h = hashlib.sha256()
            with open_layer(refs[0]) as stream:
                while data := stream.read(16384):
                    h.update(data)
            return "sha256:" + h.hexdigest()

        assert _with_streams(path, work, readers=1) == image.layers[0].diff_id
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak


class StalledSource:
    """Serves the first 600 kB of every blob (more than one batch, so the reader gets bytes),
    then never another byte; records its closing."""

    def __init__(self, inner: LayoutSource) -> None:
        self.inner = inner
        self.closed = threading.Event()

    @property
    def name(self) -> str:
        return "stalled"

    async def manifest(self, ref: Reference, target: str | None = None) -> Any:
        return await self.inner.manifest(ref, target)

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner.blob(ref, desc, offset):
                yield chunk[:600_000]
                await anyio.sleep_forever()
        finally:
            self.closed.set()

    async def tags(self, ref: Reference) -> list[str]:
        return []

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_cancelling_stops_the_worker_and_the_download(tmp_path: Path) -> None:
    image = images.build_image([[file("f", random.Random(3).randbytes(2_000_000))]], fmt="oci")
    path = _layout(tmp_path, image)
    reading = threading.Event()
    unwound = threading.Event()

    async def main() -> None:
        inner, ref, img = await _open(path)
        source = StalledSource(inner)
        async with layer_streams(Recorder(), Limits(4)) as streams:
            open_layer = streams.opener(source, ref, img)  # type: ignore[arg-type]

            def work() -> None:
                try:
                    with open_layer(layer_refs(img)[0]) as stream:
                        stream.read(100)
                        reading.set()
                        drain(stream)  # blocks: no more bytes will come
                finally:
                    unwound.set()

            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(streams.call, work)
                    await anyio.to_thread.run_sync(reading.wait)
                    scope.cancel()
            assert scope.cancelled_caught
            assert unwound.is_set()  # call() returned only after the worker had unwound
        assert source.closed.is_set()  # the download was cancelled, not left hanging

    anyio.run(main)
