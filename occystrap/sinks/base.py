"""What every sink offers the engine, and the temp-then-rename file they share."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from occystrap.model import Image, Layer
from occystrap.verify import file_digest


class BlobTarget(Protocol):
    """Receives one blob in a worker thread. `raw` gets the bytes as served, `plain` uncompressed.

    A target may hold a prefix of the raw blob from an interrupted run: the engine
    re-hashes it (never trusting it) and fetches only the rest.
    """

    wants_raw: bool
    wants_plain: bool

    def prefix_size(self) -> int: ...
    def read_prefix(self) -> Iterator[bytes]: ...
    def restart(self) -> None: ...
    def write_raw(self, data: bytes) -> None: ...
    def write_plain(self, data: bytes) -> None: ...
    def commit(self, plain_size: int) -> None: ...
    def abort(self, keep: bool) -> None:
        """keep: leave the raw prefix for the next run (the failure was not in the data)."""
        ...


class BlobBusy(Exception):
    """Another process is downloading this blob into the same destination right now."""


class Sink(Protocol):
    @property
    def destination(self) -> Path:
        """What the user named as the output: for messages."""
        ...

    def begin(self, images: list[Image]) -> None:
        """Called once, before anything is fetched, with every image of the run."""
        ...

    def has_layer(self, layer: Layer) -> bool:
        """True when the destination already holds this layer, verified."""
        ...

    def open_layer(self, layer: Layer) -> BlobTarget | None:
        """Where to write the layer; None if it became present meanwhile (another process
        fetched it); raises BlobBusy while another process is fetching it."""
        ...

    def commit(self, images: list[Image]) -> None:
        """Write what makes the output complete; called in a worker thread, last."""
        ...

    def abort(self, keep: bool) -> None:
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
    got, got_size = file_digest(path)
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
    """The blob as served, resumable; optionally a plain (uncompressed) copy too."""

    def __init__(
        self, final: Path, plain: PlainOut | None = None, on_close: Callable[[], None] | None = None
    ) -> None:
        self._on_close = on_close
        self.wants_raw = True
        self.wants_plain = plain is not None
        self._raw = PartialFile(final)
        # The plain copy is always rebuilt from the start: a resumed raw prefix is re-inflated.
        self._plain = plain

    def prefix_size(self) -> int:
        return self._raw.size()

    def read_prefix(self) -> Iterator[bytes]:
        return self._raw.read()

    def restart(self) -> None:
        self._raw.restart()
        if self._plain is not None:
            self._plain.restart()

    def write_raw(self, data: bytes) -> None:
        self._raw.write(data)

    def write_plain(self, data: bytes) -> None:
        assert self._plain is not None
        self._plain.write(data)

    def commit(self, plain_size: int) -> None:
        try:
            if self._plain is not None:
                self._plain.commit()
            self._raw.commit()
        finally:
            self._close()

    def abort(self, keep: bool) -> None:
        try:
            if self._plain is not None:
                self._plain.abort()
            self._raw.abort(keep)
        finally:
            self._close()

    def _close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


def write_atomic(final: Path, data: bytes) -> None:
    tmp = TempFile(final)
    try:
        tmp.write(data)
    except BaseException:
        tmp.abort()
        raise
    tmp.commit()
