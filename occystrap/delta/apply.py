"""import BUNDLE DEST: a delta (or full) bundle applied onto the directory or registry that
holds its base.

Before anything is written, every blob the delta leaves to its base must be at DEST:
re-hashed in a directory, found by HEAD (in the repository that needs it, or one it can
be mounted from) in a registry. Then it is an ordinary copy from the bundle: the engine
moves, verifies and commits as everywhere else. The base's blobs are skipped ("base");
should one vanish meanwhile, the source says which and why rather than "not in the bundle".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio

from occystrap import digest as digests
from occystrap.concurrency import gather
from occystrap.delta.meta import BASE_REASON, DELTA_NAME, BaseBlob, DeltaMeta, parse
from occystrap.engine import Item
from occystrap.errors import NotFoundError
from occystrap.layout.reader import LayoutReader
from occystrap.layout.writer import blob_path, streamed
from occystrap.model import Descriptor, Layer, Node
from occystrap.reference import Reference
from occystrap.registry.upload import Uploader
from occystrap.sinks.base import BlobTarget, Sink
from occystrap.sources.base import Fetched, Source

SHOWN = 20  # missing blobs named in the one error line; the rest are counted


class IncompleteBaseError(NotFoundError):
    """DEST lacks blobs a delta leaves to its base: nothing was written."""


def read_meta(reader: LayoutReader) -> DeltaMeta | None:
    data = reader.small(DELTA_NAME)
    return parse(data, f"{reader.where}:{DELTA_NAME}") if data is not None else None


def refusal(meta: DeltaMeta, missing: Sequence[BaseBlob], bundle: str, dest: str) -> IncompleteBaseError:
    names = [b.digest[:19] for b in sorted(missing, key=lambda b: b.digest)]
    more = f", +{len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return IncompleteBaseError(
        f"{dest} lacks {len(missing)} of the {len(meta.base_blobs)} blobs {bundle} leaves to its"
        f" {meta.describe()}: {', '.join(names[:SHOWN])}{more}; import that base first (nothing written)"
    )


def _held_file(root: Path, blob: BaseBlob) -> bool:
    try:
        return digests.of_file(root / blob_path(blob.digest)) == (blob.digest, blob.size)
    except OSError:
        return False


async def missing_in_dir(
    root: Path, blobs: Sequence[BaseBlob], limiter: anyio.CapacityLimiter
) -> list[BaseBlob]:
    """The base blobs root does not hold intact (each re-hashed: a name proves nothing)."""
    if not root.is_dir():
        return list(blobs)
    calls = [lambda b=b: anyio.to_thread.run_sync(_held_file, root, b) for b in blobs]
    held = await gather(calls, limiter)
    return [b for b, ok in zip(blobs, held, strict=True) if not ok]


async def missing_in_registry(
    uploader: Uploader,
    items: Sequence[Item],
    blobs: Sequence[BaseBlob],
    elsewhere: Sequence[Reference],
    limiter: anyio.CapacityLimiter,
) -> tuple[list[BaseBlob], dict[str, Reference]]:
    """(base blobs the registry lacks, digest -> a repository to mount it from). A blob
    counts as held when every repository that needs it has it, or some repository of this
    registry (the delta's, or where the base's images were placed) has it to mount from."""
    needs: dict[str, list[Reference]] = {}
    for item in items:
        for layer in streamed([item.node]):
            repos = needs.setdefault(layer.descriptor.digest, [])
            if all(r.repository != item.node.reference.repository for r in repos):
                repos.append(item.node.reference)
    candidates = list({r.repository: r for r in [*(i.node.reference for i in items), *elsewhere]}.values())

    async def one(blob: BaseBlob) -> Reference | None:
        desc = Descriptor("", blob.digest, blob.size)
        wanted = needs.get(blob.digest, [])
        lacking = [r for r in wanted if not await uploader.has_blob(r, desc)]
        if wanted and not lacking:
            return wanted[0]
        for repo in candidates:
            if repo not in lacking and await uploader.has_blob(repo, desc):
                return repo
        return None

    holders = await gather([lambda b=b: one(b) for b in blobs], limiter)  # type: ignore[misc]
    missing = [b for b, h in zip(blobs, holders, strict=True) if h is None]
    known: dict[str, Reference] = {b.digest: h for b, h in zip(blobs, holders, strict=True) if h is not None}
    return missing, known


Fallback = Callable[[Descriptor, int], AsyncIterator[bytes]]


class DeltaSource:
    """The bundle as a source; a blob left to the base comes from the fallback (a registry
    repository holding it), or fails naming the base it should have come with."""

    def __init__(
        self,
        inner: Source,
        reader: LayoutReader,
        meta: DeltaMeta | None,
        dest: str,
        fallback: Fallback | None = None,
    ) -> None:
        self.inner = inner
        self.reader = reader
        self.base = meta.base_digests if meta is not None else frozenset()
        self.meta = meta
        self.dest = dest
        self.fallback = fallback

    @property
    def name(self) -> str:
        return self.inner.name

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        return await self.inner.manifest(ref, target)

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        if desc.digest in self.base and self.reader.blob_size(desc.digest) is None:
            if self.fallback is None:
                assert self.meta is not None
                raise IncompleteBaseError(
                    f"{desc.digest} is left by {self.name} to its {self.meta.describe()},"
                    f" and {self.dest} no longer holds it"
                )
            async for chunk in self.fallback(desc, offset):
                yield chunk
            return
        async for chunk in self.inner.blob(ref, desc, offset):
            yield chunk

    async def tags(self, ref: Reference) -> list[str]:
        return await self.inner.tags(ref)

    async def aclose(self) -> None:
        await self.inner.aclose()


class BaseAware:
    """A sink whose base blobs were checked already: skipped as "base" (for a directory,
    without hashing them again), or as the destination itself finds them (a registry)."""

    def __init__(self, inner: Sink, base: frozenset[str], checked: bool) -> None:
        self.inner = inner
        self.base = base
        self.checked = checked
        self.check_diff_ids = inner.check_diff_ids
        self.added: dict[str, int] = {}  # blobs written, for the closing line
        self.from_base: dict[str, int] = {}

    @property
    def destination(self) -> str:
        return self.inner.destination

    async def begin(self, nodes: list[Node]) -> None:
        await self.inner.begin(nodes)

    async def present(self, layer: Layer, refs: Sequence[Reference]) -> str | None:
        desc = layer.descriptor
        ours = desc.digest in self.base
        reason = BASE_REASON if ours and self.checked else await self.inner.present(layer, refs)
        if ours and reason is not None:
            self.from_base[desc.digest] = desc.size
            return BASE_REASON
        return reason

    async def open_blob(self, layer: Layer, refs: Sequence[Reference]) -> BlobTarget | None:
        target = await self.inner.open_blob(layer, refs)
        if target is not None:
            self.added[layer.descriptor.digest] = layer.descriptor.size
        return target

    async def commit(self, nodes: list[Node]) -> None:
        await self.inner.commit(nodes)

    async def abort(self, keep: bool) -> None:
        await self.inner.abort(keep)
