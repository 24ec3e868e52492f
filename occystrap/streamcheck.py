"""Streaming verification: digest and size of the blob, diff_id of the uncompressed layer.

Runs in worker threads on large chunks; hashlib, zlib/isal and zstd release the GIL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from occystrap.decode import Decoder, Plain, Write, decoder_for
from occystrap.errors import IntegrityError


class BlobCheck:
    """Feeds one blob's bytes through its hashers, decoder and writers."""

    def __init__(
        self,
        digest: str,
        size: int,
        diff_id: str | None,
        raw_out: Write | None,
        plain_out: Callable[[list[bytes]], None] | None,
        already_written: int = 0,
    ) -> None:
        """already_written: raw bytes the target holds from an earlier run; they are hashed, not written."""
        if not digest.startswith("sha256:"):
            raise IntegrityError(f"cannot check {digest}: only sha256 digests are supported")
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

    @property
    def seen(self) -> int:
        """Raw bytes fed so far."""
        return self._seen

    def raw_digest(self) -> str:
        return "sha256:" + self._blob_hash.hexdigest()

    def plain_digest(self) -> str:
        return "sha256:" + self._diff_hash.hexdigest()

    def end_of_stream(self) -> None:
        """The decoder's own end check (a truncated gzip stream), without the digest checks."""
        if self._want_plain:
            if self._decoder is None:
                self._decoder = Plain()
            try:
                self._decoder.finish()
            except IntegrityError as exc:
                raise IntegrityError(f"layer {self.digest}: {exc}") from None
            except Exception as exc:
                raise IntegrityError(f"layer {self.digest} is corrupt: {exc}") from None

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
        if self._plain_out is not None and chunks:
            # One hand-off per batch: per chunk, the reader thread was woken 1600 times for
            # the 400 MB benchmark layer (files took 1.09x a fetch; with batches 1.0x).
            self._plain_out(chunks)

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
            self.end_of_stream()
            diff = "sha256:" + self._diff_hash.hexdigest()
            if self.diff_id is not None and diff != self.diff_id:
                raise IntegrityError(
                    f"layer {self.digest} uncompresses to {diff}, but the config says {self.diff_id}"
                )
