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
from occystrap.sinks.tarball import STREAMED_HEADER, _header
from occystrap.verify import BlobCheck


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
    check = BlobCheck(_sha(blob), len(blob), _sha(plain), raw_out.append, plain_out.append)
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
        "import ssl, occystrap.registry, aiohttp.connector as c\n"
        "verified = c._SSL_CONTEXT_VERIFIED\n"
        # Fails closed: it verifies, and trusts nothing.
        "assert verified.verify_mode == ssl.CERT_REQUIRED, verified.verify_mode\n"
        "assert verified.cert_store_stats()['x509_ca'] == 0\n"
        "assert ssl.create_default_context().cert_store_stats()['x509_ca'] > 0\n"
        "assert 'set_default_verify_paths' not in vars(ssl.SSLContext)\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
