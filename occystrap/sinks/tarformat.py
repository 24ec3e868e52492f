"""Tar members written by hand: headers (PAX where sizes need it), padding, and copying
file ranges in with the kernel (copy_file_range keeps the bytes out of Python)."""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from occystrap.errors import IntegrityError
from occystrap.model import Layer

BLOCK = 512


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    data: bytes | None = None  # small files; None for a layer
    layer: Layer | None = None


def padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def header(name: str, size: int, sized: bool = False) -> bytes:
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


def copy_in(out: BinaryIO, src: Path, size: int) -> None:
    out.flush()
    with open(src, "rb") as fh:
        if os.fstat(fh.fileno()).st_size != size:
            raise IntegrityError(f"{src} is not the {size} bytes expected")
        copy_range(fh.fileno(), out.fileno(), 0, size)
    out.seek(0, os.SEEK_END)


def copy_range(src: int, dst: int, offset: int, size: int) -> None:
    """size bytes of src from offset, appended to dst at its position."""
    copied = 0
    while copied < size:
        # copy_file_range keeps the bytes in the kernel (and may reflink).
        n = os.copy_file_range(src, dst, size - copied, offset + copied)
        if n == 0:
            raise OSError("source shrank while being copied")
        copied += n
