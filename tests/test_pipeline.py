"""The stage threads' hand-offs, the streamed tar header, and the cheap aiohttp import."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import threading

import anyio
import pytest

from occystrap.errors import IntegrityError
from occystrap.pipeline import BlobStages, Channel
from occystrap.sinks.streamed import STREAMED_HEADER
from occystrap.sinks.tarformat import header as _header
from occystrap.streamcheck import BlobCheck


def test_channel_hands_over_in_order_then_ends_on_close() -> None:
    ch: Channel[int] = Channel(depth=2)
    assert ch.try_put(1) and ch.try_put(2)
    assert not ch.try_put(3), "a full channel refuses without blocking"
    ch.close()
    assert [ch.get(), ch.get(), ch.get()] == [1, 2, None]


def test_abandoned_channel_never_blocks_its_writer() -> None:
    ch: Channel[int] = Channel(depth=1)
    ch.put(1)
    writer = threading.Thread(target=ch.put, args=(2,))
    writer.start()
    ch.abandon()  # the reader failed: the blocked put must return, and later ones too
    writer.join(timeout=10)
    assert not writer.is_alive()
    ch.put(3)
    assert ch.try_put(4)


def test_put_async_waits_for_room_then_delivers() -> None:
    ch: Channel[int] = Channel(depth=1)
    assert ch.try_put(1)
    taken: list[int | None] = []

    def reader() -> None:
        taken.append(ch.get())  # makes room: must wake the waiting put
        taken.append(ch.get())

    async def main() -> None:
        thread = threading.Thread(target=reader)
        with anyio.fail_after(30):  # a deadlock guard: a lost wake-up would hang
            put = anyio.Event()

            async def writer() -> None:
                await ch.put_async(2)
                put.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                await anyio.sleep(0.05)
                assert not put.is_set(), "a full channel makes the writer wait"
                thread.start()
                await put.wait()
        thread.join()

    anyio.run(main)
    assert taken == [1, 2]


def test_put_async_is_released_by_abandon_and_by_cancellation() -> None:
    async def main() -> None:
        ch: Channel[int] = Channel(depth=1)
        assert ch.try_put(1)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ch.put_async, 2)
                await anyio.sleep(0.05)
                await anyio.to_thread.run_sync(ch.abandon)  # the reader failed
        # A cancelled writer leaves nothing behind that a later reader would trip on.
        other: Channel[int] = Channel(depth=1)
        assert other.try_put(1)
        with anyio.move_on_after(0.05):
            await other.put_async(2)
        assert other.get() == 1
        assert other.try_put(3)

    anyio.run(main)


def test_heap_settings_stop_freed_buffers_being_faulted_in_again() -> None:
    """Six 256 KiB buffers made and freed forty times, as the pipeline does: glibc's
    defaults give the freed top back each round and fault it in again."""
    probe = """
import resource, sys
from occystrap.heap import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def rounds():
    for _ in range(40):
        bufs = [bytearray(256 * 1024) for _ in range(6)]
        del bufs
rounds()  # warm up: the first round always faults
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

    def faults_in(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True)
        return int(run.stdout)

    faults = {mode: faults_in(mode) for mode in ("default", "tuned")}
    assert faults["default"] > 40 * 64, faults  # at least one buffer's pages every round
    assert faults["tuned"] < 64, faults


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _push(stages: BlobStages, data: bytes, batch: int) -> None:
    try:
        for i in range(0, len(data), batch):
            await stages.feed([data[i : i + batch]])
    finally:
        stages.close()


def _run(check: BlobCheck, data: bytes, batch: int = 4096) -> None:
    async def main() -> None:
        stages = BlobStages(check, batch, anyio.CapacityLimiter(3))
        # A deadlock guard, not a speed check: a broken hand-off would hang for ever.
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stages.run)
                await _push(stages, data, batch)

    anyio.run(main)


def test_stages_check_and_write_every_byte() -> None:
    plain = bytes(range(256)) * 2000
    blob = gzip.compress(plain)
    raw_out: list[bytes] = []
    plain_out: list[bytes] = []
    check = BlobCheck(_sha(blob), len(blob), _sha(plain), raw_out.append, plain_out.extend)
    _run(check, blob, batch=1000)
    check.finish()
    assert b"".join(raw_out) == blob
    assert b"".join(plain_out) == plain


def _failure(check: BlobCheck, data: bytes, batch: int) -> IntegrityError:
    with pytest.raises(BaseExceptionGroup) as caught:
        _run(check, data, batch)
    failed = caught.value.subgroup(IntegrityError)
    assert failed is not None, caught.value
    while isinstance(failed, BaseExceptionGroup):
        failed = failed.exceptions[0]
    assert isinstance(failed, IntegrityError)
    return failed


def test_a_failing_stage_ends_the_blob_without_hanging_the_others() -> None:
    blob = gzip.compress(b"x" * 100_000)
    corrupt = blob[:20] + bytes(b ^ 0xFF for b in blob[20:60]) + blob[60:]
    check = BlobCheck(_sha(corrupt), len(corrupt), _sha(b"x" * 100_000), None, None)
    assert "corrupt" in str(_failure(check, corrupt, batch=64))


def test_an_oversized_blob_fails_in_the_raw_stage() -> None:
    data = b"y" * 10_000
    check = BlobCheck(_sha(data), 100, None, None, None)
    assert "larger than its declared" in str(_failure(check, data, batch=512))


@pytest.mark.parametrize("size", [0, 1, 8 * 1024**3 - 1, 8 * 1024**3, 1 << 40])
def test_streamed_layer_header_has_one_length_for_any_size(size: int) -> None:
    """The data of the streamed layer starts before its size is known: the header's length
    cannot depend on it, and members of 8 GiB and more must stay readable."""
    name = "blobs/sha256/" + "a" * 64
    header = _header(name, size, sized=True)
    assert len(header) == STREAMED_HEADER
    with tarfile.open(fileobj=io.BytesIO(header + b"\0" * 1024), mode="r:") as tf:
        member = tf.next()
        assert member is not None
        assert (member.name, member.size) == (name, size)


def test_aiohttp_import_skips_the_ca_store_and_leaves_ssl_as_it_was() -> None:
    probe = (
        "import ssl, occystrap.registry.transport, aiohttp.connector as c\n"
        "verified = c._SSL_CONTEXT_VERIFIED\n"
        # Fails closed: it verifies, and trusts nothing.
        "assert verified.verify_mode == ssl.CERT_REQUIRED, verified.verify_mode\n"
        "assert verified.cert_store_stats()['x509_ca'] == 0\n"
        "assert ssl.create_default_context().cert_store_stats()['x509_ca'] > 0\n"
        "assert 'set_default_verify_paths' not in vars(ssl.SSLContext)\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
