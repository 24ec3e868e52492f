"""What every sink offers the engine, and the temp-then-rename file they share."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio

from occystrap import digest as digests
from occystrap.model import Layer, Node
from occystrap.reference import Reference


class BlobTarget(Protocol):
    """Receives one blob. write_raw (called on a stage thread) gets the bytes as served."""

    def write_raw(self, data: bytes) -> None: ...
    async def commit(self, plain_size: int) -> None: ...
    async def abort(self, keep: bool) -> None:
        """keep: leave what arrived for the next run (the failure was not in the data)."""
        ...


class RetryBlob(Exception):
    """The target lost the blob midway (an upload cut, a 503 on its PUT): move it again from
    its first byte. The engine retries a few times, then fails the run."""


@runtime_checkable
class Resumable(Protocol):
    """A target that may hold a prefix of the blob from an interrupted run: the engine
    re-hashes it (never trusting it) and fetches only the rest."""

    def prefix_size(self) -> int: ...
    def read_prefix(self) -> Iterator[bytes]: ...
    def restart(self) -> None: ...


@runtime_checkable
class PlainWriter(Protocol):
    """A target that also wants the uncompressed bytes (an uncompressed tarball's layer),
    handed over a decoder step's chunks at a time."""

    def write_plain(self, chunks: list[bytes]) -> None: ...


@runtime_checkable
class StreamFed(Protocol):
    """A target fed on the event loop as the bytes arrive (an upload), not on a stage thread."""

    async def feed(self, batch: list[bytes]) -> None: ...


class Sink(Protocol):
    """Where a copy goes. The engine calls begin, then per blob present/open_blob, then
    commit (or abort). refs: the destination names of the images that use the blob."""

    # Whether layers must be inflated and checked against their diff_ids on the way in:
    # outputs docker load reads need it; a registry, which never looks inside, does not.
    check_diff_ids: bool

    @property
    def destination(self) -> str:
        """What the user named as the output: for messages."""
        ...

    async def begin(self, nodes: list[Node]) -> None:
        """Called once, before anything is moved, with every root of the run."""
        ...

    async def present(self, layer: Layer, refs: Sequence[Reference]) -> str | None:
        """Why this blob needs no transfer ("present", "mounted"), or None."""
        ...

    async def open_blob(self, layer: Layer, refs: Sequence[Reference]) -> BlobTarget | None:
        """Where to write the blob; None if it became present meanwhile (another process
        fetched it); raises concurrency.Busy while another process is fetching it."""
        ...

    async def commit(self, nodes: list[Node]) -> None:
        """Write what makes the output complete (manifests, indexes, tags), last."""
        ...

    async def abort(self, keep: bool) -> None:
        """The run failed. keep: the failure was not in the data, so partial work may be resumed."""
        ...


def temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")


class TempFile:
    """A file written under a temp name and renamed into place only by commit()."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.temp = temp_name(final)
        self._fh = open(self.temp, "xb")  # noqa: SIM115 - closed in commit/abort

    def write(self, data: bytes) -> None:
        self._fh.write(data)

    def commit(self) -> None:
        self._fh.close()
        os.replace(self.temp, self.final)

    def restart(self) -> None:
        self._fh.seek(0)
        self._fh.truncate()

    def abort(self) -> None:
        self._fh.close()
        self.temp.unlink(missing_ok=True)


def verified_or_removed(path: Path, digest: str, size: int | None = None) -> bool:
    """Whether path holds exactly that content; a file that does not is removed.

    Reuse is decided by re-hashing: a name alone proves nothing after a crash or tampering.
    """
    if not path.exists():
        return False
    got, got_size = digests.of_file(path)
    if got == digest and size in (None, got_size):
        return True
    path.unlink()
    return False


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


class PartialFile:
    """A blob being downloaded, under a name a later run finds again: `.NAME.partial`.

    Appends to what an interrupted run left; renamed into place only by commit().
    """

    CHUNK = 1024 * 1024

    def __init__(self, final: Path) -> None:
        self.final = final
        self.partial = partial_path(final)
        self._fh = open(self.partial, "ab")  # noqa: SIM115 - closed in commit/abort

    def size(self) -> int:
        return self._fh.tell()

    def read(self) -> Iterator[bytes]:
        with open(self.partial, "rb") as fh:
            while chunk := fh.read(self.CHUNK):
                yield chunk

    def restart(self) -> None:
        self._fh.seek(0)
        self._fh.truncate()

    def write(self, data: bytes) -> None:
        self._fh.write(data)

    def commit(self) -> None:
        self._fh.close()
        os.replace(self.partial, self.final)

    def abort(self, keep: bool) -> None:
        self._fh.close()
        if not keep or os.path.getsize(self.partial) == 0:
            self.partial.unlink(missing_ok=True)


class PlainOut(Protocol):
    """Where a layer's uncompressed bytes go: a TempFile, or a region of a bigger file."""

    def write(self, data: bytes) -> None: ...
    def restart(self) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class RawBlobTarget:
    """The blob as served, into a file that a later run can resume (Resumable)."""

    def __init__(self, final: Path, on_close: Callable[[], None] | None = None) -> None:
        self._on_close = on_close
        self._raw = PartialFile(final)

    def prefix_size(self) -> int:
        return self._raw.size()

    def read_prefix(self) -> Iterator[bytes]:
        return self._raw.read()

    def restart(self) -> None:
        self._raw.restart()

    def write_raw(self, data: bytes) -> None:
        self._raw.write(data)

    async def commit(self, plain_size: int) -> None:
        await anyio.to_thread.run_sync(self._commit)

    async def abort(self, keep: bool) -> None:
        await anyio.to_thread.run_sync(self._abort, keep)

    def _commit(self) -> None:
        try:
            self._raw.commit()
        finally:
            self._close()

    def _abort(self, keep: bool) -> None:
        try:
            self._raw.abort(keep)
        finally:
            self._close()

    def _close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


class RawAndPlainTarget(RawBlobTarget):
    """The blob as served, and its uncompressed tar too (PlainWriter)."""

    def __init__(self, final: Path, plain: PlainOut, on_close: Callable[[], None] | None = None) -> None:
        super().__init__(final, on_close)
        # The plain copy is always rebuilt from the start: a resumed raw prefix is re-inflated.
        self._plain = plain

    def restart(self) -> None:
        super().restart()
        self._plain.restart()

    def write_plain(self, chunks: list[bytes]) -> None:
        for data in chunks:
            self._plain.write(data)

    def _commit(self) -> None:
        try:
            self._plain.commit()
        except BaseException:
            self._close()
            raise
        super()._commit()

    def _abort(self, keep: bool) -> None:
        try:
            self._plain.abort()
        finally:
            super()._abort(keep)


def write_atomic(final: Path, data: bytes) -> None:
    tmp = TempFile(final)
    try:
        tmp.write(data)
    except BaseException:
        tmp.abort()
        raise
    tmp.commit()
