"""Offline verification of an image layout on disk: `occystrap verify PATH`.

PATH is a tarball (one image or a mirror bundle; Docker 25 / OCI form or classic `docker save`),
an extracted directory, or a merged directory. Nothing touches the network. Checked:

- every blob: it is present, its sha256 matches its name (``blobs/sha256/<hex>``) and its size
  matches every descriptor that names it; every file under ``blobs/`` is re-hashed, referenced or not;
- every layer: it decompresses (gzip, zstd or plain; magic bytes decide) to the diff_id its config
  lists;
- index.json: ``oci-layout`` is there, each manifest it names is present and parses, its config is
  present and lists one diff_id per layer;
- manifest.json (what ``docker load`` reads): each Config and layer is present, the Layers are the
  layers of the OCI manifest with the same config, in order, RepoTags are well formed and unique,
  and every tagged name index.json lists has its RepoTags entry;
- catalog.json (merged directories): each entry's manifest file is present and agrees with the
  catalog, with its manifest blob and with index.json; its root filesystem is there (``--expand``).

A damaged layout is a normal result (`Result` with `Problem`s, one per blob or inconsistency);
only a PATH that does not exist or cannot be read at all raises. Pure synchronous code: blobs are
checked by a few worker threads (hashlib, ISA-L and zstd release the GIL), each with its own file
handle, so a tarball is read with ``pread`` at the members' offsets.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tarfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from occystrap import catalog, layout, reference
from occystrap.errors import IntegrityError, ManifestError, NotFoundError, OccystrapError
from occystrap.model import (
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    load_json,
    parse_diff_ids,
    parse_index,
    parse_manifest,
    sha256_digest,
)
from occystrap.reference import Reference
from occystrap.tuning import DEFAULT_VERIFY_WORKERS
from occystrap.ui.state import human, plural
from occystrap.verify import decoder_for

CHUNK = 1024 * 1024
DEFAULT_WORKERS = DEFAULT_VERIFY_WORKERS
_HEX64 = re.compile(r"[a-f0-9]{64}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

# Problem kinds, stable for --json consumers.
MISSING = "missing"
SIZE = "size"
DIGEST = "digest"
CORRUPT = "corrupt"
DIFF_ID = "diff_id"
MANIFEST = "manifest"
TAGS = "tags"
CATALOG = "catalog"
LAYOUT = "layout"


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (a file in the layout, or an entry of one) and what."""

    where: str
    message: str
    kind: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class Result:
    path: str
    layout: str  # "tarball", "directory" or "merged directory"
    images: int  # image references the layout lists
    manifests: int  # distinct image manifests read
    blobs: int  # blob files re-hashed
    bytes: int  # their bytes
    diff_ids: int  # layers decompressed and compared with their diff_id
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        return (
            f"{head}: {self.path} ({self.layout}): {plural(self.images, 'image')}, "
            + (f"{plural(self.manifests, 'manifest')}, " if self.manifests else "")
            + f"{plural(self.blobs, 'blob')} ({human(self.bytes)}) "
            f"re-hashed, {plural(self.diff_ids, 'diff_id')} checked"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "layout": self.layout,
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "diff_ids": self.diff_ids,
            "problems": [p.to_json() for p in self.problems],
        }


class VerifyFailedError(IntegrityError):
    """verify found problems (each already reported on its own line)."""


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12] or digest


# --- where the files are: a directory or a tarball --------------------------------


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class _Store(Protocol):
    parallel: bool  # open() may be called from several threads at once

    def size(self, name: str) -> int | None:
        """Size of the regular file `name`; None when there is none."""
        ...

    def open(self, name: str) -> _Reader: ...
    def is_dir(self, name: str) -> bool: ...
    def blob_names(self) -> list[str]: ...
    def close(self) -> None: ...


def safe_name(name: str) -> str | None:
    """`name` normalized, relative and without `..`; None when it could point outside the layout."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or not parts or ".." in parts:
        return None
    return "/".join(parts)


class _DirStore:
    parallel = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def size(self, name: str) -> int | None:
        try:
            st = os.stat(self.root / name)
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open(self, name: str) -> _Reader:
        return open(self.root / name, "rb")

    def is_dir(self, name: str) -> bool:
        return (self.root / name).is_dir()

    def blob_names(self) -> list[str]:
        out: list[str] = []
        blobs = self.root / "blobs"
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


class _TarStore:
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
            raise ManifestError(f"{path} is not a readable tarball: {exc}") from None
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

    def open(self, name: str) -> _Reader:
        m = self._files[name]
        if self._fd is not None and not m.issparse():
            return _Range(self._fd, m.offset_data, m.size)
        with self._lock:
            fh = self._tf.extractfile(m)
        if fh is None:  # pragma: no cover - regular members always have a file object
            raise OSError(f"cannot read {name}")
        return fh

    def is_dir(self, name: str) -> bool:
        return name in self._dirs

    def blob_names(self) -> list[str]:
        return sorted(n for n in self._files if n.startswith("blobs/") and n.count("/") == 2)

    def close(self) -> None:
        self._tf.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Closing:
    def __init__(self, reader: _Reader) -> None:
        self.reader = reader

    def __enter__(self) -> _Reader:
        return self.reader

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.reader.close()


# --- what the layout says --------------------------------------------------------


@dataclass
class _Claim:
    """Everything the layout says about one blob file."""

    name: str
    digest: str | None  # what its content must hash to (from its name or a descriptor)
    sizes: dict[int, str] = field(default_factory=dict)  # claimed size -> who claims it
    diff_ids: dict[str, str] = field(default_factory=dict)  # diff_id -> whose layer it is
    who: list[str] = field(default_factory=list)

    def referrers(self) -> str:
        if not self.who:
            return "not referenced"
        more = f", +{len(self.who) - 1} more" if len(self.who) > 1 else ""
        return self.who[0] + more


@dataclass(frozen=True)
class _Manifest:
    digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    config_doc: Any  # the parsed config, None when it is missing or malformed

    @property
    def layer_names(self) -> list[str]:
        return [layout.blob_path(d.digest) for d in self.layers]


@dataclass(frozen=True)
class _BlobOutcome:
    name: str
    present: bool
    size: int
    decompressed: bool
    problem: Problem | None


class _Cancelled(Exception):
    pass


def _digest_of_name(name: str) -> str | None:
    """The digest a file's name promises: blobs/<algo>/<hex>, or a classic save's <hex>.json config."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        return f"{parts[1]}:{parts[2]}"
    if len(parts) == 1 and parts[0].endswith(".json") and _HEX64.fullmatch(parts[0][:-5]):
        return "sha256:" + parts[0][:-5]
    return None


def _parse_name(text: str) -> Reference | None:
    """An annotation or RepoTag as a reference, when it is a full name (not a bare tag)."""
    if not text or (":" not in text.rpartition("/")[2] and "@" not in text):
        return None
    try:
        return reference.parse(text)
    except OccystrapError:
        return None


class _Verifier:
    def __init__(self, store: _Store, workers: int, note: Callable[[str], None]) -> None:
        self.store = store
        self.workers = workers
        self.note = note
        self.problems: list[Problem] = []
        self.claims: dict[str, _Claim] = {}
        self.manifests: dict[str, _Manifest | None] = {}
        self.by_config: dict[str, list[_Manifest]] = {}
        self.configs: dict[str, tuple[Any, list[str] | None, str | None]] = {}
        self.index_entries: list[tuple[str, Reference | None, str, _Manifest | None]] = []
        self.index_refs: dict[str, str] = {}  # org.opencontainers.image.ref.name -> manifest digest
        self.images = 0
        self._stop = threading.Event()

    def problem(self, where: str, message: str, kind: str) -> None:
        self.problems.append(Problem(where, message, kind))

    def claim(
        self,
        name: str,
        who: str,
        digest: str | None = None,
        size: int | None = None,
        diff_id: str | None = None,
    ) -> None:
        c = self.claims.get(name)
        if c is None:
            c = self.claims[name] = _Claim(name, _digest_of_name(name))
        if c.digest is None:
            c.digest = digest
        if size is not None:
            c.sizes.setdefault(size, who)
        if diff_id:
            c.diff_ids.setdefault(diff_id, who)
        c.who.append(who)

    def read_small(self, name: str, digest: str | None = None) -> bytes | None:
        """A manifest, config or listing, for parsing. None when absent, too large or not what its
        digest says: the blob check reports those, and untrusted bytes are not parsed."""
        size = self.store.size(name)
        if size is None:
            return None
        if size > MAX_MANIFEST_BYTES:
            self.problem(name, f"{size} bytes: too large for a manifest, config or listing", MANIFEST)
            return None
        try:
            with _Closing(self.store.open(name)) as fh:
                data = fh.read()
        except OSError as exc:
            self.problem(name, f"unreadable: {exc}", MISSING)
            return None
        if digest is not None and sha256_digest(data) != digest:
            return None
        return data

    def read_json(self, name: str, data: bytes) -> Any:
        try:
            return load_json(data, name)
        except ManifestError as exc:
            self.problem(name, str(exc), MANIFEST)
            return None

    # --- manifests and configs ----------------------------------------------------

    def config(self, name: str, digest: str | None, label: str) -> tuple[Any, list[str] | None, str | None]:
        """(parsed config, its diff_ids, the digest of its bytes); Nones when unreadable."""
        if name in self.configs:
            return self.configs[name]
        out: tuple[Any, list[str] | None, str | None] = (None, None, None)
        data = self.read_small(name, digest)
        if data is not None:
            doc = self.read_json(name, data)
            if doc is not None:
                try:
                    out = (doc, parse_diff_ids(data, label), sha256_digest(data))
                except ManifestError as exc:
                    self.problem(name, str(exc), MANIFEST)
                    out = (doc, None, sha256_digest(data))
        self.configs[name] = out
        return out

    def blob_name(self, digest: str, who: str) -> str | None:
        """blobs/<algo>/<hex> for a well-formed digest; a malformed one is a problem, never a path."""
        if _DIGEST.fullmatch(digest):
            return layout.blob_path(digest)
        self.problem(who, f"names a malformed digest {digest!r}", MANIFEST)
        return None

    def manifest(self, digest: str, size: int | None, media: str, label: str) -> _Manifest | None:
        name = self.blob_name(digest, f"manifest of {label}")
        if name is None:
            return None
        self.claim(name, f"manifest of {label}", digest, size)
        if digest in self.manifests:
            return self.manifests[digest]
        self.manifests[digest] = None
        data = self.read_small(name, digest)
        if data is None:
            return None
        doc = self.read_json(name, data)
        if not isinstance(doc, dict):
            if doc is not None:
                self.problem(name, f"manifest of {label} is not a JSON object", MANIFEST)
            return None
        media = media or str(doc.get("mediaType") or "")
        if media in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            self._nested_index(name, data, label)
            return None
        try:
            config, layers = parse_manifest(data, media or DOCKER_MANIFEST, label)
        except ManifestError as exc:
            self.problem(name, str(exc), MANIFEST)
            return None
        bad = [d.digest for d in (config, *layers) if not _DIGEST.fullmatch(d.digest)]
        if bad:
            self.problem(name, f"manifest of {label} names a malformed digest {bad[0]!r}", MANIFEST)
            return None
        config_name = layout.blob_path(config.digest)
        self.claim(config_name, f"config of {label}", config.digest, config.size)
        config_doc, diff_ids, _ = self.config(config_name, config.digest, label)
        if diff_ids is not None and len(diff_ids) != len(layers):
            self.problem(
                name,
                f"manifest of {label} lists {len(layers)} layers but its config has {len(diff_ids)} diff_ids",
                MANIFEST,
            )
            diff_ids = None
        for i, layer in enumerate(layers):
            self.claim(
                layout.blob_path(layer.digest),
                f"layer {i + 1} of {label}",
                layer.digest,
                layer.size,
                diff_ids[i] if diff_ids else None,
            )
        found = _Manifest(digest, config, tuple(layers), config_doc)
        self.manifests[digest] = found
        self.by_config.setdefault(config.digest, []).append(found)
        return found

    def _nested_index(self, name: str, data: bytes, label: str) -> None:
        """An index inside the layout: the platform manifests it holds are checked; an index may
        list platforms the layout does not hold (docker save keeps only what it has)."""
        try:
            entries = parse_index(data, name)
        except ManifestError as exc:
            self.problem(name, str(exc), MANIFEST)
            return
        for entry in entries:
            if (
                _DIGEST.fullmatch(entry.digest)
                and self.store.size(layout.blob_path(entry.digest)) is not None
            ):
                plat = f" {entry.platform}" if entry.platform else ""
                self.manifest(entry.digest, entry.size, entry.media_type, f"{label}{plat}")

    # --- index.json ---------------------------------------------------------------

    def check_index(self) -> None:
        data = self.read_small("index.json")
        if data is None:
            return
        oci = self.read_small("oci-layout")
        if oci is None:
            self.problem("oci-layout", "missing (an OCI layout with index.json needs it)", LAYOUT)
        else:
            doc = self.read_json("oci-layout", oci)
            if not isinstance(doc, dict) or not isinstance(doc.get("imageLayoutVersion"), str):
                self.problem("oci-layout", "has no imageLayoutVersion", LAYOUT)
        if self.read_json("index.json", data) is None:
            return
        try:
            entries = parse_index(data, "index.json")
        except ManifestError as exc:
            self.problem("index.json", str(exc), MANIFEST)
            return
        for i, entry in enumerate(entries):
            notes = dict(entry.annotations)
            ref_name = notes.get(layout.REF_NAME, "")
            full = notes.get(layout.CONTAINERD_NAME) or ref_name
            ref = _parse_name(full) or _parse_name(ref_name)
            label = str(ref) if ref is not None else f"index.json entry {i} ({_short(entry.digest)})"
            self.images += 1
            found = self.manifest(entry.digest, entry.size, entry.media_type, label)
            if ref_name:
                self.index_refs.setdefault(ref_name, entry.digest)
            self.index_entries.append((label, ref, entry.digest, found))

    # --- manifest.json ------------------------------------------------------------

    def check_docker(self, has_index: bool) -> None:
        data = self.read_small("manifest.json")
        if data is None:
            return
        doc = self.read_json("manifest.json", data)
        if doc is None:
            return
        if isinstance(doc, dict) and "layers" in doc and not has_index:
            self._dir_transport(data)
            return
        if not isinstance(doc, list):
            self.problem("manifest.json", "is not a JSON list", MANIFEST)
            return
        tagged: dict[str, tuple[int, str]] = {}  # RepoTag -> (entry, Config)
        for i, entry in enumerate(doc):
            self._docker_entry(i, entry, has_index, tagged)
        if not has_index:
            return
        for label, ref, _digest, found in self.index_entries:
            if ref is None or ref.repo_tag is None or found is None:
                continue
            want = ref.repo_tag
            config_name = layout.blob_path(found.config.digest)
            if want not in tagged:
                self.problem(
                    "manifest.json",
                    f"no entry has RepoTags {want}, which index.json names ({label}): "
                    "docker load would not tag it",
                    TAGS,
                )
            elif tagged[want][1] != config_name:
                self.problem(
                    f"manifest.json[{tagged[want][0]}]",
                    f"RepoTags {want} is on Config {tagged[want][1]}, but index.json's {label} "
                    f"has config {config_name}",
                    TAGS,
                )

    def _dir_transport(self, data: bytes) -> None:
        """skopeo's dir: transport: manifest.json is the image manifest, each blob a file named <hex>."""
        label = "manifest.json"
        try:
            config, layers = parse_manifest(data, DOCKER_MANIFEST, label)
        except ManifestError as exc:
            self.problem(label, str(exc), MANIFEST)
            return
        self.images += 1
        bad = [d.digest for d in (config, *layers) if not _DIGEST.fullmatch(d.digest)]
        if bad:
            self.problem(label, f"names a malformed digest {bad[0]!r}", MANIFEST)
            return
        config_name = config.digest.partition(":")[2]
        self.claim(config_name, "config of manifest.json", config.digest, config.size)
        _doc, diff_ids, _ = self.config(config_name, config.digest, label)
        if diff_ids is not None and len(diff_ids) != len(layers):
            self.problem(
                label, f"lists {len(layers)} layers but its config has {len(diff_ids)} diff_ids", MANIFEST
            )
            diff_ids = None
        for i, layer in enumerate(layers):
            who = f"layer {i + 1} of manifest.json"
            diff_id = diff_ids[i] if diff_ids else None
            self.claim(layer.digest.partition(":")[2], who, layer.digest, layer.size, diff_id)

    def _docker_entry(self, i: int, entry: Any, has_index: bool, tagged: dict[str, tuple[int, str]]) -> None:
        where = f"manifest.json[{i}]"
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("Config"), str)
            or not isinstance(entry.get("Layers"), list)
            or not all(isinstance(x, str) for x in entry["Layers"])
        ):
            self.problem(where, "malformed: needs Config (a string) and Layers (a list of strings)", MANIFEST)
            return
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            self.problem(where, "RepoTags is not a list of strings", TAGS)
            tags = []
        label = f"{where} ({tags[0]})" if tags else where
        if not has_index:
            self.images += 1
        names = [safe_name(n) for n in [entry["Config"], *entry["Layers"]]]
        if any(n is None for n in names):
            bad = [n for n, s in zip([entry["Config"], *entry["Layers"]], names, strict=True) if s is None]
            self.problem(label, f"names {bad[0]!r}, which points outside the layout", LAYOUT)
            return
        config_name, *layer_names = [n for n in names if n is not None]
        self.claim(config_name, f"Config of {label}")
        config_doc, diff_ids, config_digest = self.config(config_name, _digest_of_name(config_name), label)
        if diff_ids is not None and len(diff_ids) != len(layer_names):
            self.problem(
                label,
                f"lists {len(layer_names)} Layers but its config has {len(diff_ids)} diff_ids",
                MANIFEST,
            )
            diff_ids = None
        for j, name in enumerate(layer_names):
            self.claim(name, f"layer {j + 1} of {label}", diff_id=diff_ids[j] if diff_ids else None)
        if has_index and config_doc is not None and config_digest is not None:
            candidates = self.by_config.get(config_digest, [])
            if not candidates:
                self.problem(
                    label,
                    f"its Config {config_name} is not the config of any manifest index.json lists",
                    MANIFEST,
                )
            elif all(m.layer_names != layer_names for m in candidates):
                self.problem(
                    label,
                    f"its Layers differ from the layers of manifest {candidates[0].digest} (same config)",
                    MANIFEST,
                )
        for tag in tags:
            ref = _parse_name(tag)
            if ref is None or ref.tag is None:
                self.problem(label, f"RepoTags entry {tag!r} is not a valid name:tag", TAGS)
            elif tag in tagged:
                self.problem(
                    label, f"RepoTags {tag} is also claimed by manifest.json[{tagged[tag][0]}]", TAGS
                )
            else:
                tagged[tag] = (i, config_name)

    # --- catalog.json -------------------------------------------------------------

    def check_catalog(self) -> None:
        data = self.read_small(catalog.CATALOG)
        if data is None:
            return
        doc = self.read_json(catalog.CATALOG, data)
        images = doc.get("images") if isinstance(doc, dict) else None
        if not isinstance(images, dict) or not all(isinstance(t, dict) for t in images.values()):
            if doc is not None:
                self.problem(catalog.CATALOG, "malformed: expected {'images': {name: {tag: {...}}}}", CATALOG)
            return
        listed: set[str] = set()
        for name, tags in sorted(images.items()):
            for key, record in sorted(tags.items()):
                ref = self._catalog_entry(name, key, record)
                if ref is not None:
                    listed.add(str(ref))
        for ref_name in sorted(self.index_refs):
            if ref_name not in listed:
                self.problem("index.json", f"lists {ref_name}, which catalog.json does not", CATALOG)

    def _catalog_entry(self, name: str, key: str, record: Any) -> Reference | None:
        label = f"{name}@{key}" if key.startswith("sha256:") else f"{name}:{key}"
        where = f"{catalog.CATALOG} {label}"
        try:
            ref = reference.parse(label)
        except OccystrapError:
            self.problem(where, "is not a valid image name", CATALOG)
            return None
        if not isinstance(record, dict):
            self.problem(where, "is not an object", CATALOG)
            return ref
        want_config = record.get("config")
        want_layers = record.get("layers")
        manifest_file = record.get("manifest")
        file_name = safe_name(manifest_file) if isinstance(manifest_file, str) else None
        if file_name is None:
            self.problem(where, f"has no usable manifest file name ({manifest_file!r})", CATALOG)
        elif self.store.size(file_name) is None:
            self.problem(where, f"its manifest file {file_name} is missing", CATALOG)
        else:
            self._catalog_manifest_file(where, file_name, ref, want_config, want_layers)
        digest = record.get("manifest_digest")
        if not isinstance(digest, str) or not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
            self.problem(where, f"has no valid manifest_digest ({digest!r})", CATALOG)
        else:
            found = self.manifest(digest, None, "", label)
            if found is not None:
                if want_config != layout.blob_path(found.config.digest):
                    self.problem(where, f"config {want_config} is not manifest {_short(digest)}'s", CATALOG)
                if want_layers != found.layer_names:
                    self.problem(where, f"layers differ from manifest {_short(digest)}'s", CATALOG)
                self._catalog_platform(where, record.get("platform"), found)
            listed = self.index_refs.get(str(ref))
            if listed is None:
                self.problem(where, "is not listed in index.json", CATALOG)
            elif listed != digest:
                self.problem(where, f"is {digest} here but {listed} in index.json", CATALOG)
        rootfs = record.get("rootfs")
        if rootfs is not None:
            rootfs_name = safe_name(rootfs) if isinstance(rootfs, str) else None
            if rootfs_name is None or not self.store.is_dir(rootfs_name):
                self.problem(where, f"its root filesystem {rootfs} is missing", CATALOG)
        return ref

    def _catalog_manifest_file(
        self, where: str, file_name: str, ref: Reference, want_config: Any, want_layers: Any
    ) -> None:
        data = self.read_small(file_name)
        doc = self.read_json(file_name, data) if data is not None else None
        if doc is None:
            return
        if not (isinstance(doc, list) and len(doc) == 1 and isinstance(doc[0], dict)):
            self.problem(file_name, f"is not a one-entry manifest.json list ({where})", CATALOG)
            return
        entry = doc[0]
        if entry.get("Config") != want_config:
            self.problem(file_name, f"Config {entry.get('Config')} is not {want_config} ({where})", CATALOG)
        if entry.get("Layers") != want_layers:
            self.problem(file_name, f"Layers differ from {where}", CATALOG)
        want_tags = [ref.repo_tag] if ref.repo_tag else []
        if (entry.get("RepoTags") or []) != want_tags:
            self.problem(file_name, f"RepoTags {entry.get('RepoTags')} should be {want_tags}", TAGS)

    def _catalog_platform(self, where: str, platform: Any, found: _Manifest) -> None:
        doc = found.config_doc
        if not isinstance(platform, str) or not isinstance(doc, dict):
            return
        os_, _, rest = platform.partition("/")
        arch = rest.partition("/")[0]
        if (doc.get("os"), doc.get("architecture")) != (os_, arch):
            self.problem(
                where,
                f"platform {platform}, but its config says {doc.get('os')}/{doc.get('architecture')}",
                CATALOG,
            )

    # --- blobs --------------------------------------------------------------------

    def check_blob(self, claim: _Claim) -> _BlobOutcome:
        name = claim.name
        size = self.store.size(name)
        if size is None:
            return _BlobOutcome(
                name, False, 0, False, Problem(name, f"missing ({claim.referrers()})", MISSING)
            )
        if claim.digest is not None and not claim.digest.startswith("sha256:"):
            msg = f"cannot check digest {claim.digest}: only sha256 is supported"
            return _BlobOutcome(name, True, 0, False, Problem(name, msg, DIGEST))
        blob_hash = hashlib.sha256()
        plain_hash = hashlib.sha256()
        want_plain = bool(claim.diff_ids)
        decoder = None
        corrupt: str | None = None
        seen = 0
        try:
            with _Closing(self.store.open(name)) as fh:
                while chunk := fh.read(CHUNK):
                    if self._stop.is_set():
                        raise _Cancelled
                    seen += len(chunk)
                    blob_hash.update(chunk)
                    if want_plain and corrupt is None:
                        if decoder is None:
                            decoder = decoder_for(chunk[:4])
                        try:
                            decoder.feed(chunk, plain_hash.update)
                        except Exception as exc:  # zlib.error, ZstdError, IntegrityError
                            corrupt = str(exc) or type(exc).__name__
            if want_plain and corrupt is None:
                try:
                    (decoder or decoder_for(b"")).finish()
                except Exception as exc:
                    corrupt = str(exc) or type(exc).__name__
        except OSError as exc:
            return _BlobOutcome(name, True, seen, False, Problem(name, f"unreadable: {exc}", MISSING))
        return _BlobOutcome(
            name, True, seen, want_plain, self._judge(claim, seen, blob_hash, plain_hash, corrupt)
        )

    @staticmethod
    def _judge(
        claim: _Claim, seen: int, blob_hash: Any, plain_hash: Any, corrupt: str | None
    ) -> Problem | None:
        """The first thing wrong with a blob: size (truncation), digest, decompression, diff_id."""
        name = claim.name
        for claimed, who in claim.sizes.items():
            if claimed != seen:
                hint = " (truncated)" if seen < claimed else ""
                return Problem(name, f"is {seen} bytes, {who} should be {claimed}{hint}", SIZE)
        got = "sha256:" + blob_hash.hexdigest()
        if claim.digest is not None and got != claim.digest:
            return Problem(name, f"content hashes to {got}, not {claim.digest} ({claim.referrers()})", DIGEST)
        if not claim.diff_ids:
            return None
        if corrupt is not None:
            return Problem(name, f"does not decompress: {corrupt} ({claim.referrers()})", CORRUPT)
        diff = "sha256:" + plain_hash.hexdigest()
        for diff_id, who in claim.diff_ids.items():
            if diff_id != diff:
                return Problem(
                    name, f"uncompresses to {diff}, but the config says {diff_id} for {who}", DIFF_ID
                )
        return None

    def check_blobs(self) -> tuple[int, int, int]:
        for name in self.store.blob_names():
            if name not in self.claims:
                self.claims[name] = _Claim(name, _digest_of_name(name))
        claims = [self.claims[n] for n in sorted(self.claims)]
        # Largest first, so the last worker to finish is not the one left with the big layer.
        order = sorted(claims, key=lambda c: -(self.store.size(c.name) or 0))
        blobs = total = diff_ids = 0
        outcomes: dict[str, _BlobOutcome] = {}
        pool = ThreadPoolExecutor(self.workers if self.store.parallel else 1, thread_name_prefix="verify")
        try:
            for outcome in pool.map(self.check_blob, order):
                outcomes[outcome.name] = outcome
                if outcome.present:
                    self.note(f"checked {outcome.name} ({human(outcome.size)})")
        except BaseException:
            self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        for c in claims:
            outcome = outcomes[c.name]
            if outcome.present:
                blobs += 1
                total += outcome.size
                diff_ids += outcome.decompressed and outcome.problem is None
            if outcome.problem is not None:
                self.problems.append(outcome.problem)
        return blobs, total, diff_ids


def open_store(path: Path) -> tuple[_Store, str]:
    if path.is_dir():
        kind = "merged directory" if (path / catalog.CATALOG).is_file() else "directory"
        return _DirStore(path), kind
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    return _TarStore(path), "tarball"


def verify(
    path: Path, workers: int = DEFAULT_WORKERS, note: Callable[[str], None] = lambda message: None
) -> Result:
    """Check the layout at `path` (tarball or directory); what is wrong comes back as Problems."""
    store, kind = open_store(path)
    try:
        v = _Verifier(store, max(1, workers), note)
        has_index = store.size("index.json") is not None
        has_docker = store.size("manifest.json") is not None
        if not has_index and not has_docker:
            raise ManifestError(f"{path} has neither index.json nor manifest.json: not an image layout")
        if has_index:
            v.check_index()
        if has_docker:
            v.check_docker(has_index)
        v.check_catalog()
        blobs, total, diff_ids = v.check_blobs()
        if kind == "tarball" and store.size(catalog.CATALOG) is not None:
            kind = "tarball of a merged directory"
        return Result(
            str(path),
            kind,
            v.images,
            sum(1 for m in v.manifests.values() if m is not None),
            blobs,
            total,
            diff_ids,
            tuple(v.problems),
        )
    finally:
        store.close()


def report_json(result: Result) -> str:
    return json.dumps(result.to_json(), indent=2)
