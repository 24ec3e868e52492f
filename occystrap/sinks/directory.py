"""An extracted directory: the tarball's layout as files, alone or merged across many images.

Merged (`unique_names`): blobs stored once, a docker-load manifest per image under a
unique name, and catalog.json, index.json and manifest.json listing every image. Those
shared files are rewritten under a file lock, catalog.json last, so two processes can
fill one directory at the same time.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from occystrap import catalog, layout
from occystrap.errors import ManifestError
from occystrap.expand import ExpandStats, TreeWriter, apply_layer
from occystrap.model import Image, Layer, load_json
from occystrap.sinks.base import BlobBusy, RawBlobTarget, partial_path, verified_or_removed, write_atomic
from occystrap.verify import open_plain

LOCK = ".occystrap.lock"
LOCKS = ".occystrap-locks"  # one lock file per blob being downloaded


class DirectorySink:
    def __init__(
        self,
        root: Path,
        unique_names: bool = False,
        expand: bool = False,
        note: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.root = root
        self.unique_names = unique_names
        self.expand = expand
        self.note = note
        self._opened: dict[str, Layer] = {}
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    @property
    def destination(self) -> Path:
        return self.root

    def begin(self, images: list[Image]) -> None:
        return None

    def blob(self, digest: str) -> Path:
        return self.root / layout.blob_path(digest)

    def has_layer(self, layer: Layer) -> bool:
        return verified_or_removed(
            self.blob(layer.descriptor.digest), layer.descriptor.digest, layer.descriptor.size
        )

    def _lock(self, layer: Layer) -> FileLock:
        # One process per blob at a time: two runs filling this directory share its partial file.
        locks = self.root / LOCKS
        locks.mkdir(exist_ok=True)
        return FileLock(str(locks / f"{layer.descriptor.hex}.lock"), timeout=0, thread_local=False)

    def open_layer(self, layer: Layer) -> RawBlobTarget | None:
        lock = self._lock(layer)
        try:
            lock.acquire()
        except Timeout:
            raise BlobBusy(layer.descriptor.digest) from None
        if self.has_layer(layer):
            lock.release()
            return None
        self._opened[layer.descriptor.digest] = layer
        return RawBlobTarget(self.blob(layer.descriptor.digest), on_close=lock.release)

    def abort(self, keep: bool) -> None:
        """Bad data anywhere in the run: drop the partial downloads this run started, too."""
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

    def commit(self, images: list[Image]) -> None:
        stored = [layout.as_served(i) for i in images]
        for s in stored:
            for digest, data in (
                (s.image.config.digest, s.image.config_bytes),
                (s.manifest.digest, s.manifest_bytes),
            ):
                path = self.blob(digest)
                if not path.exists() or path.read_bytes() != data:
                    write_atomic(path, data)
        rootfs: dict[str, str] = {}
        if self.expand:
            for s in stored:
                rootfs[s.manifest.digest] = self._expand(s.image)
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / LOCK)):
            if self.unique_names:
                self._commit_merged(stored, rootfs)
            else:
                for name, data in layout.image_files(stored):
                    write_atomic(self.root / name, data)

    def _commit_merged(self, stored: list[layout.StoredImage], rootfs: dict[str, str]) -> None:
        images = catalog.load(self.root)
        index = _read_json_list(self.root / "index.json", "manifests")
        docker = _read_json_list(self.root / "manifest.json", None)
        for s in stored:
            ref = s.image.reference
            name = catalog.manifest_name(ref)
            entry = layout.docker_manifest_entry(s)
            write_atomic(self.root / name, layout.manifest_json([entry]))
            record: dict[str, Any] = {
                "manifest": name,
                "manifest_digest": s.manifest.digest,
                "config": entry["Config"],
                "layers": entry["Layers"],
            }
            if s.image.platform is not None:
                record["platform"] = str(s.image.platform)
            if s.manifest.digest in rootfs:
                record["rootfs"] = rootfs[s.manifest.digest]
            images.setdefault(ref.full_name, {})[catalog.tag_key(ref)] = record
            ref_name = s.ref_name
            index = [e for e in index if e.get("annotations", {}).get(layout.REF_NAME) != ref_name]
            index.append(layout.index_entry(s))
            tags = set(entry["RepoTags"])
            docker = [
                d
                for d in docker
                if not (tags & set(d.get("RepoTags", [])))
                and not (not tags and d.get("Config") == entry["Config"])
            ]
            docker.append(entry)
        write_atomic(self.root / "oci-layout", layout.OCI_LAYOUT)
        write_atomic(self.root / "index.json", layout.index_json(index))
        write_atomic(self.root / "manifest.json", layout.manifest_json(docker))
        write_atomic(self.root / catalog.CATALOG, catalog.dump(images))

    def _expand(self, image: Image) -> str:
        """Each layer into layers/<hex>/ (whiteouts visible), the final tree into rootfs/<hex>/."""
        warn_once: set[str] = set()

        def warn(message: str) -> None:
            if message not in warn_once:
                warn_once.add(message)
                self.note(message)

        final_rel = f"rootfs/{image.manifest.hex}"
        final = self.root / final_rel
        tmp_final = _temp_dir(final)
        rootfs = TreeWriter(tmp_final, keep_whiteouts=False, warn=warn)
        try:
            for layer in image.layers:
                layer_dir = self.root / "layers" / layer.descriptor.hex
                writers = [rootfs]
                tmp_layer: Path | None = None
                if not layer_dir.exists():
                    tmp_layer = _temp_dir(layer_dir)
                    writers.insert(0, TreeWriter(tmp_layer, keep_whiteouts=True, warn=warn))
                with open_plain(self.blob(layer.descriptor.digest)) as stream:
                    apply_layer(stream, writers)
                if tmp_layer is not None:
                    writers[0].finish()
                    _replace_dir(tmp_layer, layer_dir)
            rootfs.finish()
        except BaseException:
            _rmtree(tmp_final)
            raise
        _replace_dir(tmp_final, final)
        self.note(_summary(image, rootfs.stats))
        return final_rel


def _summary(image: Image, stats: ExpandStats) -> str:
    return (
        f"{image.reference}: flattened {len(image.layers)} layers into {stats.files} files; "
        f"{stats.shadowed_files} files ({stats.shadowed_bytes / 1e6:.1f} MB) shadowed by later layers "
        "are not in the final tree"
    )


def _temp_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(mode=0o755)
    return tmp


def _rmtree(path: Path) -> None:
    if path.exists():
        for sub, dirs, _files in os.walk(path):
            for d in dirs:
                p = Path(sub) / d
                if not p.is_symlink():
                    os.chmod(p, 0o700)
        shutil.rmtree(path, ignore_errors=True)


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        old = _temp_dir(final)
        old.rmdir()
        os.rename(final, old)
        os.rename(tmp, final)
        _rmtree(old)
    else:
        os.rename(tmp, final)


def _read_json_list(path: Path, key: str | None) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    doc = load_json(data, str(path))
    items = doc.get(key) if key and isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ManifestError(f"malformed {path}")
    return [i for i in items if isinstance(i, dict)]
