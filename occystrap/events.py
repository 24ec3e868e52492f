"""Events the engine and client emit; reporters draw them. Nothing here does I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Event:
    at: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class ImageResolved(Event):
    image: str
    manifest_digest: str
    platform: str | None
    blobs: int
    total_bytes: int
    kind: str = "image"  # "image", "index" (with what it lists) or "artifact" (carried, never unpacked)
    artifact_type: str | None = None


@dataclass(frozen=True)
class BlobQueued(Event):
    digest: str
    size: int
    image: str


@dataclass(frozen=True)
class BlobSkipped(Event):
    """Already present in the destination, or fetched for another image in this run."""

    digest: str
    size: int
    image: str
    reason: str  # "present" or "shared"


@dataclass(frozen=True)
class BlobStarted(Event):
    digest: str
    size: int
    offset: int = 0


@dataclass(frozen=True)
class BlobProgress(Event):
    digest: str
    done: int  # bytes of the blob received so far (including any resumed offset)
    size: int


@dataclass(frozen=True)
class BlobRetry(Event):
    digest: str | None
    url: str
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True)
class BlobDone(Event):
    digest: str
    size: int


@dataclass(frozen=True)
class BlobRemoved(Event):
    """prune deleted a blob no remaining image references."""

    digest: str
    size: int


@dataclass(frozen=True)
class ImageCommitted(Event):
    image: str
    path: str


@dataclass(frozen=True)
class Warning_(Event):
    message: str


@dataclass(frozen=True)
class RunStarted(Event):
    """Before resolving: which images this command will fetch, and where to."""

    images: tuple[str, ...]
    destination: str = ""
    upload: bool = False  # the destination is a registry


@dataclass(frozen=True)
class BlobVerifying(Event):
    """The whole body arrived; final digest/diff_id checks and the sink's commit of this blob follow."""

    digest: str
    size: int


@dataclass(frozen=True)
class CommitStarted(Event):
    """Every blob is in; the sink now writes what makes the output complete (tarball, manifests)."""

    images: tuple[str, ...]
    destination: str = ""


@dataclass(frozen=True)
class ManifestPushed(Event):
    """A manifest or index written to a registry: by digest (tag None), or under a tag."""

    image: str
    digest: str
    tag: str | None


@dataclass(frozen=True)
class PullQuota(Event):
    """What a registry's rate-limit headers say is left of its pull quota (Docker Hub counts
    manifest GETs; HEADs are free)."""

    registry: str
    remaining: int
    limit: int | None = None
    window: int | None = None  # seconds the limit covers
    reset: float | None = None  # seconds until it refills, when the registry says


@dataclass(frozen=True)
class BlobSource(Event):
    """Where a blob's bytes come from, where registry mirrors are configured: a mirror
    (`HOST[:PORT][/PREFIX]`) or the image's own registry."""

    digest: str
    source: str
    mirror: bool


@dataclass(frozen=True)
class RunReport(Event):
    """mirror's machine-readable account of the run (see occystrap.mirror.report)."""

    report: dict[str, Any]


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...


class NullReporter:
    def emit(self, event: Event) -> None:
        return None


@dataclass(frozen=True)
class Info(Event):
    """Something worth telling the user that is neither progress nor a problem."""

    message: str
