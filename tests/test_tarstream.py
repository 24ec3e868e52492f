"""tarstream: tarfile reading a layer through seeks over a stream of chunks."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import BinaryIO, cast

import pytest

from occystrap.forensics.members import listing
from occystrap.tarstream import ChunkReader
from tests.support.images import directory, file, hardlink, make_tar, symlink

ENTRIES = [
    directory("d"),
    file("d/exact", b"x" * 1024),  # data ends on a block boundary: tarfile seeks back one byte
    file("d/odd", b"y" * 777),
    hardlink("d/link", "d/exact"),
    symlink("d/sym", "odd"),
    file("d/empty", b""),
    file("d/long-" + "n" * 150, b"a name only a pax header holds\n"),
]


def _chunks(data: bytes, size: int) -> Callable[[], bytes | None]:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    pieces.insert(1, b"")  # an empty chunk (a decoder step with no output) is skipped
    it = iter(pieces)
    return lambda: next(it, None)


@pytest.mark.parametrize("size", [1, 511, 512, 4096, 1 << 20])
def test_members_and_digests_match_a_seekable_file(size: int) -> None:
    tar = make_tar(ENTRIES)
    expected = listing(io.BytesIO(tar), content_digests=True)
    reader = ChunkReader(_chunks(tar, size))
    assert listing(cast(BinaryIO, reader), content_digests=True) == expected
    assert reader.tell() == len(tar)  # read to its end, so the layer's checks see every byte
    by_path = {m.path: m for m in expected}
    assert by_path["d/odd"].sha256 == "sha256:" + hashlib.sha256(b"y" * 777).hexdigest()
    assert "d/long-" + "n" * 150 in by_path


def test_seeks_back_only_into_the_chunks_it_holds() -> None:
    reader = ChunkReader(_chunks(bytes(range(256)) * 4, 100))
    assert reader.read(250) == (bytes(range(256)) * 4)[:250]
    reader.seek(150)  # the previous chunk
    assert reader.read(2) == bytes([150, 151])
    reader.seek(700)  # forward: chunks between are dropped unread
    assert reader.read(3) == bytes([700 % 256, 701 % 256, 702 % 256])
    with pytest.raises(io.UnsupportedOperation):
        reader.seek(100)
    reader.seek(5000)
    assert reader.read(1) == b""
