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
- a delta bundle (``occystrap-delta.json``): complete in itself except the blobs it declares
  left to its base; those are not problems, anything else missing is.
- a shard's output (``occystrap-shard.json``, `mirror --shard`): the same, for the blobs it
  declares the other shards'; the result names it partial on purpose.

A damaged layout is a normal result (`Result` with `Problem`s, one per blob or inconsistency);
only a PATH that does not exist or cannot be read at all raises. Blobs are
checked by a few worker threads (hashlib, ISA-L and zstd release the GIL), each with its own file
handle, so a tarball is read with ``pread`` at the members' offsets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio

from occystrap.delta.meta import DELTA_NAME
from occystrap.delta.meta import parse as parse_delta
from occystrap.errors import ManifestError
from occystrap.layout import catalog
from occystrap.layout.store import DirStore, Store, open_store
from occystrap.shard.marker import MARKER_NAME, ShardMeta
from occystrap.shard.marker import parse as parse_marker
from occystrap.verify.blobs import check_blobs
from occystrap.verify.catalogcheck import check_catalog
from occystrap.verify.dockerjson import check_docker
from occystrap.verify.documents import check_index
from occystrap.verify.result import LAYOUT, Problem, Result, VerifyFailedError, report_json
from occystrap.verify.state import State

__all__ = ["Problem", "Result", "VerifyFailedError", "report_json", "verify"]


def _kind(store: Store, v: State, shard: ShardMeta | None) -> str:
    if shard is not None:
        return shard.partial()
    if v.base:
        return f"delta bundle, {len(v.base)} blob(s) left to its base"
    if isinstance(store, DirStore):
        return "merged directory" if store.size(catalog.CATALOG) is not None else "directory"
    return "tarball of a merged directory" if store.size(catalog.CATALOG) is not None else "tarball"


def _delta(v: State) -> None:
    """A delta bundle's declared base blobs: absent by design, so not reported missing."""
    data = v.read_small(DELTA_NAME)
    if data is None:
        return
    try:
        meta = parse_delta(data, DELTA_NAME)
    except ManifestError as exc:
        v.problem(DELTA_NAME, str(exc), LAYOUT)
        return
    v.base = frozenset(b.digest.path for b in meta.base_blobs)


def _shard(v: State) -> ShardMeta | None:
    """A shard's output: the other shards' blobs are absent by design, so not reported missing."""
    data = v.read_small(MARKER_NAME)
    if data is None:
        return None
    try:
        meta = parse_marker(data, MARKER_NAME)
    except ManifestError as exc:
        v.problem(MARKER_NAME, str(exc), LAYOUT)
        return None
    v.base |= frozenset(b.digest.path for b in meta.elsewhere)
    return meta


async def verify(
    path: Path, limiter: anyio.CapacityLimiter, note: Callable[[str], None] = lambda message: None
) -> Result:
    """Check the layout at `path` (tarball or directory); what is wrong comes back as Problems."""
    store = open_store(path)
    try:
        v = State(store, note)
        _delta(v)
        shard = _shard(v)
        has_index = store.size("index.json") is not None
        has_docker = store.size("manifest.json") is not None
        if not has_index and not has_docker:
            raise ManifestError(f"{path} has neither index.json nor manifest.json: not an image layout")
        if has_index:
            check_index(v)
        if has_docker:
            check_docker(v, has_index)
        check_catalog(v)
        blobs, total, diff_ids = await check_blobs(v, limiter)
        manifests = sum(1 for m in v.manifests.values() if m is not None)
        return Result(
            str(path), _kind(store, v, shard), v.images, manifests, blobs, total, diff_ids, tuple(v.problems)
        )
    finally:
        store.close()
