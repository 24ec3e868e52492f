"""A single tarball in Docker 25's `docker save` layout (OCI layout + manifest.json).

With layers kept as served (the default) every member's size is known before the
first byte arrives, so the tar is laid out up front and each layer is written in
place, in parallel, with pwrite: no staging copy. A small progress file records how
much of each layer is on disk, so a re-run after a crash resumes every layer.
Uncompressed layers have sizes known only at the end. The first one to start (the
largest) is inflated straight into the tarball as its first member, its header filled
in last; the others are staged, then copied in after it by the kernel.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import anyio

from occystrap.errors import UnsupportedMediaTypeError
from occystrap.layout import writer
from occystrap.model import Artifact, Descriptor, Image, Layer, Node, walk
from occystrap.platform import Platform
from occystrap.reference import Reference
from occystrap.sinks.base import RawAndPlainTarget, RawBlobTarget, TempFile, verified_or_removed
from occystrap.sinks.inplace import InPlace, LayerInPlace, locked
from occystrap.sinks.streamed import Streamed, StreamedLayer, write_tarball
from occystrap.sinks.tarformat import Member


def plan(
    nodes: Sequence[Node], primary: Platform | None = None, rewrite: writer.Rewrite = writer.as_served
) -> list[Member]:
    """Every member in order: streamed blobs (each once), then configs, manifests and the index files."""
    members: list[Member] = []
    seen: set[str] = set()
    for root in nodes:
        for node in walk(root):
            pairs: Iterable[tuple[Layer, Descriptor]]
            if isinstance(node, Image):
                pairs = zip(node.layers, rewrite(node).layers, strict=True)
            elif isinstance(node, Artifact):
                pairs = ((Layer(d, None), d) for d in node.blobs)
            else:
                continue
            for layer, desc in pairs:
                name = writer.blob_path(desc.digest)
                if name not in seen:
                    seen.add(name)
                    members.append(Member(name, desc.size, layer=layer))
    members.extend(
        Member(name, len(data), data=data)
        for name, data in writer.image_files(nodes, primary, rewrite)
        if name not in seen
    )
    return members


class TarballSink:
    check_diff_ids = True

    def __init__(
        self, path: Path, uncompressed_layers: bool = False, platform: Platform | None = None
    ) -> None:
        self.path = path
        self.uncompressed = uncompressed_layers
        self.platform = platform
        self.staging = path.with_name(f".{path.name}.occystrap-staging")
        self.partial = path.with_name(f".{path.name}.occystrap-partial")
        self.progress = path.with_name(f".{path.name}.occystrap-progress")
        self._direct: InPlace | None = None
        self._streamed: StreamedLayer | None = None
        self._staging_lock: int | None = None

    @property
    def destination(self) -> str:
        return str(self.path)

    async def begin(self, nodes: list[Node]) -> None:
        await anyio.to_thread.run_sync(self._begin, nodes)

    def _begin(self, nodes: list[Node]) -> None:
        if self.uncompressed:
            if any(not isinstance(n, Image) for root in nodes for n in walk(root)):
                raise UnsupportedMediaTypeError(
                    "--uncompressed-layers needs runnable images, not artifacts or indexes"
                )
            self.staging.mkdir(parents=True, exist_ok=True)
            self._staging_lock = locked(self.staging / ".occystrap-lock")
            # Inside the locked staging directory, under a fixed name: a run killed with -9
            # leaves it where the next run finds (and discards) it, not as litter.
            streamed = self.staging / "streamed.tar"
            streamed.unlink(missing_ok=True)
            # The largest layer streams, and comes first in the tarball whether it streamed
            # this run or was staged by an earlier one: the same content, the same bytes.
            largest = max(writer.streamed(nodes), key=lambda l: (l.descriptor.size, l.descriptor.digest))
            self._streamed = StreamedLayer(streamed, largest.descriptor.digest)
        else:
            self._direct = InPlace(self.partial, self.progress, plan(nodes, self.platform))

    def _staged(self, layer: Layer) -> Path:
        assert layer.diff_id is not None
        return self.staging / layer.diff_id.replace(":", "-")

    def has_layer(self, layer: Layer) -> bool:
        """A layer completed by an interrupted run, re-hashed before it is reused."""
        if self._direct is not None:
            return self._direct.complete(layer)
        assert layer.diff_id is not None
        return verified_or_removed(self._staged(layer), layer.diff_id)

    async def present(self, layer: Layer, refs: Sequence[Reference]) -> str | None:
        return "present" if await anyio.to_thread.run_sync(self.has_layer, layer) else None

    async def open_blob(self, layer: Layer, refs: Sequence[Reference]) -> RawBlobTarget | LayerInPlace:
        return await anyio.to_thread.run_sync(self._open, layer)

    def _open(self, layer: Layer) -> RawBlobTarget | LayerInPlace:
        if self._direct is not None:
            return self._direct.target(layer)
        raw = self.staging / layer.descriptor.digest.replace(":", "-")
        streamed = self._streamed
        if streamed is not None and streamed.claim(layer):
            return RawAndPlainTarget(raw.with_suffix(".raw"), plain=streamed)
        return RawAndPlainTarget(raw.with_suffix(".raw"), plain=TempFile(self._staged(layer)))

    async def commit(self, nodes: list[Node]) -> None:
        await anyio.to_thread.run_sync(self._commit, nodes)

    def _commit(self, nodes: list[Node]) -> None:
        if self._direct is not None:
            self._direct.finish(self.path)
            return
        head = self._streamed.done() if self._streamed is not None else None
        images = [i for root in nodes for i in walk(root) if isinstance(i, Image)]
        sizes: dict[str, int] = {
            l.diff_id: self._plain_size(l, head) for i in images for l in i.layers if l.diff_id
        }

        def rewrite(image: Image) -> writer.StoredImage:
            return writer.with_uncompressed_layers(image, sizes)

        members = plan(nodes, self.platform, rewrite)
        if self._streamed is not None:
            first = self._streamed.chosen
            members.sort(key=lambda m: m.layer is None or m.layer.descriptor.digest != first)
        write_tarball(self.path, members, self._staged, head)
        shutil.rmtree(self.staging, ignore_errors=True)
        self._unlock_staging()

    def _plain_size(self, layer: Layer, head: Streamed | None) -> int:
        if head is not None and layer.diff_id == head.diff_id:
            return head.size
        return self._staged(layer).stat().st_size

    def _unlock_staging(self) -> None:
        if self._staging_lock is not None:
            os.close(self._staging_lock)
            self._staging_lock = None

    async def abort(self, keep: bool) -> None:
        await anyio.to_thread.run_sync(self._abort, keep)

    def _abort(self, keep: bool) -> None:
        # After a network failure or Ctrl-C, what arrived stays for a re-run to resume.
        # Bad data leaves nothing behind.
        if self._direct is not None:
            self._direct.close()
            if not keep:
                self.partial.unlink(missing_ok=True)
                self.progress.unlink(missing_ok=True)
        else:
            if self._streamed is not None:
                # A layer that streamed to its end is kept as staged, for a re-run to
                # reuse (after re-hashing it); one cut short is rebuilt from its raw prefix.
                done = self._streamed.done()
                if keep and done is not None:
                    self._streamed.save_as(self.staging / done.diff_id.replace(":", "-"))
                self._streamed.abort()
            leftovers = (
                [p for p in self.staging.iterdir() if p.name != ".occystrap-lock"]
                if self.staging.exists()
                else []
            )
            if not keep or not leftovers:
                shutil.rmtree(self.staging, ignore_errors=True)
            self._unlock_staging()
