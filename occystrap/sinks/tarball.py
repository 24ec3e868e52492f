"""A single tarball in Docker 25's `docker save` layout (OCI layout + manifest.json).

With layers kept as served (the default) every member's size is known before the
first byte arrives, so the tar is laid out up front and each layer is written in
place, in parallel, with pwrite: no staging copy. A small progress file records how
much of each layer is on disk, so a re-run after a crash resumes every layer.
Uncompressed layers have sizes known only at the end. The first one to start (the
largest) is inflated straight into the tarball as its first member, its header filled
in last; the others are staged, then copied in after it by the kernel.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import struct
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio

from occystrap.errors import IntegrityError, UnsupportedMediaTypeError, UsageError
from occystrap.layout import writer
from occystrap.model import Artifact, Descriptor, Image, Layer, Node, walk
from occystrap.platform import Platform
from occystrap.reference import Reference
from occystrap.sinks.base import RawAndPlainTarget, RawBlobTarget, TempFile, temp_name, verified_or_removed
from occystrap.streamcheck import stream_digest

BLOCK = 512
CHUNK = 1024 * 1024
_SLOT = struct.Struct("<Q")


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    data: bytes | None = None  # small files; None for a layer
    layer: Layer | None = None


def plan(
    nodes: Sequence[Node], primary: Platform | None = None, rewrite: writer.Rewrite = writer.as_served
) -> list[Member]:
    """Every member in order: streamed blobs (each once), then configs, manifests and the index files."""
    members: list[Member] = []
    seen: set[str] = set()
    for root in nodes:
        for node in walk(root):
            pairs: Iterable[tuple[Layer, Descriptor]]
            if isinstance(node, Image):
                pairs = zip(node.layers, rewrite(node).layers, strict=True)
            elif isinstance(node, Artifact):
                pairs = ((Layer(d, None), d) for d in node.blobs)
            else:
                continue
            for layer, desc in pairs:
                name = writer.blob_path(desc.digest)
                if name not in seen:
                    seen.add(name)
                    members.append(Member(name, desc.size, layer=layer))
    members.extend(
        Member(name, len(data), data=data)
        for name, data in writer.image_files(nodes, primary, rewrite)
        if name not in seen
    )
    return members


class TarballSink:
    check_diff_ids = True

    def __init__(
        self, path: Path, uncompressed_layers: bool = False, platform: Platform | None = None
    ) -> None:
        self.path = path
        self.uncompressed = uncompressed_layers
        self.platform = platform
        self.staging = path.with_name(f".{path.name}.occystrap-staging")
        self.partial = path.with_name(f".{path.name}.occystrap-partial")
        self.progress = path.with_name(f".{path.name}.occystrap-progress")
        self._direct: _InPlace | None = None
        self._streamed: _StreamedLayer | None = None
        self._staging_lock: int | None = None

    @property
    def destination(self) -> str:
        return str(self.path)

    async def begin(self, nodes: list[Node]) -> None:
        await anyio.to_thread.run_sync(self._begin, nodes)

    def _begin(self, nodes: list[Node]) -> None:
        if self.uncompressed:
            if any(not isinstance(n, Image) for root in nodes for n in walk(root)):
                raise UnsupportedMediaTypeError(
                    "--uncompressed-layers needs runnable images, not artifacts or indexes"
                )
            self.staging.mkdir(parents=True, exist_ok=True)
            self._staging_lock = _locked(self.staging / ".occystrap-lock")
            # Inside the locked staging directory, under a fixed name: a run killed with -9
            # leaves it where the next run finds (and discards) it, not as litter.
            streamed = self.staging / "streamed.tar"
            streamed.unlink(missing_ok=True)
            self._streamed = _StreamedLayer(streamed)
        else:
            self._direct = _InPlace(self.partial, self.progress, plan(nodes, self.platform))

    def _staged(self, layer: Layer) -> Path:
        assert layer.diff_id is not None
        return self.staging / layer.diff_id.replace(":", "-")

    def has_layer(self, layer: Layer) -> bool:
        """A layer completed by an interrupted run, re-hashed before it is reused."""
        if self._direct is not None:
            return self._direct.complete(layer)
        assert layer.diff_id is not None
        return verified_or_removed(self._staged(layer), layer.diff_id)

    async def present(self, layer: Layer, refs: Sequence[Reference]) -> str | None:
        return "present" if await anyio.to_thread.run_sync(self.has_layer, layer) else None

    async def open_blob(self, layer: Layer, refs: Sequence[Reference]) -> RawBlobTarget | _LayerInPlace:
        return await anyio.to_thread.run_sync(self._open, layer)

    def _open(self, layer: Layer) -> RawBlobTarget | _LayerInPlace:
        if self._direct is not None:
            return self._direct.target(layer)
        raw = self.staging / layer.descriptor.digest.replace(":", "-")
        streamed = self._streamed
        if streamed is not None and streamed.claim(layer):
            return RawAndPlainTarget(raw.with_suffix(".raw"), plain=streamed)
        return RawAndPlainTarget(raw.with_suffix(".raw"), plain=TempFile(self._staged(layer)))

    async def commit(self, nodes: list[Node]) -> None:
        await anyio.to_thread.run_sync(self._commit, nodes)

    def _commit(self, nodes: list[Node]) -> None:
        if self._direct is not None:
            self._direct.finish(self.path)
            return
        head = self._streamed.done() if self._streamed is not None else None
        images = [i for root in nodes for i in walk(root) if isinstance(i, Image)]
        sizes: dict[str, int] = {
            l.diff_id: self._plain_size(l, head) for i in images for l in i.layers if l.diff_id
        }

        def rewrite(image: Image) -> writer.StoredImage:
            return writer.with_uncompressed_layers(image, sizes)

        write_tarball(self.path, plan(nodes, self.platform, rewrite), self._staged, head)
        shutil.rmtree(self.staging, ignore_errors=True)
        self._unlock_staging()

    def _plain_size(self, layer: Layer, head: Streamed | None) -> int:
        if head is not None and layer.diff_id == head.diff_id:
            return head.size
        return self._staged(layer).stat().st_size

    def _unlock_staging(self) -> None:
        if self._staging_lock is not None:
            os.close(self._staging_lock)
            self._staging_lock = None

    async def abort(self, keep: bool) -> None:
        await anyio.to_thread.run_sync(self._abort, keep)

    def _abort(self, keep: bool) -> None:
        # After a network failure or Ctrl-C, what arrived stays for a re-run to resume.
        # Bad data leaves nothing behind.
        if self._direct is not None:
            self._direct.close()
            if not keep:
                self.partial.unlink(missing_ok=True)
                self.progress.unlink(missing_ok=True)
        else:
            if self._streamed is not None:
                # A layer that streamed to its end is kept as staged, for a re-run to
                # reuse (after re-hashing it); one cut short is rebuilt from its raw prefix.
                done = self._streamed.done()
                if keep and done is not None:
                    self._streamed.save_as(self.staging / done.diff_id.replace(":", "-"))
                self._streamed.abort()
            leftovers = (
                [p for p in self.staging.iterdir() if p.name != ".occystrap-lock"]
                if self.staging.exists()
                else []
            )
            if not keep or not leftovers:
                shutil.rmtree(self.staging, ignore_errors=True)
            self._unlock_staging()


class _InPlace:
    """The tar laid out in full, headers written; layers fill their regions as they arrive."""

    def __init__(self, partial: Path, progress: Path, members: list[Member]) -> None:
        offsets: dict[str, tuple[int, int]] = {}  # layer digest -> (data offset, size)
        position = 0
        headers: list[tuple[int, bytes, bytes | None]] = []
        for m in members:
            header = _header(m.name, m.size)
            headers.append((position, header, m.data))
            position += len(header)
            if m.layer is not None:
                offsets[m.layer.descriptor.digest] = (position, m.size)
            position += _padded(m.size)
        total = position + 2 * BLOCK
        self.slots = {digest: i for i, digest in enumerate(offsets)}
        self.offsets = offsets
        key = hashlib.sha256(b"".join(h for _, h, _ in headers) + str(total).encode()).digest()
        # Locked before anything is truncated: a second run on the same output must not
        # destroy the first one's work.
        self.journal = _locked(progress)
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
        if stream_digest(self.read(digest, size))[0] == digest:
            return True
        self.record(digest, 0)
        return False

    def target(self, layer: Layer) -> _LayerInPlace:
        return _LayerInPlace(self, layer.descriptor.digest)

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


class _LayerInPlace:
    """One layer's region of the tarball being written; its progress survives the process."""

    def __init__(self, space: _InPlace, digest: str) -> None:
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


def _locked(path: Path) -> int:
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


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


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


def write_tarball(
    path: Path,
    members: list[Member],
    source: Callable[[Layer], Path],
    head: Streamed | None = None,
) -> None:
    """The members as one tar, written in order under a temp name, renamed into place when complete.

    head: a file that already holds the first member (a layer streamed into it); the rest follows.
    """
    tmp = head.path if head is not None else temp_name(path)
    try:
        with open(tmp, "r+b" if head is not None else "xb") as out:
            out.seek(0, os.SEEK_END)
            for m in members:
                if head is not None and m.layer is not None and m.layer.diff_id == head.diff_id:
                    continue
                out.write(_header(m.name, m.size))
                if m.layer is not None:
                    _copy_in(out, source(m.layer), m.size)
                else:
                    out.write(m.data or b"")
                out.write(b"\0" * (_padded(m.size) - m.size))
            out.write(b"\0" * (2 * BLOCK))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Streamed:
    """A file whose first member is a complete uncompressed layer."""

    path: Path
    diff_id: str
    size: int


class _StreamedLayer:
    """The one uncompressed layer inflated straight into the tarball: no staging, no copy.

    Its header goes in last, once the size is known; a PAX header carrying the size is
    always written, so the header's length, and with it where the data starts, does
    not depend on the size (8 GiB and more included).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._layer: Layer | None = None
        self._fd: int | None = None
        self._size = 0
        self._committed = False

    def claim(self, layer: Layer) -> bool:
        """Whether this layer is the one streamed (the first to ask)."""
        with self._lock:
            if self._layer is not None:
                return False
            self._layer = layer
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            return True

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        os.pwrite(self._fd, data, STREAMED_HEADER + self._size)
        self._size += len(data)

    def restart(self) -> None:
        self._size = 0

    def commit(self) -> None:
        assert self._fd is not None and self._layer is not None
        assert self._layer.diff_id is not None
        header = _header(writer.blob_path(self._layer.diff_id), self._size, sized=True)
        assert len(header) == STREAMED_HEADER
        os.pwrite(self._fd, header, 0)
        end = STREAMED_HEADER + self._size
        # Zeros to the block boundary, and nothing beyond: a restart may have left longer data.
        os.pwrite(self._fd, b"\0" * (_padded(self._size) - self._size), end)
        os.ftruncate(self._fd, STREAMED_HEADER + _padded(self._size))
        os.close(self._fd)
        self._fd = None
        self._committed = True

    def abort(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._layer is not None:
                self.path.unlink(missing_ok=True)

    def done(self) -> Streamed | None:
        if self._layer is None or not self._committed:
            return None
        assert self._layer.diff_id is not None
        return Streamed(self.path, self._layer.diff_id, self._size)

    def save_as(self, dest: Path) -> None:
        """The layer's data alone, as a file of its own (written under a temp name)."""
        tmp = temp_name(dest)
        try:
            with open(self.path, "rb") as src, open(tmp, "xb") as out:
                _copy_range(src.fileno(), out.fileno(), STREAMED_HEADER, self._size)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _header(name: str, size: int, sized: bool = False) -> bytes:
    """sized: always carry the size in a PAX record, which makes the length fixed."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    if sized:
        info.pax_headers = {"size": str(size)}
    # PAX adds a size record only when needed: members of 8 GiB and more stay representable.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


# Where a streamed layer's data starts: PAX header block, its records, the ustar header.
STREAMED_HEADER = 3 * BLOCK


def _copy_in(out: BinaryIO, src: Path, size: int) -> None:
    out.flush()
    with open(src, "rb") as fh:
        if os.fstat(fh.fileno()).st_size != size:
            raise IntegrityError(f"{src} is not the {size} bytes expected")
        _copy_range(fh.fileno(), out.fileno(), 0, size)
    out.seek(0, os.SEEK_END)


def _copy_range(src: int, dst: int, offset: int, size: int) -> None:
    """size bytes of src from offset, appended to dst at its position."""
    copied = 0
    while copied < size:
        # copy_file_range keeps the bytes in the kernel (and may reflink).
        n = os.copy_file_range(src, dst, size - copied, offset + copied)
        if n == 0:
            raise OSError("source shrank while being copied")
        copied += n
