"""A single tarball in Docker 25's `docker save` layout (OCI layout + manifest.json)."""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from occystrap import layout
from occystrap.model import Image, Layer
from occystrap.sinks.base import RawBlobTarget, temp_name
from occystrap.verify import file_digest

BLOCK = 512


class TarballSink:
    """Blobs are staged beside the output, then copied into the tar by the kernel at commit."""

    def __init__(self, path: Path, uncompressed_layers: bool = False) -> None:
        self.path = path
        self.uncompressed = uncompressed_layers
        self.staging = path.with_name(f".{path.name}.occystrap-staging")
        self.staging.mkdir(parents=True, exist_ok=True)

    def _staged(self, layer: Layer) -> Path:
        digest = layer.diff_id if self.uncompressed else layer.descriptor.digest
        return self.staging / digest.replace(":", "-")

    def has_layer(self, layer: Layer) -> bool:
        """A layer staged completely by an interrupted run, re-hashed before it is reused."""
        staged = self._staged(layer)
        if not staged.exists():
            return False
        want = layer.diff_id if self.uncompressed else layer.descriptor.digest
        if file_digest(staged)[0] == want:
            return True
        staged.unlink()
        return False

    def open_layer(self, layer: Layer) -> RawBlobTarget:
        raw = self.staging / layer.descriptor.digest.replace(":", "-")
        if self.uncompressed:
            return RawBlobTarget(raw.with_suffix(".raw"), plain=self._staged(layer))
        return RawBlobTarget(raw)

    def commit(self, images: list[Image]) -> None:
        if self.uncompressed:
            sizes = {l.diff_id: self._staged(l).stat().st_size for i in images for l in i.layers}
            stored = [layout.with_uncompressed_layers(i, sizes) for i in images]
        else:
            stored = [layout.as_served(i) for i in images]
        write_tarball(self.path, stored, self._staged)
        shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self, keep: bool) -> None:
        # After a network failure or Ctrl-C, staged blobs and partial downloads stay: running
        # the same command again resumes them. Bad data leaves nothing behind.
        if not keep or (self.staging.exists() and not any(self.staging.iterdir())):
            shutil.rmtree(self.staging, ignore_errors=True)


def write_tarball(path: Path, stored: list[layout.StoredImage], source: Callable[[Layer], Path]) -> None:
    """The layout as one tar, under a temp name renamed into place when complete."""
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as out:
            written: set[str] = set()
            for s in stored:
                for image_layer, desc in zip(s.image.layers, s.layers, strict=True):
                    name = layout.blob_path(desc.digest)
                    if name not in written:
                        written.add(name)
                        _add_file(out, name, source(image_layer))
            for name, data in layout.image_files(stored):
                _add_bytes(out, name, data)
            out.write(b"\0" * (2 * BLOCK))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    # PAX adds a size record only when needed: members of 8 GiB and more stay representable.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(out: BinaryIO, size: int) -> None:
    if size % BLOCK:
        out.write(b"\0" * (BLOCK - size % BLOCK))


def _add_bytes(out: BinaryIO, name: str, data: bytes) -> None:
    out.write(_header(name, len(data)))
    out.write(data)
    _pad(out, len(data))


def _add_file(out: BinaryIO, name: str, src: Path) -> None:
    size = src.stat().st_size
    out.write(_header(name, size))
    out.flush()
    with open(src, "rb") as fh:
        copied = 0
        while copied < size:
            # copy_file_range keeps the bytes in the kernel (and may reflink).
            n = os.copy_file_range(fh.fileno(), out.fileno(), size - copied)
            if n == 0:
                raise OSError(f"{src} shrank while being copied")
            copied += n
    out.seek(0, os.SEEK_END)
    _pad(out, size)
