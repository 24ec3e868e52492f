"""Bulk mirroring: a spec (or a lock) becomes a plan of images, fetched by one engine run.

plan() resolves tag lists, manifests and configs concurrently; fetch() hands every image
to Engine.fetch_images at once, so shared blobs are fetched once, largest first, under one
limit. The lock records {image: {tag: {platform: manifest digest}}} so a later run can
fetch exactly the same content even after tags have moved.

In a merged directory the catalog is keyed by tag. An image mirrored for several platforms
stores its primary platform (the one --platform names, else the first) under the tag and
every other platform under its own manifest digest; the catalog record says which platform.
"""

from __future__ import annotations

import dataclasses
import json
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio

from occystrap import layout
from occystrap.engine import Engine
from occystrap.errors import ManifestError, OccystrapError, PlatformNotFoundError, UsageError
from occystrap.events import ImageResolved, NullReporter, Reporter
from occystrap.model import (
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Image,
    Platform,
    build_image,
    choose_platform,
    load_json,
    parse_index,
    parse_manifest,
    sha256_digest,
)
from occystrap.reference import Reference
from occystrap.registry import RegistryClient
from occystrap.sinks.base import Sink, write_atomic
from occystrap.sinks.directory import DirectorySink
from occystrap.sinks.tarball import TarballSink
from occystrap.spec import ImageSpec, MirrorSpec, select_tags
from occystrap.ui.state import human
from occystrap.verify import file_digest

LOCK_NAME = "occystrap.lock"
RESOLVE_PARALLEL = 16

T = TypeVar("T")
Lock = dict[str, dict[str, dict[str, str]]]


class MirrorFailedError(OccystrapError):
    """Some images of a --keep-going run failed; the others were mirrored."""

    exit_code = 1


@dataclass(frozen=True)
class Planned:
    """One image to fetch: where it came from (name, tag or digest, platform) and what it is."""

    source: str
    key: str
    platform: Platform
    image: Image

    @property
    def manifest_digest(self) -> str:
        return self.image.manifest.digest


@dataclass
class Plan:
    items: list[Planned] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def images(self) -> list[Image]:
        return [p.image for p in self.items]

    def lock(self) -> Lock:
        out: Lock = {}
        for p in self.items:
            out.setdefault(p.source, {}).setdefault(p.key, {})[str(p.platform)] = p.manifest_digest
        return out


def is_tarball(dest: Path) -> bool:
    return dest.suffix == ".tar"


def lock_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".lock") if is_tarball(dest) else dest / LOCK_NAME


def make_sink(dest: Path) -> Sink:
    if is_tarball(dest):
        if dest.is_dir():
            raise UsageError(f"{dest} is a directory")
        return TarballSink(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory")
    return DirectorySink(dest, unique_names=True)


# --- planning ----------------------------------------------------------------


def _occystrap_error(exc: BaseException) -> OccystrapError | None:
    """The library error inside a (possibly nested) task group failure, if that is all it is."""
    if isinstance(exc, OccystrapError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_occystrap_error(e) for e in exc.exceptions]
        if all(f is not None for f in found):
            return found[0]
    return None


async def _gather(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    results: list[T | None] = [None] * len(calls)

    async def one(i: int, call: Callable[[], Awaitable[T]]) -> None:
        results[i] = await call()

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(one, i, call)
    return [r for r in results if r is not None]


def _primary(platforms: list[Platform], default: Platform) -> int:
    """Which of several platforms is stored under the tag: the default one, else the first."""
    entries = [Descriptor("", str(i), 0, p) for i, p in enumerate(platforms)]
    match = choose_platform(entries, default)
    return int(match.digest) if match is not None else 0


def _config_platform(config_bytes: bytes, what: str) -> Platform:
    doc = load_json(config_bytes, f"config of {what}")
    if not isinstance(doc, dict) or not isinstance(doc.get("os"), str):
        return Platform("unknown", "unknown")
    return Platform(doc["os"], str(doc.get("architecture") or "unknown"), doc.get("variant") or None)


class Planner:
    """Resolves tags to images. `local`: a merged directory whose configs may be read instead of
    fetched (an incremental run then asks the registry for manifests only)."""

    def __init__(self, client: RegistryClient, default_platform: Platform, local: Path | None = None) -> None:
        self.client = client
        self.default = default_platform
        self.local = local
        self.limiter = anyio.CapacityLimiter(RESOLVE_PARALLEL)

    def _local_blob(self, desc: Descriptor) -> bytes | None:
        """A small blob DEST already holds, when it is exactly what `desc` names (else None)."""
        if self.local is None or desc.size > MAX_MANIFEST_BYTES:
            return None
        try:
            data = (self.local / layout.blob_path(desc.digest)).read_bytes()
        except (OSError, ValueError):
            return None
        return data if len(data) == desc.size and sha256_digest(data) == desc.digest else None

    async def _manifest(self, ref: Reference, target: str | None = None) -> tuple[bytes, str, str]:
        async with self.limiter:
            return await self.client.get_manifest(ref, target)

    async def _image(self, ref: Reference, data: bytes, media: str, digest: str) -> tuple[Image, Platform]:
        what = str(ref)
        config_desc, _ = parse_manifest(data, media, what)
        config = await anyio.to_thread.run_sync(self._local_blob, config_desc)
        if config is None:
            async with self.limiter:
                config = await self.client.get_small_blob(ref, config_desc)
        image = build_image(ref, Descriptor(media, digest, len(data)), data, config)
        return image, _config_platform(config, what)

    async def _platform_image(self, ref: Reference, entry: Descriptor) -> tuple[Image, Platform]:
        data, media, digest = await self._manifest(ref, entry.digest)
        if media in INDEX_TYPES:
            raise ManifestError(f"{ref}: nested index for platform {entry.platform} is not supported")
        image, own = await self._image(ref, data, media, digest)
        return image, entry.platform or own

    async def resolve_key(
        self, source: Reference, key: str, wanted: tuple[Platform, ...] | Literal["all"]
    ) -> list[Planned]:
        """Every wanted platform of source:key (a tag or a digest)."""
        is_digest = key.startswith("sha256:")
        ref = Reference(
            source.registry, source.repository, None if is_digest else key, key if is_digest else None
        )
        data, media, digest = await self._manifest(ref)
        found: list[tuple[Image, Platform]]
        if media in INDEX_TYPES:
            entries = parse_index(data, str(ref))
            if wanted == "all":
                chosen = [e for e in entries if e.platform is not None and e.platform.os != "unknown"]
                if not chosen:
                    raise ManifestError(f"{ref}: index lists no platforms")
            else:
                chosen = []
                for p in wanted:
                    assert isinstance(p, Platform)
                    entry = choose_platform(entries, p)
                    if entry is None:
                        available = sorted({str(e.platform) for e in entries if e.platform})
                        raise PlatformNotFoundError(f"{p} in {ref}", available)
                    chosen.append(entry)
            chosen = list({e.digest: e for e in chosen}.values())
            found = await _gather([lambda e=e: self._platform_image(ref, e) for e in chosen])  # type: ignore[misc]
        else:
            # A single-platform image is what it is, whatever platforms were asked for.
            found = [await self._image(ref, data, media, digest)]
        primary = _primary([p for _, p in found], self.default)
        out = []
        for i, (image, platform) in enumerate(found):
            if i == primary:
                store = ref
            else:
                store = Reference(ref.registry, ref.repository, digest=image.manifest.digest)
            image = dataclasses.replace(image, reference=store, platform=platform)
            out.append(Planned(source.full_name, key, platform, image))
        return out

    async def tags_of(self, spec: ImageSpec) -> list[str]:
        available: list[str] = []
        if spec.needs_tag_list:
            async with self.limiter:
                available = await self.client.list_tags(spec.repo)
        keys = select_tags(available, spec.tags, spec.include, spec.exclude, spec.latest, spec.version_range)
        return keys + [d for d in spec.digests if d not in keys]

    async def plan_image(self, spec: ImageSpec) -> list[Planned]:
        keys = await self.tags_of(spec)
        if not keys:
            raise ManifestError(f"{spec.name}: no tag matches the spec's filters")
        wanted = spec.wanted_platforms(self.default)
        groups = await _gather([lambda k=k: self.resolve_key(spec.repo, k, wanted) for k in keys])  # type: ignore[misc]
        return [p for g in groups for p in g]

    async def plan_locked(self, name: str, tags: dict[str, dict[str, str]]) -> list[Planned]:
        source = _lock_ref(name)
        out: list[Planned] = []

        async def one_key(key: str, platforms: dict[str, str]) -> list[Planned]:
            plats = [Platform.parse(p) for p in platforms]
            primary = _primary(plats, self.default)
            items = []
            for i, (plat, digest) in enumerate(zip(plats, platforms.values(), strict=True)):
                is_digest = key.startswith("sha256:")
                if i == primary:
                    store = Reference(
                        source.registry,
                        source.repository,
                        None if is_digest else key,
                        key if is_digest else None,
                    )
                else:
                    store = Reference(source.registry, source.repository, digest=digest)
                pinned = Reference(source.registry, source.repository, digest=digest)
                data, media, got = await self._manifest(pinned)
                if media in INDEX_TYPES:
                    raise ManifestError(f"{pinned}: the lock names an index, not a platform manifest")
                image, _ = await self._image(pinned, data, media, got)
                image = dataclasses.replace(image, reference=store, platform=plat)
                items.append(Planned(source.full_name, key, plat, image))
            return items

        groups = await _gather([lambda k=k, p=p: one_key(k, p) for k, p in sorted(tags.items())])  # type: ignore[misc]
        for g in groups:
            out.extend(g)
        return out


def _local_dir(dest: Path | None) -> Path | None:
    return dest if dest is not None and not is_tarball(dest) and dest.is_dir() else None


def _lock_ref(name: str) -> Reference:
    from occystrap import reference

    ref = reference.parse(name)
    return Reference(ref.registry, ref.repository)


def _unique(items: list[Planned]) -> list[Planned]:
    """One item per stored reference (two tags of one index share their other platforms)."""
    seen: set[str] = set()
    out = []
    for p in items:
        ident = str(p.image.reference)
        if ident not in seen:
            seen.add(ident)
            out.append(p)
    return out


def resolved_event(p: Planned) -> ImageResolved:
    layers = p.image.layers
    return ImageResolved(
        str(p.image.reference),
        p.manifest_digest,
        str(p.platform),
        len(layers),
        sum(l.descriptor.size for l in layers),
    )


async def _collect(
    jobs: list[tuple[str, Callable[[], Awaitable[list[Planned]]]]], keep_going: bool, reporter: Reporter
) -> Plan:
    """Run the planning jobs; each image's items are announced (ImageResolved) as soon as known."""
    result = Plan()
    found: dict[str, list[Planned]] = {}

    async def one(name: str, call: Callable[[], Awaitable[list[Planned]]]) -> None:
        try:
            items = _unique(await call())
        except BaseException as exc:
            err = _occystrap_error(exc)
            if err is None or not keep_going:
                raise
            result.failures[name] = str(err)
            return
        found[name] = items
        for p in items:
            reporter.emit(resolved_event(p))

    async with anyio.create_task_group() as tg:
        for name, call in jobs:
            tg.start_soon(one, name, call)
    for name, _ in jobs:
        result.items.extend(found.get(name, []))
    # A canonical order (not the spec's, not the registry's, not completion order): the same
    # content always gives the same bundle bytes and index.json, from a spec or from its lock.
    result.items.sort(key=lambda p: (p.source, p.key, str(p.platform)))
    return result


async def plan(
    client: RegistryClient,
    spec: MirrorSpec,
    default_platform: Platform,
    keep_going: bool = False,
    reporter: Reporter | None = None,
    dest: Path | None = None,
) -> Plan:
    """Resolve every image, tag and platform the spec names, concurrently (configs a merged
    directory `dest` already holds are read from it)."""
    planner = Planner(client, default_platform, _local_dir(dest))
    jobs: list[tuple[str, Callable[[], Awaitable[list[Planned]]]]] = [
        (s.name, lambda s=s: planner.plan_image(s))  # type: ignore[misc]
        for s in spec.images
    ]
    names = [n for n, _ in jobs]
    if len(set(names)) != len(names):
        raise UsageError("the spec names an image more than once; merge its entries")
    return await _collect(jobs, keep_going, reporter or NullReporter())


async def plan_from_lock(
    client: RegistryClient,
    lock: Lock,
    default_platform: Platform,
    keep_going: bool = False,
    reporter: Reporter | None = None,
    dest: Path | None = None,
) -> Plan:
    planner = Planner(client, default_platform, _local_dir(dest))
    jobs: list[tuple[str, Callable[[], Awaitable[list[Planned]]]]] = [
        (name, lambda n=name, t=tags: planner.plan_locked(n, t))  # type: ignore[misc]
        for name, tags in sorted(lock.items())
    ]
    return await _collect(jobs, keep_going, reporter or NullReporter())


# --- the lock ----------------------------------------------------------------


def read_lock(path: Path) -> Lock:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"--locked needs {path}, which does not exist (run without --locked first)"
        ) from None
    doc = load_json(data, str(path))
    ok = isinstance(doc, dict) and all(
        isinstance(tags, dict)
        and all(
            isinstance(plats, dict)
            and plats
            and all(isinstance(p, str) and isinstance(d, str) for p, d in plats.items())
            for plats in tags.values()
        )
        for tags in doc.values()
    )
    if not ok:
        raise ManifestError(f"malformed {path}: expected {{image: {{tag: {{platform: digest}}}}}}")
    for tags in doc.values():
        for plats in tags.values():
            for p in plats:
                try:
                    Platform.parse(p)
                except ValueError as exc:
                    raise ManifestError(f"malformed {path}: {exc}") from None
    return doc  # type: ignore[no-any-return]


def lock_bytes(lock: Lock) -> bytes:
    return json.dumps(lock, indent=2, sort_keys=True).encode() + b"\n"


def write_lock(path: Path, fresh: Lock, failed: dict[str, str]) -> None:
    """Write what was mirrored; a failed image keeps what an earlier lock said about it."""
    out = dict(fresh)
    if failed and path.exists():
        try:
            old = read_lock(path)
        except OccystrapError:
            old = {}
        for name in failed:
            if name in old and name not in out:
                out[name] = old[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lock_bytes(out))


# --- fetching ----------------------------------------------------------------


async def fetch(engine: Engine, result: Plan, dest: Path, keep_going: bool = False) -> None:
    """Everything in one engine run; with keep_going, a failure is narrowed down to its images."""
    if not result.items:
        return
    sink = make_sink(dest)
    try:
        await engine.fetch_images(result.images, sink)
        return
    except BaseException as exc:
        err = _occystrap_error(exc)
        if err is None or not keep_going:
            raise
        if is_tarball(dest):
            for name in dict.fromkeys(p.source for p in result.items):
                result.failures[name] = f"bundle not written: {err}"
            result.items.clear()
            return
    # The merged directory keeps what was fetched: retry image by image to find the culprit.
    by_source: dict[str, list[Planned]] = {}
    for p in result.items:
        by_source.setdefault(p.source, []).append(p)
    kept: list[Planned] = []
    for name, items in by_source.items():
        try:
            await engine.fetch_images([p.image for p in items], make_sink(dest))
            kept.extend(items)
        except BaseException as exc:
            err = _occystrap_error(exc)
            if err is None:
                raise
            result.failures[name] = str(err)
    result.items[:] = kept


# --- what changes in DEST ----------------------------------------------------

NEW = "new"
UPDATED = "updated"
UNCHANGED = "unchanged"
SHOWN_TAGS = 5  # tag names listed per status in a change line; the rest are counted


@dataclass(frozen=True)
class TagChange:
    """What mirroring one tag (or pinned digest) of one image does to DEST."""

    source: str
    key: str
    status: str  # NEW, UPDATED or UNCHANGED
    platforms: dict[str, str]  # platform -> manifest digest to be stored
    previous: dict[str, str]  # platform -> manifest digest DEST held (those it held)


@dataclass(frozen=True)
class Changes:
    tags: list[TagChange]
    dropped: dict[str, list[str]]  # image -> references a rewritten bundle no longer holds

    def of(self, source: str) -> list[TagChange]:
        return [t for t in self.tags if t.source == source]

    def counts(self, source: str) -> dict[str, int]:
        out = {NEW: 0, UPDATED: 0, UNCHANGED: 0}
        for t in self.of(source):
            out[t.status] += 1
        return out

    def line(self, source: str) -> str:
        """`host/app: 2 new (v3, v4), 1 updated (latest), 20 unchanged`."""
        parts = []
        for status in (NEW, UPDATED, UNCHANGED):
            keys = [t.key for t in self.of(source) if t.status == status]
            if not keys:
                continue
            part = f"{len(keys)} {status}"
            if status != UNCHANGED:
                shown = ", ".join(_short_key(k) for k in keys[:SHOWN_TAGS])
                more = f", +{len(keys) - SHOWN_TAGS} more" if len(keys) > SHOWN_TAGS else ""
                part += f" ({shown}{more})"
            parts.append(part)
        dropped = self.dropped.get(source, [])
        if dropped:
            parts.append(f"{len(dropped)} dropped from the bundle")
        return f"{source}: {', '.join(parts) or 'nothing'}"


def _short_key(key: str) -> str:
    return key[:19] if key.startswith("sha256:") else key


def held_manifests(dest: Path) -> dict[str, str]:
    """What DEST holds now, from its index.json: reference name -> manifest digest. Empty when DEST
    is absent or unreadable (then everything counts as new)."""
    data: bytes | None = None
    try:
        if is_tarball(dest):
            if dest.is_file():
                with tarfile.open(dest, "r:") as tf:
                    member = tf.extractfile("index.json")
                    data = member.read() if member is not None else None
        elif (dest / "index.json").is_file():
            data = (dest / "index.json").read_bytes()
    except (OSError, KeyError, tarfile.TarError):
        return {}
    if data is None:
        return {}
    try:
        entries = parse_index(data, f"{dest}: index.json")
    except OccystrapError:
        return {}
    out: dict[str, str] = {}
    for e in entries:
        name = dict(e.annotations).get(layout.REF_NAME)
        if name:
            out[name] = e.digest
    return out


def changes(result: Plan, dest: Path) -> Changes:
    """Per tag: new (DEST does not hold it), updated (it holds other content) or unchanged."""
    held = held_manifests(dest)
    groups: dict[tuple[str, str], list[Planned]] = {}
    for p in result.items:
        groups.setdefault((p.source, p.key), []).append(p)
    tags = []
    for (source, key), items in groups.items():
        planned = {str(p.platform): p.manifest_digest for p in items}
        previous = {
            str(p.platform): held[str(p.image.reference)] for p in items if str(p.image.reference) in held
        }
        if not previous:
            status = NEW
        elif previous == planned:
            status = UNCHANGED
        else:
            status = UPDATED
        tags.append(TagChange(source, key, status, planned, previous))
    dropped: dict[str, list[str]] = {}
    if is_tarball(dest):
        planned_refs = {str(p.image.reference) for p in result.items}
        for name in sorted(set(held) - planned_refs):
            try:
                full = _lock_ref(name.partition("@")[0]).full_name
            except OccystrapError:
                full = name
            dropped.setdefault(full, []).append(name)
    return Changes(tags, dropped)


def change_lines(result: Plan, found: Changes) -> list[str]:
    return [found.line(source) for source in dict.fromkeys(p.source for p in result.items)]


# --- dry run -----------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    per_image: dict[str, tuple[int, int]]  # name -> (blobs, bytes) of that image's own set
    blobs: int  # to fetch
    bytes: int
    shared_bytes: int  # saved because images share blobs
    present_blobs: int
    present_bytes: int  # saved because DEST already holds them


def _held(dest: Path, desc: Descriptor) -> bool:
    """DirectorySink.has_layer without its side effects: a dry run writes and deletes nothing."""
    if is_tarball(dest):
        return False
    path = dest / layout.blob_path(desc.digest)
    try:
        return path.is_file() and file_digest(path) == (desc.digest, desc.size)
    except OSError:
        return False


def estimate(result: Plan, dest: Path) -> Estimate:
    per_image: dict[str, dict[str, int]] = {}
    total = 0
    unique: dict[str, Descriptor] = {}
    for p in result.items:
        own = per_image.setdefault(p.source, {})
        for layer in p.image.layers:
            d = layer.descriptor
            total += d.size
            own[d.digest] = d.size
            unique[d.digest] = d
    present = [d for d in unique.values() if _held(dest, d)]
    unique_bytes = sum(d.size for d in unique.values())
    present_bytes = sum(d.size for d in present)
    return Estimate(
        {name: (len(blobs), sum(blobs.values())) for name, blobs in per_image.items()},
        len(unique) - len(present),
        unique_bytes - present_bytes,
        total - unique_bytes,
        len(present),
        present_bytes,
    )


def dry_run_report(result: Plan, dest: Path) -> list[str]:
    est = estimate(result, dest)
    found = changes(result, dest)
    counts: dict[str, int] = {}
    for p in result.items:
        counts[p.source] = counts.get(p.source, 0) + 1
    lines = []
    for name, (blobs, size) in sorted(est.per_image.items()):
        what = found.line(name).partition(": ")[2]
        lines.append(
            f"{name}: {counts[name]} image(s), {blobs} layer blobs, {human(size)} ({size} bytes); {what}"
        )
    lines.append(
        f"total: would fetch {est.blobs} blobs, {human(est.bytes)} ({est.bytes} bytes); "
        f"sharing saves {human(est.shared_bytes)} ({est.shared_bytes} bytes); "
        f"{dest} already holds {est.present_blobs} blobs, {human(est.present_bytes)} "
        f"({est.present_bytes} bytes)"
    )
    return lines


def dry_run_json(result: Plan, dest: Path) -> dict[str, Any]:
    """The plan as data: per image its tags (status and platform digests), what would be fetched."""
    est = estimate(result, dest)
    found = changes(result, dest)
    images: dict[str, Any] = {}
    for name in sorted(est.per_image):
        blobs, size = est.per_image[name]
        images[name] = {
            "tags": {
                t.key: {"status": t.status, "platforms": t.platforms, "previous": t.previous}
                for t in sorted(found.of(name), key=lambda t: t.key)
            },
            "counts": found.counts(name),
            "dropped": found.dropped.get(name, []),
            "layer_blobs": blobs,
            "layer_bytes": size,
        }
    return {
        "destination": str(dest),
        "images": images,
        "fetch": {"blobs": est.blobs, "bytes": est.bytes},
        "shared_bytes": est.shared_bytes,
        "present": {"blobs": est.present_blobs, "bytes": est.present_bytes},
        "failed": dict(sorted(result.failures.items())),
    }


def failure_message(failures: dict[str, str]) -> str:
    """The one error line of a --keep-going run: every failed image and why (shortened)."""
    reasons = "; ".join(f"{name}: {why if len(why) <= 200 else why[:197] + '...'}"
                        for name, why in sorted(failures.items()))  # fmt: skip
    return f"{len(failures)} image(s) failed: {reasons}"


def summary(result: Plan) -> dict[str, Any]:
    return {"mirrored": len(result.items), "failed": dict(result.failures)}
