"""The one way forensics reads a layer: a context manager over its plain tar bytes.

Verification rides along with the read (as everywhere in occystrap): the blob's digest and
size and the uncompressed diff_id are checked while the bytes stream, and the verdict comes
when the context is left. So every consumer reads each layer to its end; `drain` is how.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from occystrap.errors import ManifestError, NotFoundError
from occystrap.model import Image
from occystrap.streamcheck import BlobCheck
from occystrap.tarstream import CHUNK, ChunkReader


@dataclass(frozen=True)
class LayerRef:
    index: int  # 0 = bottom layer
    digest: str  # the layer blob's digest (sha256:…)
    diff_id: str
    size: int  # blob size


# A context manager yielding the layer's plain (uncompressed) tar bytes as a binary stream.
# Reading to EOF and leaving the context verifies digest and diff_id (IntegrityError on
# mismatch), so consumers must read every layer to its end.
OpenLayer = Callable[[LayerRef], AbstractContextManager[BinaryIO]]


def layer_refs(image: Image) -> list[LayerRef]:
    """The image's layers, bottom first, as forensics addresses them."""
    refs = []
    for i, layer in enumerate(image.layers):
        if layer.diff_id is None:  # an Image's layers all have one; an Artifact's blobs do not
            raise ManifestError(f"{image.reference}: layer {i} has no diff_id, so it cannot be unpacked")
        refs.append(LayerRef(i, layer.descriptor.digest, layer.diff_id, layer.descriptor.size))
    return refs


def drain(stream: BinaryIO) -> None:
    """Read what a consumer left (tar padding, trailing blocks) so the digest check sees it."""
    while stream.read(CHUNK):
        pass


def _verified_chunks(raw: BinaryIO, check: BlobCheck) -> Callable[[], bytes | None]:
    """The plain chunks of one stored blob, fed through a BlobCheck as they are produced."""
    decoder_holds_more = False

    def next_chunk() -> bytes | None:
        nonlocal decoder_holds_more
        if decoder_holds_more:
            out, consumed = check.inflate(b"", CHUNK)
        else:
            data = raw.read(CHUNK)
            if not data:
                return None
            check.feed_raw(data)
            # Bounded output per step, so a decompression bomb cannot fill memory.
            out, consumed = check.inflate(data, CHUNK)
        decoder_holds_more = not consumed
        check.feed_plain(out)
        return b"".join(out)

    return next_chunk


def open_blob_file(paths: Mapping[str, Path]) -> OpenLayer:
    """OpenLayer over stored blob files (gzip, zstd or plain, told apart by magic bytes).

    `paths` maps a layer's blob digest to its file. Leaving the context normally drains what
    the consumer left and checks size, digest and diff_id (IntegrityError); leaving it by an
    exception skips the check, since the read was abandoned anyway.
    """

    @contextmanager
    def open_layer(ref: LayerRef) -> Iterator[BinaryIO]:
        path = paths.get(ref.digest)
        if path is None:
            raise NotFoundError(f"no stored blob for layer {ref.index} ({ref.digest})")
        check = BlobCheck(ref.digest, ref.size, ref.diff_id, raw_out=None, plain_out=None)
        with open(path, "rb") as raw:
            stream = cast(BinaryIO, ChunkReader(_verified_chunks(raw, check)))
            yield stream
            drain(stream)
            check.finish()

    return open_layer


def blob_paths(directory: Path, refs: Sequence[LayerRef]) -> dict[str, Path]:
    """digest -> file for blobs stored as DIRECTORY/<hex> (the OCI layout's blobs/sha256)."""
    return {ref.digest: directory / ref.digest.partition(":")[2] for ref in refs}
