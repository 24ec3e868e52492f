"""A registry as a sink: blobs uploaded (or mounted, or found there already), then manifests
children first, indexes next, tags last, so a tag only ever names what is complete.

Blob bytes stream from the source through the engine's checks into one PUT per blob
(bounded: a couple of batches in flight), with no copy on disk. A blob that several
repositories need is uploaded once and mounted into the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import anyio

from occystrap.concurrency import gather
from occystrap.digest import Digest
from occystrap.events import Info, ManifestPushed, Reporter
from occystrap.layout.writer import streamed
from occystrap.model import Descriptor, Image, Layer, Node, walk
from occystrap.reference import Reference
from occystrap.registry.client import RegistryClient
from occystrap.registry.retry import Retryable
from occystrap.registry.upload import Uploader
from occystrap.sinks.base import RetryBlob

# Batches queued between the engine and an upload's body: enough to keep the socket busy.
QUEUE_DEPTH = 2
# Roots whose configs and manifests go up at once at commit: small requests, mostly latency.
COMMIT_PARALLEL = 8


def repo_of(ref: Reference) -> Reference:
    return Reference(ref.registry, ref.repository)


class RegistrySink:
    check_diff_ids = False  # a registry never looks inside layers; the digest is checked

    def __init__(
        self,
        client: RegistryClient,
        reporter: Reporter,
        destination: str,
        known: dict[str, Reference] | None = None,
        dry_run: bool = False,
        tags_checked: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        """known: blob digest -> a repository of this same registry that holds it (a copy
        within one registry mounts instead of moving bytes)."""
        self.client = client
        self.uploader = Uploader(client)
        self.reporter = reporter
        self._destination = destination
        self._known: dict[str, Reference] = dict(known or {})
        self._have: set[tuple[str, str]] = set()  # (repository, digest) known to be there
        self.dry_run = dry_run  # look (HEAD) but never write: no mount, no upload, no manifest
        # The caller has HEADed every tag already (mirror, push): no second look before writing.
        self.tags_checked = tags_checked
        self.chunk_size = chunk_size  # PATCH uploads of at most this many bytes; None: one PUT
        self._limit = anyio.CapacityLimiter(COMMIT_PARALLEL)

    @property
    def destination(self) -> str:
        return self._destination

    async def begin(self, nodes: list[Node]) -> None:
        if self.dry_run:
            return

        # Refused credentials or scope show up now, before a byte moves: a POST needs push.
        async def probe(repo: Reference) -> None:
            await self.uploader.cancel(repo, await self.uploader.start(repo))

        repos = dict.fromkeys(repo_of(n.reference) for n in nodes)
        await gather([lambda r=r: probe(r) for r in repos], self._limit)  # type: ignore[misc]

    async def _ensure(self, layer: Layer, ref: Reference) -> bool:
        """Whether ref's repository holds the blob now (found, or mounted from a known one)."""
        desc = layer.descriptor
        key = (ref.repository, desc.digest)
        if key in self._have:
            return True
        if await self.uploader.has_blob(ref, desc):
            self._have.add(key)
            self._known.setdefault(desc.digest, ref)
            return True
        holder = self._known.get(desc.digest)
        if holder is None or holder.registry != ref.registry or holder.repository == ref.repository:
            return False
        if self.dry_run:
            return True  # it would be mounted
        session = await self.uploader.mount(ref, desc, holder.repository)
        if session is not None:
            # The registry opened an upload instead (the blob is not visible to us there).
            await self.uploader.cancel(ref, session)
            return False
        self._have.add(key)
        return True

    async def present(self, layer: Layer, refs: Sequence[Reference]) -> str | None:
        mounted = False
        for ref in refs:
            had = (ref.repository, layer.descriptor.digest) in self._have or await self.uploader.has_blob(
                ref, layer.descriptor
            )
            if had:
                self._have.add((ref.repository, layer.descriptor.digest))
                self._known.setdefault(layer.descriptor.digest, ref)
                continue
            if not await self._ensure(layer, ref):
                return None
            mounted = True
        return "mounted" if mounted else "present"

    async def open_blob(self, layer: Layer, refs: Sequence[Reference]) -> Upload:
        return Upload(self, layer.descriptor, refs)

    async def landed(self, desc: Descriptor, refs: Sequence[Reference]) -> None:
        """An upload to refs[0] completed: every other repository that needs it gets it too."""
        self._have.add((refs[0].repository, desc.digest))
        self._known[desc.digest] = refs[0]
        for ref in refs[1:]:
            await self._place(Layer(desc, None), ref)

    async def _place(self, layer: Layer, ref: Reference) -> None:
        """Make sure ref's repository holds a blob this registry holds elsewhere: mounted, or,
        where the registry will not mount, copied across from the repository that has it."""
        if await self._ensure(layer, ref):
            return
        holder = self._known.get(layer.descriptor.digest)
        if holder is None or holder.registry != ref.registry:
            raise RetryBlob(f"{layer.descriptor.digest} is missing from {ref.repository}")
        location = await self.uploader.start(ref)
        body = self.client.blob_chunks(holder, layer.descriptor)
        await self.uploader.put_stream(ref, location, layer.descriptor, body)
        self._have.add((ref.repository, layer.descriptor.digest))

    async def holds(self, root: Node) -> Digest | None:
        """What the destination's tag (or digest) names now: one HEAD, no pull counted."""
        ref = root.reference
        return await self.client.head_manifest(ref, ref.tag or root.manifest.digest)

    async def commit(self, nodes: list[Node]) -> None:
        # Measured: one root after another, seven round trips each, was a third of a 20-tag
        # mirror into a registry. Configs go up for every root at once, then each root's
        # manifests (order matters only within a root), several roots at a time.
        await gather([lambda r=r: self._blobs_of(r) for r in nodes], self._limit)  # type: ignore[misc]
        await gather([lambda r=r: self._manifests_of(r) for r in nodes], self._limit)  # type: ignore[misc]

    async def _blobs_of(self, root: Node) -> None:
        """Every blob root needs in its repository: image configs (held in memory) and, for a
        streamed blob moved for another repository, a mount or a copy within the registry."""
        ref = root.reference
        for node in walk(root):
            if isinstance(node, Image) and not await self._ensure(Layer(node.config, None), ref):
                await self.uploader.put_blob(ref, node.config, node.config_bytes)
                self._have.add((ref.repository, node.config.digest))
            for layer in streamed([node]):
                await self._place(layer, ref)

    async def _manifests_of(self, root: Node) -> None:
        """Children by digest, the root by digest, then its tag: the commit point. The root goes
        up by digest first so that the registry's Docker-Content-Digest is checked before any
        tag names it (a registry that stores other bytes must not get a tag on them)."""
        ref = root.reference

        async def by_digest(node: Node, look: bool = True) -> None:
            digest = node.manifest.digest
            if look and await self.client.head_manifest(ref, digest, push=True) == digest:
                return
            await self.uploader.put_manifest(ref, digest, node.manifest_bytes, node.manifest.media_type)
            self.reporter.emit(ManifestPushed(str(node.reference), digest, None))

        await gather([lambda n=n: by_digest(n) for n in walk(root)[:-1]])  # type: ignore[misc]
        digest = root.manifest.digest
        looked = ref.tag and not self.tags_checked
        if looked and await self.client.head_manifest(ref, ref.tag or "", push=True) == digest:
            self.reporter.emit(Info(f"{ref} already points at {digest.short}"))
            return
        await by_digest(root, look=not ref.tag)
        if ref.tag:
            await self.uploader.put_manifest(ref, ref.tag, root.manifest_bytes, root.manifest.media_type)
            self.reporter.emit(ManifestPushed(str(ref), digest, ref.tag))

    async def abort(self, keep: bool) -> None:
        # Nothing is tagged before commit, and blobs a registry holds are harmless: a re-run
        # finds them with HEAD and sends nothing twice.
        return None


class Upload:
    """One blob streamed into one PUT; fed on the event loop (StreamFed)."""

    def __init__(self, sink: RegistrySink, desc: Descriptor, refs: Sequence[Reference]) -> None:
        self.sink = sink
        self.desc = desc
        self.refs = refs
        self._queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(QUEUE_DEPTH)
        self._task: asyncio.Task[None] | None = None
        self._location: str | None = None

    def write_raw(self, data: bytes) -> None:
        return None  # the bytes go up from the event loop (feed), not from the stage thread

    async def _body(self) -> AsyncIterator[bytes]:
        while (batch := await self._queue.get()) is not None:
            for chunk in batch:
                yield chunk

    async def _put(self) -> None:
        ref = self.refs[0]
        self._location = await self.sink.uploader.start(ref)
        step = self.sink.chunk_size
        if not step:
            await self.sink.uploader.put_stream(ref, self._location, self.desc, self._body())
            return
        # PATCH chunks for registries (or proxies in front of them) that cap a request's body:
        # each chunk streams from the same queue, so memory stays at a couple of batches.
        stream = _Chunks(self._queue)
        done = 0
        while done < self.desc.size:
            size = min(step, self.desc.size - done)
            self._location = await self.sink.uploader.patch(
                ref, self._location, done, size, stream.take(size)
            )
            done += size
        await stream.end()
        await self.sink.uploader.close(ref, self._location, self.desc)

    async def feed(self, batch: list[bytes]) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._put())
        put = asyncio.ensure_future(self._queue.put(batch))
        done, _ = await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:
            put.cancel()
            await self._outcome()  # the upload ended early: its error, or a protocol fault
            raise RetryBlob(f"the upload of {self.desc.digest} ended before its last byte")

    async def _outcome(self) -> None:
        assert self._task is not None
        try:
            await self._task
        except Retryable as exc:
            raise RetryBlob(exc.reason) from None

    async def commit(self, plain_size: int) -> None:
        if self._task is None:  # an empty blob: nothing was fed
            self._task = asyncio.ensure_future(self._put())
        await self._queue.put(None)
        await self._outcome()
        await self.sink.landed(self.desc, self.refs)

    async def abort(self, keep: bool) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._location is not None:
            await self.sink.uploader.cancel(self.refs[0], self._location)


class _Chunks:
    """Bytes from the engine's batches, handed out in pieces of exact sizes."""

    def __init__(self, queue: asyncio.Queue[list[bytes] | None]) -> None:
        self._queue = queue
        self._rest: list[bytes] = []
        self._ended = False

    async def _next(self) -> bytes | None:
        while not self._rest:
            if self._ended:
                return None
            batch = await self._queue.get()
            if batch is None:
                self._ended = True
                return None
            self._rest = [c for c in batch if c]
        return self._rest.pop(0)

    async def take(self, size: int) -> AsyncIterator[bytes]:
        while size > 0:
            chunk = await self._next()
            if chunk is None:
                return  # the registry then sees a short chunk and says so
            if len(chunk) > size:
                chunk, rest = chunk[:size], chunk[size:]
                self._rest.insert(0, rest)
            size -= len(chunk)
            yield chunk

    async def end(self) -> None:
        """Wait for the end of the stream (everything was sent, so nothing else may come)."""
        while await self._next() is not None:
            raise RetryBlob("the blob had more bytes than its descriptor says")
