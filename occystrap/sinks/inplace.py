"""The tarball laid out in full before the first byte arrives (every size is in the manifest):
headers and small files written, each layer written into its own region with pwrite as it
streams, in parallel. A progress file records how much of each layer is on disk, after
the data, so a crash leaves it at or behind the truth and a re-run resumes every layer."""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from occystrap import digest as digests
from occystrap.errors import IntegrityError, UsageError
from occystrap.model import Layer
from occystrap.sinks import tarformat
from occystrap.sinks.tarformat import Member, padded

CHUNK = 1024 * 1024
_SLOT = struct.Struct("<Q")


class InPlace:
    """The tar laid out in full, headers written; layers fill their regions as they arrive."""

    def __init__(self, partial: Path, progress: Path, members: list[Member]) -> None:
        offsets: dict[str, tuple[int, int]] = {}  # layer digest -> (data offset, size)
        position = 0
        headers: list[tuple[int, bytes, bytes | None]] = []
        for m in members:
            header = tarformat.header(m.name, m.size)
            headers.append((position, header, m.data))
            position += len(header)
            if m.layer is not None:
                offsets[m.layer.descriptor.digest] = (position, m.size)
            position += padded(m.size)
        total = position + 2 * 512
        self.slots = {digest: i for i, digest in enumerate(offsets)}
        self.offsets = offsets
        key = hashlib.sha256(b"".join(h for _, h, _ in headers) + str(total).encode()).digest()
        # Locked before anything is truncated: a second run on the same output must not
        # destroy the first one's work.
        self.journal = locked(progress)
        fresh = not _same_plan(progress, key, len(offsets)) or not _has_size(partial, total)
        self.fd = os.open(partial, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0), 0o644)
        if fresh:
            os.ftruncate(self.fd, total)
            os.ftruncate(self.journal, 0)
            os.ftruncate(self.journal, len(key) + _SLOT.size * len(offsets))
            for at, header, data in headers:
                os.pwrite(self.fd, header + (data or b""), at)
            os.pwrite(self.journal, key, 0)
        self._key_size = len(key)
        self._paths = (partial, progress)
        self._open = True

    def done(self, digest: str) -> int:
        raw = os.pread(self.journal, _SLOT.size, self._key_size + _SLOT.size * self.slots[digest])
        return int(_SLOT.unpack(raw)[0]) if len(raw) == _SLOT.size else 0

    def record(self, digest: str, done: int) -> None:
        os.pwrite(self.journal, _SLOT.pack(done), self._key_size + _SLOT.size * self.slots[digest])

    def read(self, digest: str, length: int) -> Iterator[bytes]:
        start, _ = self.offsets[digest]
        position = 0
        while position < length:
            chunk = os.pread(self.fd, min(CHUNK, length - position), start + position)
            if not chunk:
                raise IntegrityError(f"{digest} is shorter on disk than its progress record says")
            position += len(chunk)
            yield chunk

    def complete(self, layer: Layer) -> bool:
        digest, size = layer.descriptor.digest, layer.descriptor.size
        if self.done(digest) != size:
            return False
        if digests.of_chunks(self.read(digest, size))[0] == digest:
            return True
        self.record(digest, 0)
        return False

    def target(self, layer: Layer) -> LayerInPlace:
        return LayerInPlace(self, layer.descriptor.digest)

    def finish(self, path: Path) -> None:
        for digest, (_, size) in self.offsets.items():
            if self.done(digest) != size:
                raise IntegrityError(f"layer {digest} is incomplete in the tarball being written")
        self.close()
        partial, progress = self._paths
        os.replace(partial, path)
        progress.unlink(missing_ok=True)

    def close(self) -> None:
        if self._open:
            self._open = False
            os.close(self.fd)
            os.close(self.journal)


class LayerInPlace:
    """One layer's region of the tarball being written; its progress survives the process."""

    def __init__(self, space: InPlace, digest: str) -> None:
        self.space = space
        self.digest = digest
        self.start, self.size = space.offsets[digest]
        self.position = min(space.done(digest), self.size)

    def prefix_size(self) -> int:
        return self.position

    def read_prefix(self) -> Iterator[bytes]:
        return self.space.read(self.digest, self.position)

    def restart(self) -> None:
        self.position = 0
        self.space.record(self.digest, 0)

    def write_raw(self, data: bytes) -> None:
        if self.position + len(data) > self.size:
            raise IntegrityError(f"blob {self.digest} is larger than its declared {self.size} bytes")
        os.pwrite(self.space.fd, data, self.start + self.position)
        self.position += len(data)
        # After the data: a crash leaves the record at or behind what is really on disk.
        self.space.record(self.digest, self.position)

    async def commit(self, plain_size: int) -> None:
        return None

    async def abort(self, keep: bool) -> None:
        if not keep:
            self.space.record(self.digest, 0)


def locked(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        target = (
            path.name.removeprefix(".").removesuffix(".occystrap-progress").removesuffix(".occystrap-lock")
        )
        raise UsageError(f"another occystrap run is writing {path.with_name(target)}") from None
    return fd


def _same_plan(progress: Path, key: bytes, slots: int) -> bool:
    try:
        with open(progress, "rb") as fh:
            return fh.read(len(key)) == key and os.fstat(fh.fileno()).st_size == len(key) + _SLOT.size * slots
    except FileNotFoundError:
        return False


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False
