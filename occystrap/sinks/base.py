"""What every sink offers the engine, and the temp-then-rename file they share."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Protocol

from occystrap.model import Image, Layer


class BlobTarget(Protocol):
    """Receives one blob in a worker thread. `raw` gets the bytes as served, `plain` uncompressed."""

    wants_raw: bool
    wants_plain: bool

    def write_raw(self, data: bytes) -> None: ...
    def write_plain(self, data: bytes) -> None: ...
    def commit(self, plain_size: int) -> None: ...
    def abort(self) -> None: ...


class Sink(Protocol):
    def has_layer(self, layer: Layer) -> bool:
        """True when the destination already holds this layer, verified."""
        ...

    def open_layer(self, layer: Layer) -> BlobTarget: ...

    def commit(self, images: list[Image]) -> None:
        """Write what makes the output complete; called in a worker thread, last."""
        ...

    def abort(self) -> None:
        """Remove whatever cannot be resumed."""
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

    def abort(self) -> None:
        self._fh.close()
        self.temp.unlink(missing_ok=True)


def write_atomic(final: Path, data: bytes) -> None:
    tmp = TempFile(final)
    try:
        tmp.write(data)
    except BaseException:
        tmp.abort()
        raise
    tmp.commit()
