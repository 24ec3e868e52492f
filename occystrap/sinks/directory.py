"""An extracted directory: the tarball's layout as files, alone or merged across many images.

Merged (`unique_names`): blobs stored once, a docker-load manifest per tag under a unique
name, and catalog.json, index.json and manifest.json listing every root. Those shared
files are rewritten under a file lock, catalog.json last, so two processes can fill one
directory at the same time. A blob being downloaded is locked too: a second process
waits for it (concurrency.Busy), then reuses it after re-hashing it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
from filelock import FileLock, Timeout

from occystrap.concurrency import Busy
from occystrap.errors import ManifestError
from occystrap.layout import catalog, dirlock, merged, writer
from occystrap.model import Image, Layer, Node, images_of, load_json
from occystrap.platform import Platform
from occystrap.reference import Reference
from occystrap.sinks.base import RawBlobTarget, partial_path, verified_or_removed, write_atomic
from occystrap.sinks.expanded import expand_image

LOCK = ".occystrap.lock"
LOCKS = ".occystrap-locks"  # one lock file per blob being downloaded


class DirectorySink:
    check_diff_ids = True

    def __init__(
        self,
        root: Path,
        unique_names: bool = False,
        expand: bool = False,
        note: Callable[[str], None] = lambda message: None,
        platform: Platform | None = None,
    ) -> None:
        self.root = root
        self.unique_names = unique_names
        self.expand = expand
        self.note = note
        self.platform = platform
        self._opened: dict[str, Layer] = {}
        self._writing: int | None = None  # the shared lock that keeps prune out while we write
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    @property
    def destination(self) -> str:
        return str(self.root)

    def blob(self, digest: str) -> Path:
        return self.root / writer.blob_path(digest)

    async def begin(self, nodes: list[Node]) -> None:
        if self._writing is None:
            self._writing = await anyio.to_thread.run_sync(dirlock.hold_shared, self.root)

    def _done_writing(self) -> None:
        dirlock.release(self._writing)
        self._writing = None

    def has_layer(self, layer: Layer) -> bool:
        return verified_or_removed(
            self.blob(layer.descriptor.digest), layer.descriptor.digest, layer.descriptor.size
        )

    async def present(self, layer: Layer, refs: Sequence[Reference]) -> str | None:
        # Reuse means re-hashing what is on disk: off the event loop.
        return "present" if await anyio.to_thread.run_sync(self.has_layer, layer) else None

    def _lock(self, layer: Layer) -> FileLock:
        # One process per blob at a time: two runs filling this directory share its partial file.
        locks = self.root / LOCKS
        locks.mkdir(exist_ok=True)
        return FileLock(str(locks / f"{layer.descriptor.hex}.lock"), timeout=0, thread_local=False)

    async def open_blob(self, layer: Layer, refs: Sequence[Reference]) -> RawBlobTarget | None:
        return await anyio.to_thread.run_sync(self._open, layer)

    def _open(self, layer: Layer) -> RawBlobTarget | None:
        lock = self._lock(layer)
        try:
            lock.acquire()
        except Timeout:
            raise Busy(layer.descriptor.digest) from None
        if self.has_layer(layer):
            lock.release()
            return None
        self._opened[layer.descriptor.digest] = layer
        return RawBlobTarget(self.blob(layer.descriptor.digest), on_close=lock.release)

    async def abort(self, keep: bool) -> None:
        await anyio.to_thread.run_sync(self._abort, keep)

    def _abort(self, keep: bool) -> None:
        """Bad data anywhere in the run: drop the partial downloads this run started, too."""
        self._done_writing()
        if keep:
            return
        for digest, layer in self._opened.items():
            lock = self._lock(layer)
            try:
                lock.acquire()
            except Timeout:
                continue  # another process is writing it now: its download, not ours
            try:
                partial_path(self.blob(digest)).unlink(missing_ok=True)
            finally:
                lock.release()

    async def commit(self, nodes: list[Node]) -> None:
        try:
            await anyio.to_thread.run_sync(self._commit, nodes)
        finally:
            self._done_writing()

    def _commit(self, nodes: list[Node]) -> None:
        for root in nodes:
            for name, data in writer.documents(root).items():
                path = self.root / name
                if not path.exists() or path.read_bytes() != data:
                    write_atomic(path, data)
        rootfs: dict[str, str] = {}
        if self.expand:
            for image in (i for root in nodes for i in images_of(root)):
                if image.manifest.digest not in rootfs:
                    rootfs[image.manifest.digest] = self._expand(image)
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / LOCK)):
            if self.unique_names:
                shared = merged.merge(self._shared(), nodes, self.platform, rootfs)
                for name, data in merged.files(shared):
                    write_atomic(self.root / name, data)
            else:
                for name, data in writer.image_files(nodes, self.platform):
                    write_atomic(self.root / name, data)

    def _shared(self) -> merged.Shared:
        return read_shared(self.root)

    def _expand(self, image: Image) -> str:
        return expand_image(self.root, image, self.note)


def read_shared(root: Path) -> merged.Shared:
    """A merged directory's shared files as they are now (read under its lock)."""
    return merged.Shared(
        catalog.parse(_read(root / catalog.CATALOG), str(root / catalog.CATALOG)),
        _json_list(root / "index.json", "manifests"),
        _json_list(root / "manifest.json", None),
    )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _json_list(path: Path, key: str | None) -> list[dict[str, Any]]:
    data = _read(path)
    if data is None:
        return []
    doc = load_json(data, str(path))
    items = doc.get(key) if key and isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ManifestError(f"malformed {path}")
    return [i for i in items if isinstance(i, dict)]
