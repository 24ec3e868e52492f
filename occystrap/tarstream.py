"""Reading a layer's plain tar as it streams: a file tarfile can seek in, over chunks.

Measured on the benchmark's big layer (400 MB, 784 files): in stream mode ("r|") tarfile reads
everything through its `_Stream`, 10 KiB at a time, joining pieces, to skip a member's data as
much as to read it; that was 0.16-0.2 s of GIL-holding CPU for `files` and more for `diff`'s
content digests. Seekable ("r:"), tarfile skips data with `seek` and reads a member's bytes in
the sizes its reader asks for. Here a forward seek drops whole chunks without copying them, and
a read inside one chunk is one slice. Used by every reader of layers (`--expand`, the
runtime bundle, files, diff, search, export).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

# The step every reader of layers takes (raw reads, a decoder's bounded output, a stream that
# is not already a ChunkReader): hashlib and the decoders release the GIL only on large
# buffers, and tarfile's own small reads are served from these chunks.
CHUNK = 1024 * 1024


class ChunkReader(io.RawIOBase):
    """Reads and forward seeks over `next_chunk()` (None at the end, after any verdict).

    A backward seek may reach into the current and the previous chunk only: all tarfile does
    is re-read the byte before a member's header to check that the archive goes on.
    """

    def __init__(self, next_chunk: Callable[[], bytes | None]) -> None:
        self._next_chunk = next_chunk
        self._prev = b""
        self._chunk = b""
        self._start = 0  # absolute offset of self._chunk[0]
        self._pos = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a layer stream cannot seek from its end")
        if offset < self._start - len(self._prev):
            raise io.UnsupportedOperation("a layer stream cannot seek back that far")
        self._pos = offset  # forward: the chunks in between are dropped by the next read
        return offset

    def _fill(self) -> bool:
        """Whether a byte exists at the position (fetching, and dropping, chunks as needed)."""
        while self._pos >= self._start + len(self._chunk):
            if self._ended:
                return False
            chunk = self._next_chunk()
            if chunk is None:
                self._ended = True
                return False
            if chunk:
                self._start += len(self._chunk)
                self._prev, self._chunk = self._chunk, chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        pieces = []
        while size > 0 and self._fill():
            if self._pos < self._start:
                held, off = self._prev, self._pos - (self._start - len(self._prev))
            else:
                held, off = self._chunk, self._pos - self._start
            piece = held if off == 0 and size >= len(held) else held[off : off + size]
            pieces.append(piece)
            self._pos += len(piece)
            size -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readall(self) -> bytes:
        pieces = []
        while piece := self.read(CHUNK):
            pieces.append(piece)
        return b"".join(pieces)

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)


def chunked(stream: IO[bytes]) -> ChunkReader:
    """stream as a ChunkReader (itself if it is one). Never seek the stream itself: a gzip
    file object "seeks" back by decompressing again from the start."""
    if isinstance(stream, ChunkReader):
        return stream
    return ChunkReader(lambda: stream.read(CHUNK) or None)


@contextmanager
def open_tar(stream: IO[bytes]) -> Iterator[tarfile.TarFile]:
    """A tarfile reading stream's members in order (TarError on a malformed archive)."""
    with tarfile.open(fileobj=chunked(stream), mode="r:") as tf:
        yield tf


def members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """tf's members in order, each forgotten once the next is read: nothing here looks members
    up by name, and a layer of 100k files would otherwise hold every TarInfo to its end."""
    while (info := tf.next()) is not None:
        tf.members.clear()  # type: ignore[attr-defined]
        yield info
