"""The files of a layout, in a directory or a tarball, read by name: nothing is extracted.

A tarball is indexed once (headers only) and its members are then read with `pread`
at their offsets, so many threads (and a server's many requests) read it at once
without a shared file position. A compressed tarball can only be read in order:
it is read under a lock, one member at a time.
"""

from __future__ import annotations

import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from occystrap.errors import ManifestError, NotFoundError

CHUNK = 1024 * 1024


def safe_name(name: str) -> str | None:
    """`name` normalized, relative and without `..`; None when it could point outside the layout."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or not parts or ".." in parts or "\0" in name:
        return None
    return "/".join(parts)


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class Store(Protocol):
    path: Path
    parallel: bool  # open() may be called from several threads at once

    def size(self, name: str) -> int | None:
        """Size of the regular file `name`; None when there is none."""
        ...

    def open(self, name: str, offset: int = 0) -> Reader: ...
    def is_dir(self, name: str) -> bool: ...
    def blob_names(self) -> list[str]: ...
    def close(self) -> None: ...


def read_all(store: Store, name: str) -> bytes:
    reader = store.open(name)
    try:
        return reader.read()
    finally:
        reader.close()


def iter_chunks(store: Store, name: str, offset: int = 0, size: int = CHUNK) -> Iterator[bytes]:
    reader = store.open(name, offset)
    try:
        while chunk := reader.read(size):
            yield chunk
    finally:
        reader.close()


class DirStore:
    parallel = True

    def __init__(self, root: Path) -> None:
        self.path = root

    def size(self, name: str) -> int | None:
        try:
            st = os.stat(self.path / name)
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open(self, name: str, offset: int = 0) -> Reader:
        fh = open(self.path / name, "rb")  # noqa: SIM115 - the caller closes it
        if offset:
            fh.seek(offset)
        return fh

    def is_dir(self, name: str) -> bool:
        return (self.path / name).is_dir()

    def blob_names(self) -> list[str]:
        out: list[str] = []
        blobs = self.path / "blobs"
        if not blobs.is_dir():
            return out
        for algo in sorted(blobs.iterdir()):
            if algo.is_dir() and not algo.name.startswith("."):
                out += [
                    f"blobs/{algo.name}/{f.name}"
                    for f in sorted(algo.iterdir())
                    if not f.name.startswith(".") and f.is_file()  # .name.tmp: an unfinished write
                ]
        return out

    def close(self) -> None:
        return None


class _Range:
    """One member's bytes, read with pread on a shared descriptor: no shared file position."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd = fd
        self._offset = offset
        self._size = size
        self._pos = 0

    def read(self, n: int = -1, /) -> bytes:
        left = self._size - self._pos
        n = left if n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._offset + self._pos)
        self._pos += len(data)
        return data

    def close(self) -> None:
        return None


class TarStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        try:
            try:
                self._tf = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
                self.parallel = True
            except tarfile.ReadError:
                self._tf = tarfile.open(path, "r:*")  # noqa: SIM115 - compressed: read in order
                self.parallel = False
            members = self._tf.getmembers()
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            # tarfile's reasons span lines (one per compression tried): one line here.
            raise ManifestError(f"{path} is not a readable tarball: {' '.join(str(exc).split())}") from None
        self._files: dict[str, tarfile.TarInfo] = {}
        self._dirs: set[str] = set()
        for m in members:
            name = safe_name(m.name)
            if name is None:
                continue
            if m.isfile():
                self._files[name] = m
            parts = name.split("/")
            self._dirs.update(
                "/".join(parts[:i]) for i in range(1, len(parts) if m.isfile() else len(parts) + 1)
            )
        if self.parallel:
            self._fd = os.open(path, os.O_RDONLY)
        self._lock = threading.Lock()

    def size(self, name: str) -> int | None:
        m = self._files.get(name)
        return m.size if m is not None else None

    def offset(self, name: str) -> int | None:
        """Where the member's data starts in the tarball (for serving it in place)."""
        m = self._files.get(name)
        return m.offset_data if m is not None and self._fd is not None and not m.issparse() else None

    def open(self, name: str, offset: int = 0) -> Reader:
        m = self._files[name]
        if self._fd is not None and not m.issparse():
            return _Range(self._fd, m.offset_data + offset, m.size - offset)
        with self._lock:
            fh = self._tf.extractfile(m)
        if fh is None:  # pragma: no cover - regular members always have a file object
            raise OSError(f"cannot read {name}")
        if offset:
            fh.seek(offset)
        return fh

    def is_dir(self, name: str) -> bool:
        return name in self._dirs

    def blob_names(self) -> list[str]:
        return sorted(n for n in self._files if n.startswith("blobs/") and n.count("/") == 2)

    def names(self) -> list[str]:
        return sorted(self._files)

    def close(self) -> None:
        self._tf.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_store(path: Path) -> Store:
    if path.is_dir():
        return DirStore(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    return TarStore(path)
