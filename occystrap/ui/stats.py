"""Run totals every reporter keeps for the overall row and the final summary."""

from __future__ import annotations

import time
from collections.abc import Callable

from occystrap.events import (
    BlobDone,
    BlobProgress,
    BlobQueued,
    BlobRemoved,
    BlobRetry,
    BlobSkipped,
    BlobSource,
    CommitStarted,
    Event,
    ImageCommitted,
    ImageResolved,
    ManifestPushed,
    PullQuota,
    RunStarted,
    Warning_,
)
from occystrap.registry.ratelimit import Quota
from occystrap.ui.units import human, plural, rate

Clock = Callable[[], float]

# Why a blob needed no transfer, as the plain lines and the summary say it.
SKIP_REASONS = {
    "present": "already present",
    "shared": "shared with another image",
    "mounted": "mounted from another repository",
    "base": "held by the delta's base",
    "shard": "another shard's",
}


class Stats:
    """Run totals every reporter keeps for the overall row and the final summary."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.ended: float | None = None
        self.images_requested = 0
        self.images_resolved = 0
        self.images_committed = 0
        self.referenced_blobs = 0
        self.referenced_bytes = 0
        self.queued_blobs = 0
        self.queued_bytes = 0
        self.fetched_blobs = 0
        self.fetched_bytes = 0
        self.reused_blobs = 0
        self.reused_bytes = 0
        self.present_blobs = 0
        self.shared_blobs = 0
        self.received_bytes = 0  # bytes of fetched blobs so far, finished or not
        self.retries = 0
        self.warnings = 0
        self.writing = False
        self.uploading = False  # the destination is a registry: blobs are pushed, not fetched
        self.mounted_blobs = 0
        self.base_blobs = 0  # left to a delta bundle's base (by the delta, or found at the destination)
        self.base_bytes = 0
        self.shard_blobs = 0  # another shard's share (mirror --shard): not fetched by this run
        self.shard_bytes = 0
        self.removed_blobs = 0  # deleted by prune
        self.removed_bytes = 0
        self.artifacts = 0  # roots resolved that are artifacts (signatures, SBOMs, charts)
        self.manifests_pushed = 0
        self.tags_written = 0
        self._received: dict[str, int] = {}
        self._base: set[str] = set()
        self.quotas: dict[str, PullQuota] = {}  # registry -> what it last said is left
        self._quota_shown: dict[str, int] = {}
        # Where mirrors are configured: where each blob came from, and the totals per place.
        self.sources: dict[str, list[int]] = {}  # place -> [blobs, bytes]
        self.mirror_sources: set[str] = set()
        self._source_of: dict[str, str] = {}
        self._shard: set[str] = set()

    @property
    def images_total(self) -> int:
        return max(self.images_requested, self.images_resolved, self.images_committed)

    @property
    def referenced(self) -> int:
        """Bytes of every layer of every image; fetched + reused when images were not announced."""
        return max(self.referenced_bytes, self.fetched_bytes + self.reused_bytes)

    @property
    def elapsed(self) -> float:
        end = self.ended if self.ended is not None else self.clock()
        return max(end - self.started, 0.0)

    @property
    def throughput(self) -> float:
        return self.fetched_bytes / max(self.elapsed, 1e-3)

    def update(self, event: Event) -> None:
        if isinstance(event, BlobProgress):
            before = self._received.get(event.digest, 0)
            self._received[event.digest] = event.done
            self.received_bytes += event.done - before
        elif isinstance(event, BlobDone):
            self.fetched_blobs += 1
            self.fetched_bytes += event.size
            self.received_bytes += event.size - self._received.pop(event.digest, 0)
            where = self._source_of.get(event.digest)
            if where is not None:
                totals = self.sources.setdefault(where, [0, 0])
                totals[0] += 1
                totals[1] += event.size
        elif isinstance(event, BlobSource):
            self._source_of[event.digest] = event.source
            if event.mirror:
                self.mirror_sources.add(event.source)
        elif isinstance(event, PullQuota):
            self.quotas[event.registry] = event
        elif isinstance(event, BlobQueued):
            self.queued_blobs += 1
            self.queued_bytes += event.size
        elif isinstance(event, BlobSkipped):
            self.reused_blobs += 1
            self.reused_bytes += event.size
            if event.reason == "shared":
                self.shared_blobs += 1
            elif event.reason == "mounted":
                self.mounted_blobs += 1
            elif event.reason == "shard":
                if event.digest not in self._shard:  # once per blob, as for the base
                    self._shard.add(event.digest)
                    self.shard_blobs += 1
                    self.shard_bytes += event.size
            elif event.reason == "base" and event.digest not in self._base:
                # Once per blob, however many images share it: what the base spared.
                self._base.add(event.digest)
                self.base_blobs += 1
                self.base_bytes += event.size
            else:
                self.present_blobs += 1
        elif isinstance(event, BlobRemoved):
            self.removed_blobs += 1
            self.removed_bytes += event.size
        elif isinstance(event, ImageResolved):
            self.images_resolved += 1
            self.artifacts += event.kind == "artifact"
            self.referenced_blobs += event.blobs
            self.referenced_bytes += event.total_bytes
        elif isinstance(event, ImageCommitted):
            self.images_committed += 1
        elif isinstance(event, RunStarted):
            self.images_requested += len(event.images)
            self.uploading = self.uploading or event.upload
        elif isinstance(event, ManifestPushed):
            self.manifests_pushed += event.tag is None
            self.tags_written += event.tag is not None
        elif isinstance(event, CommitStarted):
            self.writing = True
        elif isinstance(event, BlobRetry):
            self.retries += 1
        elif isinstance(event, Warning_):
            self.warnings += 1

    def source_of(self, digest: str) -> str | None:
        """Where a blob in flight comes from (where mirrors are configured); a mirror is marked."""
        where = self._source_of.get(digest)
        if where is None:
            return None
        return f"{where} (mirror)" if where in self.mirror_sources else where

    def quota_line(self, event: PullQuota) -> str | None:
        """A line for a quota report worth one: the first from a registry, then every tenth of
        the limit spent, and every unit of the last tenth (one line per manifest would drown
        a mirror's log)."""
        shown = self._quota_shown.get(event.registry)
        step = max(1, (event.limit or 100) // 10)
        if shown is not None and event.remaining == shown:
            return None
        if shown is not None and shown - event.remaining < step and event.remaining > step:
            return None
        self._quota_shown[event.registry] = event.remaining
        return f"pull quota of {event.registry}: {quota_text(event)}"

    def finish(self) -> None:
        if self.ended is None:
            self.ended = self.clock()

    @property
    def moved(self) -> str:
        return "pushed" if self.uploading else "fetched"

    def summary(self, ok: bool = True) -> str:
        """The one line every command ends with."""
        self.finish()
        images = (
            plural(self.images_committed, "image")
            if ok and self.images_committed >= self.images_total
            else f"{self.images_committed}/{plural(self.images_total, 'image')}"
        )
        if self.artifacts:
            images += f" ({plural(self.artifacts, 'artifact')})"
        head = "summary:" if ok else "summary (failed):"
        mounted = f", {self.mounted_blobs} mounted" if self.mounted_blobs else ""
        if self.base_blobs:
            mounted += f", {self.base_blobs} from the base"
        if self.shard_blobs:
            mounted += f", {self.shard_blobs} other shards'"
        removed = (
            f", {plural(self.removed_blobs, 'blob')} deleted ({human(self.removed_bytes)} freed)"
            if self.removed_blobs
            else ""
        )
        written = (
            f"{plural(self.manifests_pushed, 'manifest')} and {plural(self.tags_written, 'tag')} written, "
            if self.uploading
            else ""
        )
        retries = f"{self.retries} {'retry' if self.retries == 1 else 'retries'}"
        moved = f"{plural(self.fetched_blobs, 'blob')} {self.moved} ({human(self.fetched_bytes)})"
        return (
            f"{head} {images}, {moved}, "
            f"{self.reused_blobs} reused ({human(self.reused_bytes)}{mounted}), {written}"
            f"{human(self.referenced)} referenced, in {self.elapsed:.1f}s at "
            f"{rate(self.throughput)}, {retries}, {plural(self.warnings, 'warning')}{removed}"
            f"{sources_text(self)}{quotas_text(self)}"
        )


def sources_text(stats: Stats) -> str:
    """`; from mirror.example:5000 (mirror) 3 blobs (12.6 MB), docker.io 1 blob (1.0 MB)`."""
    if not stats.sources:
        return ""
    parts = []
    for where, (blobs, size) in sorted(stats.sources.items(), key=lambda kv: -kv[1][1]):
        mark = " (mirror)" if where in stats.mirror_sources else ""
        parts.append(f"{where}{mark} {plural(blobs, 'blob')} ({human(size)})")
    return "; from " + ", ".join(parts)


def quotas_text(stats: Stats) -> str:
    """`; pull quota of docker.io: 76 of 100 left, window 6h`."""
    return "".join(f"; pull quota of {r}: {quota_text(q)}" for r, q in sorted(stats.quotas.items()))


def quota_text(event: PullQuota) -> str:
    return Quota(event.remaining, event.limit, event.window, event.reset).describe()
