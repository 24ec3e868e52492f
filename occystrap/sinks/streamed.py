"""With --uncompressed-layers the plain sizes are known only at the end: the largest layer
is inflated straight into the tarball as its first member (its header written last), and
the others are staged, then copied in after it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from occystrap.layout import writer
from occystrap.model import Layer
from occystrap.sinks.base import temp_name
from occystrap.sinks.tarformat import BLOCK, Member, copy_in, copy_range, header, padded


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
                out.write(header(m.name, m.size))
                if m.layer is not None:
                    copy_in(out, source(m.layer), m.size)
                else:
                    out.write(m.data or b"")
                out.write(b"\0" * (padded(m.size) - m.size))
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


class StreamedLayer:
    """The one uncompressed layer inflated straight into the tarball: no staging, no copy.

    Its header goes in last, once the size is known; a PAX header carrying the size is
    always written, so the header's length, and with it where the data starts, does
    not depend on the size (8 GiB and more included).
    """

    def __init__(self, path: Path, chosen: str) -> None:
        self.path = path
        self.chosen = chosen  # the layer digest that streams: decided up front, not by a race
        self._lock = threading.Lock()
        self._layer: Layer | None = None
        self._fd: int | None = None
        self._size = 0
        self._committed = False

    def claim(self, layer: Layer) -> bool:
        """Whether this layer is the one streamed."""
        with self._lock:
            if self._layer is not None or layer.descriptor.digest != self.chosen:
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
        head = header(writer.blob_path(self._layer.diff_id), self._size, sized=True)
        assert len(head) == STREAMED_HEADER
        os.pwrite(self._fd, head, 0)
        end = STREAMED_HEADER + self._size
        # Zeros to the block boundary, and nothing beyond: a restart may have left longer data.
        os.pwrite(self._fd, b"\0" * (padded(self._size) - self._size), end)
        os.ftruncate(self._fd, STREAMED_HEADER + padded(self._size))
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
                copy_range(src.fileno(), out.fileno(), STREAMED_HEADER, self._size)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


# Where a streamed layer's data starts: PAX header block, its records, the ustar header.
STREAMED_HEADER = 3 * BLOCK
