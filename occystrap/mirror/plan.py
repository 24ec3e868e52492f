"""A spec (or a lock) becomes a plan: every image, tag and platform resolved, concurrently.

Tag lists, manifests and configs are fetched at once under one limiter, through the one
resolve. With `platforms: all` a tag's index is kept whole (one item, the index); with a
list of platforms, the primary one (the one --platform names, else the first) is stored
under the tag and every other one under its own manifest digest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from occystrap import reference, referrers
from occystrap.concurrency import gather, library_error
from occystrap.digest import Digest
from occystrap.errors import ManifestError, OccystrapError, UsageError
from occystrap.events import NullReporter, Reporter
from occystrap.mediatypes import INDEX_TYPES
from occystrap.mirror.lockfile import INDEX_KEY, Lock
from occystrap.mirror.spec import ImageSpec, MirrorSpec
from occystrap.mirror.tags import select_tags
from occystrap.model import Index, Node, walk, with_reference
from occystrap.platform import ALL, Platform, Platforms, choose
from occystrap.reference import Reference
from occystrap.resolve import Resolver, resolved_event
from occystrap.sources.base import Source


@dataclass(frozen=True)
class Planned:
    """One root to copy: where it came from (name, tag or digest, platform) and what it is."""

    source: str  # the repository's full name
    key: str  # the tag or digest asked for
    platform: str  # "linux/amd64", or "index" for a whole index
    node: Node

    @property
    def manifest_digest(self) -> str:
        return self.node.manifest.digest

    @property
    def source_ref(self) -> Reference:
        return self.node.reference


@dataclass
class Plan:
    items: list[Planned] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    errors: dict[str, OccystrapError] = field(default_factory=dict)  # the failures' errors, for reports

    def fail(self, name: str, err: OccystrapError, message: str | None = None) -> None:
        self.failures[name] = message or str(err)
        self.errors[name] = err

    @property
    def nodes(self) -> list[Node]:
        return [p.node for p in self.items]

    def lock(self) -> Lock:
        out: Lock = {}
        for p in self.items:
            out.setdefault(p.source, {}).setdefault(p.key, {})[p.platform] = p.manifest_digest
        return out


def platform_key(node: Node) -> str:
    if isinstance(node, Index):
        return INDEX_KEY
    return str(node.platform) if node.platform is not None else "unknown/unknown"


def key_ref(repo: Reference, key: str) -> Reference:
    is_digest = key.startswith("sha256:")
    return Reference(repo.registry, repo.repository, None if is_digest else key, key if is_digest else None)


def _primary(nodes: list[Node], default: Platform) -> int:
    """Which of several platforms is stored under the tag: the default one, else the first."""
    at = choose([n.platform for n in nodes], default)
    return at if at is not None else 0


def _store(ref: Reference, nodes: list[Node], default: Platform) -> list[Node]:
    primary = _primary(nodes, default)
    return [
        with_reference(
            n, ref if i == primary else Reference(ref.registry, ref.repository, digest=n.manifest.digest)
        )
        for i, n in enumerate(nodes)
    ]


class Planner:
    def __init__(self, source: Source, default_platform: Platform, limiter: anyio.CapacityLimiter) -> None:
        self.source = source
        self.default = default_platform
        self.limiter = limiter
        self.resolver = Resolver(source, limiter)

    async def resolve_key(self, repo: Reference, key: str, wanted: Platforms) -> list[Planned]:
        """Every wanted platform of repo:key (a tag or a digest)."""
        ref = key_ref(repo, key)
        found = await self.resolver.resolve(ref, wanted)
        nodes = found.nodes if wanted == ALL else _store(ref, found.nodes, self.default)
        return [Planned(repo.full_name, key, platform_key(n), n) for n in nodes]

    async def tags_of(self, spec: ImageSpec) -> list[str]:
        available: list[str] = []
        if spec.needs_tag_list:
            async with self.limiter:
                available = await self.source.tags(spec.repo)
        keys = select_tags(available, spec.tags, spec.include, spec.exclude, spec.latest, spec.version_range)
        return keys + [d for d in spec.digests if d not in keys]

    async def plan_image(self, spec: ImageSpec) -> list[Planned]:
        keys = await self.tags_of(spec)
        if not keys:
            raise ManifestError(f"{spec.name}: no tag matches the spec's filters")
        wanted = spec.wanted_platforms(self.default)
        groups = await gather([lambda k=k: self.resolve_key(spec.repo, k, wanted) for k in keys])  # type: ignore[misc]
        return [p for g in groups for p in g]

    async def plan_locked(self, name: str, tags: dict[str, dict[str, str]]) -> list[Planned]:
        ref = reference.parse(name)
        repo = Reference(ref.registry, ref.repository)

        async def one_key(key: str, platforms: dict[str, str]) -> list[Planned]:
            ref = key_ref(repo, key)
            if INDEX_KEY in platforms:
                pinned = Reference(repo.registry, repo.repository, digest=platforms[INDEX_KEY])
                node = await self.resolver.node(pinned, await self.resolver.fetch(pinned))
                return [Planned(repo.full_name, key, INDEX_KEY, with_reference(node, ref))]
            nodes = []
            for plat, digest in platforms.items():
                pinned = Reference(repo.registry, repo.repository, digest=digest)
                fetched = await self.resolver.fetch(pinned)
                if fetched.media_type in INDEX_TYPES:
                    raise ManifestError(f"{pinned}: the lock names an index, not a platform manifest")
                nodes.append(await self.resolver.node(pinned, fetched, Platform.parse(plat)))
            return [
                Planned(repo.full_name, key, platform_key(n), n) for n in _store(ref, nodes, self.default)
            ]

        calls = [lambda k=k, p=p: one_key(k, p) for k, p in sorted(tags.items())]
        groups = await gather(calls)
        return [p for g in groups for p in g]


def subjects(node: Node) -> list[Digest]:
    """The manifests something may refer to: the node's, and an index's children's."""
    return [n.manifest.digest for n in walk(node)][::-1]


async def with_referrers(planner: Planner, planned: list[Planned], repos: set[str]) -> list[Planned]:
    """Planned items for what refers to each planned manifest of the repositories in repos,
    two levels deep (the signature of an attestation too)."""
    seen = {(p.source, p.key) for p in planned}
    tags: dict[str, list[str]] = {}
    out: list[Planned] = []
    frontier = [p for p in planned if p.source in repos]
    for _ in range(2):

        async def one(p: Planned, subject: str) -> list[Planned]:
            repo = Reference(p.source_ref.registry, p.source_ref.repository)
            if p.source not in tags:
                async with planner.limiter:
                    tags[p.source] = await planner.source.tags(repo)
            found = []
            for key in await referrers.keys(planner.source, repo, subject, tags[p.source]):
                if (p.source, key) not in seen:
                    seen.add((p.source, key))
                    found += await planner.resolve_key(repo, key, ALL)
            return found

        calls = [lambda p=p, d=d: one(p, d) for p in frontier for d in subjects(p.node)]
        frontier = [q for group in await gather(calls) for q in group]
        out += frontier
    return out


def _unique(items: list[Planned]) -> list[Planned]:
    """One item per stored reference (two tags of one index share their other platforms)."""
    seen: set[str] = set()
    out = []
    for p in items:
        ident = str(p.node.reference)
        if ident not in seen:
            seen.add(ident)
            out.append(p)
    return out


Job = tuple[str, Callable[[], Awaitable[list[Planned]]]]


async def _collect(jobs: list[Job], keep_going: bool, reporter: Reporter) -> Plan:
    """Run the planning jobs; each image's items are announced (ImageResolved) as soon as known."""
    result = Plan()
    found: dict[str, list[Planned]] = {}

    async def one(name: str, call: Callable[[], Awaitable[list[Planned]]]) -> None:
        try:
            items = _unique(await call())
        except BaseException as exc:
            err = library_error(exc)
            if err is None or not keep_going:
                raise
            result.fail(name, err)
            return
        found[name] = items
        for p in items:
            reporter.emit(resolved_event(p.node))

    async with anyio.create_task_group() as tg:
        for name, call in jobs:
            tg.start_soon(one, name, call)
    for name, _ in jobs:
        result.items.extend(found.get(name, []))
    # A canonical order (not the spec's, not the registry's, not completion order): the same
    # content always gives the same bundle bytes and index.json, from a spec or from its lock.
    result.items.sort(key=lambda p: (p.source, p.key, p.platform))
    return result


async def plan(
    planner: Planner, spec: MirrorSpec, keep_going: bool = False, reporter: Reporter | None = None
) -> Plan:
    """Resolve every image, tag and platform the spec names, concurrently."""
    jobs: list[Job] = [(s.name, lambda s=s: planner.plan_image(s)) for s in spec.images]  # type: ignore[misc]
    names = [n for n, _ in jobs]
    if len(set(names)) != len(names):
        raise UsageError("the spec names an image more than once; merge its entries")
    reporter = reporter or NullReporter()
    result = await _collect(jobs, keep_going, reporter)
    repos = {s.name for s in spec.images if spec.wants_referrers(s)}
    if repos:
        extra = _unique(await with_referrers(planner, result.items, repos))
        for p in extra:
            reporter.emit(resolved_event(p.node))
        result.items = sorted(result.items + extra, key=lambda p: (p.source, p.key, p.platform))
    return result


async def plan_from_lock(
    planner: Planner, lock: Lock, keep_going: bool = False, reporter: Reporter | None = None
) -> Plan:
    jobs: list[Job] = [
        (name, lambda n=name, t=tags: planner.plan_locked(n, t))  # type: ignore[misc]
        for name, tags in sorted(lock.items())
    ]
    return await _collect(jobs, keep_going, reporter or NullReporter())
