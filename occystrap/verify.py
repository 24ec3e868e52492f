"""Streaming verification: digest and size of the blob, diff_id of the uncompressed layer.

Runs in worker threads on large chunks; hashlib, zlib/isal and zstd release the GIL.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import IO, Protocol, cast

import zstandard
from isal import igzip, igzip_lib

from occystrap.errors import IntegrityError

# Decompressed output is produced in bounded steps so a decompression bomb cannot fill memory.
OUT_STEP = 256 * 1024
ZSTD_SLICE = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

Write = Callable[[bytes], None]


class Decoder(Protocol):
    def feed(self, data: bytes, out: Write, limit: int | None = None) -> bool:
        """Decode data into out. With a limit, stop once about that much is out and return
        False: call again with b"" for the rest. True once all input is consumed."""
        ...

    def finish(self) -> None: ...


class _Plain:
    def feed(self, data: bytes, out: Write, limit: int | None = None) -> bool:
        if data:
            out(data)
        return True

    def finish(self) -> None:
        return None


class _Gzip:
    """Gzip, including multi-member streams (pigz and some registries write those)."""

    def __init__(self) -> None:
        self._d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
        self._member_started = False

    def feed(self, data: bytes, out: Write, limit: int | None = None) -> bool:
        produced = 0
        while True:
            if data:
                self._member_started = True
            chunk = self._d.decompress(data, OUT_STEP)
            data = b""
            if chunk:
                out(chunk)
                produced += len(chunk)
            if self._d.eof:
                data = self._d.unused_data
                self._d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
                self._member_started = False
                if not data:
                    return True
            elif self._d.needs_input:
                return True
            if limit is not None and produced >= limit and not data:
                return False  # the decompressor holds the rest of the input

    def finish(self) -> None:
        if self._member_started and not self._d.eof:
            raise IntegrityError("truncated gzip stream")


class _Zstd:
    def __init__(self) -> None:
        self._out: Write | None = None
        self._rest = b""
        self._produced = 0
        self._w = zstandard.ZstdDecompressor().stream_writer(
            cast(IO[bytes], self), write_size=OUT_STEP, closefd=False
        )

    def write(self, data: bytes) -> int:
        if self._out is not None:
            self._out(bytes(data))
        self._produced += len(data)
        return len(data)

    def feed(self, data: bytes, out: Write, limit: int | None = None) -> bool:
        self._out = out
        if limit is None:
            self._w.write(data)
            return True
        # zstd gives no output cap per call: feed small slices until enough has come out.
        self._rest = self._rest + data if self._rest else data
        self._produced = 0
        while self._rest and self._produced < limit:
            piece, self._rest = self._rest[:ZSTD_SLICE], self._rest[ZSTD_SLICE:]
            self._w.write(piece)
        return not self._rest

    def finish(self) -> None:
        self._w.flush()  # type: ignore[no-untyped-call]


def decoder_for(head: bytes) -> Decoder:
    """Magic bytes decide, not the media type: some registries mislabel layers."""
    if head.startswith(GZIP_MAGIC):
        return _Gzip()
    if head.startswith(ZSTD_MAGIC):
        return _Zstd()
    return _Plain()


class BlobCheck:
    """Feeds one blob's bytes through its hashers, decoder and writers."""

    def __init__(
        self,
        digest: str,
        size: int,
        diff_id: str | None,
        raw_out: Write | None,
        plain_out: Write | None,
        already_written: int = 0,
    ) -> None:
        """already_written: raw bytes the target holds from an earlier run; they are hashed, not written."""
        algo, _, self._hex = digest.partition(":")
        if algo != "sha256":
            raise IntegrityError(f"unsupported digest algorithm in {digest}")
        self.digest = digest
        self.size = size
        self.diff_id = diff_id
        self._raw_out = raw_out
        self._plain_out = plain_out
        self._blob_hash = hashlib.sha256()
        self._seen = 0
        self._already_written = already_written
        self._want_plain = diff_id is not None or plain_out is not None
        self._diff_hash = hashlib.sha256()
        self._decoder: Decoder | None = None
        self.plain_size = 0

    @property
    def wants_plain(self) -> bool:
        return self._want_plain

    # The three stages touch disjoint state, so the engine runs them in different
    # threads at once: raw hashing and writing, inflating, and plain hashing and writing.

    def feed_raw(self, data: bytes) -> None:
        self._seen += len(data)
        if self._seen > self.size:
            raise IntegrityError(f"blob {self.digest} is larger than its declared {self.size} bytes")
        self._blob_hash.update(data)
        if self._raw_out is not None:
            fresh = self._seen - self._already_written
            if fresh >= len(data):
                self._raw_out(data)
            elif fresh > 0:
                self._raw_out(data[-fresh:])

    def inflate(self, data: bytes, limit: int | None = None) -> tuple[list[bytes], bool]:
        """Plain output of data (b"": continue), at most about limit of it; and whether all
        input is consumed. Bounding each step keeps a highly compressed batch from
        flooding memory on its way to the plain stage."""
        out: list[bytes] = []
        if self._decoder is None:
            self._decoder = decoder_for(data[:4])
        try:
            done = self._decoder.feed(data, out.append, limit)
        except IntegrityError:
            raise
        except Exception as exc:  # zlib.error, ZstdError: corrupt compressed data
            raise IntegrityError(f"layer {self.digest} is corrupt: {exc}") from None
        return out, done

    def feed_plain(self, chunks: list[bytes]) -> None:
        for data in chunks:
            self._diff_hash.update(data)
            self.plain_size += len(data)
            if self._plain_out is not None:
                self._plain_out(data)

    def feed(self, data: bytes) -> None:
        """All three stages in the calling thread."""
        self.feed_raw(data)
        if self._want_plain:
            self.feed_plain(self.inflate(data)[0])

    def finish(self) -> None:
        if self._seen != self.size:
            raise IntegrityError(f"blob {self.digest} is {self._seen} bytes, expected {self.size}")
        got = "sha256:" + self._blob_hash.hexdigest()
        if got != self.digest:
            raise IntegrityError(f"blob digest mismatch: expected {self.digest}, got {got}")
        if self._want_plain:
            if self._decoder is None:
                self._decoder = _Plain()
            try:
                self._decoder.finish()
            except IntegrityError as exc:
                raise IntegrityError(f"layer {self.digest}: {exc}") from None
            except Exception as exc:
                raise IntegrityError(f"layer {self.digest} is corrupt: {exc}") from None
            diff = "sha256:" + self._diff_hash.hexdigest()
            if self.diff_id is not None and diff != self.diff_id:
                raise IntegrityError(
                    f"layer {self.digest} uncompresses to {diff}, but the config says {self.diff_id}"
                )


def open_plain(path: str | os.PathLike[str]) -> IO[bytes]:
    """A stored layer blob as a readable plain tar stream, whatever its compression."""
    with open(path, "rb") as probe:
        head = probe.read(4)
    if head.startswith(GZIP_MAGIC):
        return cast(IO[bytes], igzip.open(path, "rb"))  # type: ignore[no-untyped-call]
    fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if head.startswith(ZSTD_MAGIC):
        return cast(
            IO[bytes], zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True, closefd=True)
        )
    return fh


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """sha256 digest and size of a file, read in large chunks (hashlib releases the GIL)."""
    with open(path, "rb") as fh:
        h = hashlib.file_digest(fh, "sha256")
        return "sha256:" + h.hexdigest(), fh.tell()
