"""Layer decompression: gzip (ISA-L), zstd or plain, chosen by magic bytes, in bounded steps.

Decompressed output is produced in steps of at most OUT_STEP, so a decompression bomb
cannot fill memory; ISA-L and zstd release the GIL on large buffers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Protocol, cast

import zstandard
from isal import igzip, igzip_lib

from occystrap.errors import IntegrityError
from occystrap.mediatypes import GZIP_MAGIC, ZSTD_MAGIC

OUT_STEP = 256 * 1024
ZSTD_SLICE = 64 * 1024

Write = Callable[[bytes], None]


class Decoder(Protocol):
    def feed(self, data: bytes, out: Write, limit: int | None = None) -> bool:
        """Decode data into out. With a limit, stop once about that much is out and return
        False: call again with b"" for the rest. True once all input is consumed."""
        ...

    def finish(self) -> None: ...


class Plain:
    def feed(self, data: bytes, out: Write, limit: int | None = None) -> bool:
        if data:
            out(data)
        return True

    def finish(self) -> None:
        return None


class _Gzip:
    """Gzip, including multi-member streams (pigz and some registries write those)."""

    def __init__(self) -> None:
        self._d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
        self._member_started = False

    def feed(self, data: bytes, out: Write, limit: int | None = None) -> bool:
        produced = 0
        while True:
            if data:
                self._member_started = True
            chunk = self._d.decompress(data, OUT_STEP)
            data = b""
            if chunk:
                out(chunk)
                produced += len(chunk)
            if self._d.eof:
                data = self._d.unused_data
                self._d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
                self._member_started = False
                if not data:
                    return True
            elif self._d.needs_input:
                return True
            if limit is not None and produced >= limit and not data:
                return False  # the decompressor holds the rest of the input

    def finish(self) -> None:
        if self._member_started and not self._d.eof:
            raise IntegrityError("truncated gzip stream")


class _Zstd:
    def __init__(self) -> None:
        self._out: Write | None = None
        self._rest = b""
        self._produced = 0
        self._w = zstandard.ZstdDecompressor().stream_writer(
            cast(IO[bytes], self), write_size=OUT_STEP, closefd=False
        )

    def write(self, data: bytes) -> int:
        if self._out is not None:
            self._out(bytes(data))
        self._produced += len(data)
        return len(data)

    def feed(self, data: bytes, out: Write, limit: int | None = None) -> bool:
        self._out = out
        if limit is None:
            self._w.write(data)
            return True
        # zstd gives no output cap per call: feed small slices until enough has come out.
        self._rest = self._rest + data if self._rest else data
        self._produced = 0
        while self._rest and self._produced < limit:
            piece, self._rest = self._rest[:ZSTD_SLICE], self._rest[ZSTD_SLICE:]
            self._w.write(piece)
        return not self._rest

    def finish(self) -> None:
        self._w.flush()  # type: ignore[no-untyped-call]


def decoder_for(head: bytes) -> Decoder:
    """Magic bytes decide, not the media type: some registries mislabel layers."""
    if head.startswith(GZIP_MAGIC):
        return _Gzip()
    if head.startswith(ZSTD_MAGIC):
        return _Zstd()
    return Plain()


def open_plain(path: str | os.PathLike[str]) -> IO[bytes]:
    """A stored layer blob as a readable plain tar stream, whatever its compression."""
    with open(path, "rb") as probe:
        head = probe.read(4)
    if head.startswith(GZIP_MAGIC):
        return cast(IO[bytes], igzip.open(path, "rb"))  # type: ignore[no-untyped-call]
    fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if head.startswith(ZSTD_MAGIC):
        return cast(
            IO[bytes], zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True, closefd=True)
        )
    return fh
