"""The JSON lines written by ``--progress json`` (schema version 1).

Every line on stderr is one JSON object. Each object has ``"event"`` (the type
name below) and ``"at"`` (Unix time in seconds, a float, when the event
happened), followed by the event's own fields. The last line of a run is a
``Summary``. Sizes and byte counts are integers in bytes; digests are full
``sha256:<hex>`` strings; image names are normalized references such as
``docker.io/library/busybox:latest`` or ``127.0.0.1:5000/team/app:v1``.

Stability: within schema version 1, event names and fields are never renamed or
removed and never change type. New event types and new fields may be added, so
consumers must ignore events and keys they do not know. When a run fails, the
command's one plain-text line ``occystrap: error: ...`` follows the JSON lines;
it is the only line that is not JSON.

=============== ================================================== ========================================
event           fields (besides ``event`` and ``at``)              when
=============== ================================================== ========================================
RunStarted      images [str], destination str, upload bool         before anything is resolved (upload:
                                                                   the destination is a registry)
ImageResolved   image str, manifest_digest str, platform str|null, an image's manifest and config are
                blobs int (layers), total_bytes int (their sizes), known (kind "index": a whole index;
                kind str, artifact_type str|null                   "artifact": carried, never unpacked)
BlobQueued      digest str, size int, image str                    a layer will be fetched (once per run)
BlobSkipped     digest str, size int, image str,                   no fetch needed: already in the
                reason "present"|"shared"|"mounted"|"base"|        destination, moved for another image
                "shard"                                            in this run, mounted from another
                                                                   repository of the destination registry,
                                                                   left to a delta bundle's base, or
                                                                   another shard's (mirror --shard)
BlobStarted     digest str, size int, offset int                   its body starts (holds a slot)
BlobProgress    digest str, done int, size int                     about every MiB; ``done`` counts from
                                                                   the blob's first byte, across resumes
BlobRetry       digest str|null, url str, attempt int,             a request failed; retried after
                delay float, reason str                            ``delay`` s (digest null: not a blob)
BlobVerifying   digest str, size int                               the body is in; final checks follow
BlobDone        digest str, size int                               verified and stored (or pushed)
BlobRemoved     digest str, size int                               prune deleted a blob nothing uses
ManifestPushed  image str, digest str, tag str|null                a manifest or index written to a
                                                                   registry: by digest (tag null), then
                                                                   the tag, last
CommitStarted   images [str], destination str                      writing the output (tar, manifests)
ImageCommitted  image str, path str                                the image is complete
BlobSource      digest str, source str, mirror bool                where mirrors are configured: the
                                                                   blob's bytes start to arrive from
                                                                   ``source`` (``HOST[:PORT][/PREFIX]``),
                                                                   a mirror or the image's registry
                                                                   (configs read while resolving too)
PullQuota       registry str, remaining int, limit int|null,       a registry's rate-limit headers
                window int|null (s), reset float|null (s)          (Docker Hub's ``ratelimit-*``, the
                                                                   IETF ``RateLimit-*``) report a new
                                                                   count; ``window``: what the limit
                                                                   covers, ``reset``: time until it
                                                                   refills, when the registry says
RunReport       report {…} (see occystrap.mirror.report)             mirror's per-tag outcomes, before Summary
Warning         message str                                        something the user should know
Info            message str                                        a note that is neither progress nor a
                                                                   problem
Summary         ok bool, error str|null, images int,               always the last line: the run's totals
                images_total int, fetched_blobs int,
                fetched_bytes int, reused_blobs int,
                reused_bytes int, referenced_bytes int,
                elapsed float (s), throughput float (B/s),
                retries int, warnings int, schema int (1),
                mounted_blobs int, manifests_pushed int,
                tags_written int, artifacts int,
                base_blobs int, base_bytes int,
                removed_blobs int, removed_bytes int,
                sources {place: {blobs int, bytes int,
                mirror bool}} (from BlobSource; empty without
                mirrors), pull_quota {registry: {remaining int,
                limit int|null, window int|null, reset
                float|null}} (the last PullQuota of each),
                shard_blobs int, shard_bytes int
=============== ================================================== ========================================

``fetched_bytes`` is the sum of ``BlobDone.size`` (bytes pushed, when the destination is a
registry: every byte is read from the source and sent on at once); ``reused_bytes`` the sum of
``BlobSkipped.size``; ``referenced_bytes`` the sum of ``ImageResolved.total_bytes``
(at least fetched plus reused).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from occystrap.events import Event
from occystrap.ui.stats import Stats

SCHEMA_VERSION = 1

#: The documented keys of each event, besides "event" and "at", in output order.
SCHEMA: dict[str, tuple[str, ...]] = {
    "RunStarted": ("images", "destination", "upload"),
    "ImageResolved": (
        "image",
        "manifest_digest",
        "platform",
        "blobs",
        "total_bytes",
        "kind",
        "artifact_type",
    ),
    "BlobQueued": ("digest", "size", "image"),
    "BlobSkipped": ("digest", "size", "image", "reason"),
    "BlobStarted": ("digest", "size", "offset"),
    "BlobProgress": ("digest", "done", "size"),
    "BlobRetry": ("digest", "url", "attempt", "delay", "reason"),
    "BlobVerifying": ("digest", "size"),
    "BlobDone": ("digest", "size"),
    "RunReport": ("report",),
    "BlobRemoved": ("digest", "size"),
    "ManifestPushed": ("image", "digest", "tag"),
    "BlobSource": ("digest", "source", "mirror"),
    "PullQuota": ("registry", "remaining", "limit", "window", "reset"),
    "CommitStarted": ("images", "destination"),
    "ImageCommitted": ("image", "path"),
    "Warning": ("message",),
    "Info": ("message",),
    "Summary": (
        "ok",
        "error",
        "images",
        "images_total",
        "fetched_blobs",
        "fetched_bytes",
        "reused_blobs",
        "reused_bytes",
        "referenced_bytes",
        "elapsed",
        "throughput",
        "retries",
        "warnings",
        "schema",
        "mounted_blobs",
        "manifests_pushed",
        "tags_written",
        "artifacts",
        "base_blobs",
        "base_bytes",
        "removed_blobs",
        "removed_bytes",
        "sources",
        "pull_quota",
        "shard_blobs",
        "shard_bytes",
    ),
}


def event_name(event: Event) -> str:
    return type(event).__name__.rstrip("_")


def to_json(event: Event) -> dict[str, Any]:
    """``{"event": name, "at": time, **fields}``; tuples become lists."""
    doc: dict[str, Any] = {"event": event_name(event), "at": event.at}
    for f in dataclasses.fields(event):
        if f.name != "at":
            value = getattr(event, f.name)
            doc[f.name] = list(value) if isinstance(value, tuple) else value
    return doc


def summary(stats: Stats, at: float, ok: bool = True, error: str | None = None) -> dict[str, Any]:
    stats.finish()
    return {
        "event": "Summary",
        "at": at,
        "ok": ok,
        "error": error,
        "images": stats.images_committed,
        "images_total": stats.images_total,
        "fetched_blobs": stats.fetched_blobs,
        "fetched_bytes": stats.fetched_bytes,
        "reused_blobs": stats.reused_blobs,
        "reused_bytes": stats.reused_bytes,
        "referenced_bytes": stats.referenced,
        "elapsed": round(stats.elapsed, 3),
        "throughput": round(stats.throughput, 1),
        "retries": stats.retries,
        "warnings": stats.warnings,
        "schema": SCHEMA_VERSION,
        "mounted_blobs": stats.mounted_blobs,
        "manifests_pushed": stats.manifests_pushed,
        "tags_written": stats.tags_written,
        "artifacts": stats.artifacts,
        "base_blobs": stats.base_blobs,
        "base_bytes": stats.base_bytes,
        "removed_blobs": stats.removed_blobs,
        "removed_bytes": stats.removed_bytes,
        "sources": {
            where: {"blobs": blobs, "bytes": size, "mirror": where in stats.mirror_sources}
            for where, (blobs, size) in sorted(stats.sources.items())
        },
        "pull_quota": {
            registry: {"remaining": q.remaining, "limit": q.limit, "window": q.window, "reset": q.reset}
            for registry, q in sorted(stats.quotas.items())
        },
        "shard_blobs": stats.shard_blobs,
        "shard_bytes": stats.shard_bytes,
    }
