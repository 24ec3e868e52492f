"""A second registry on loopback that the tools under test push into, for the scenarios with a
registry as the destination: wiped between runs, and what each run sent it read from its log.

Bytes uploaded: the registry's access log records the bytes of each response, not of each request
body, so the bytes a run uploaded are the sizes of the blobs whose upload completed (a `PUT
.../blobs/uploads/...?digest=` answered 201), each counted as often as it completed. A blob sent
twice counts twice; bytes of an upload abandoned midway would not show (none was seen in these
runs: `uploads_started` - `blob_uploads` is the probe occystrap opens and cancels per repository).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.common import MiB, log
from benchmarks.harness import BenchContext, Measurement, Tool
from benchmarks.images import PushedImage
from benchmarks.report import fmt, mib
from benchmarks.stats import RSS_LIMIT_MIB, Summary, median_or_nan
from benchmarks.tools import Verify
from tests.support.registry import AccessLogLine, Registry, RegistryError, start_registry


@dataclass(frozen=True)
class Sent:
    """What one run sent the destination (its access log since the run began)."""

    uploaded_bytes: int  # sizes of the blobs whose upload completed
    blob_uploads: int  # uploads completed: PUT .../blobs/uploads/...?digest= answered 201
    blob_writes: int  # PUT or PATCH to .../blobs/uploads/ whatever the answer: bytes went up
    uploads_started: int  # POST .../blobs/uploads/ answered 202 (an upload, or occystrap's probe)
    mounts: int  # POST .../blobs/uploads/?mount= answered 201: no bytes sent
    manifest_puts: int  # PUT .../manifests/ (by tag or by digest)


def _settled(registry: Registry, quiet: float = 0.05, limit: float = 2.0) -> list[AccessLogLine]:
    """The access log once it stops growing (the registry logs a request after answering it)."""
    lines = registry.access_log()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(quiet)
        again = registry.access_log()
        if len(again) == len(lines):
            return again
        lines = again
    return lines


def _upload_target(path: str) -> tuple[str, str] | None:
    """(repository, digest) of an upload's closing PUT, else None."""
    parts = urllib.parse.urlsplit(path)
    repo, sep, _ = parts.path.removeprefix("/v2/").partition("/blobs/uploads/")
    digest = urllib.parse.parse_qs(parts.query).get("digest", [""])[0]
    return (repo, digest) if sep and digest else None


class Destination:
    """The destination registry: started on first use, `reset()` between runs, stopped with the session."""

    def __init__(self, ctx: BenchContext, name: str) -> None:
        self._ctx = ctx
        self._name = name
        self._generation = 0
        self._registry: Registry | None = None
        self._mark = 0  # access log lines before the current run
        self._cpu0 = 0.0  # the registry's CPU seconds before the current run
        self._sizes: dict[str, int] = {}  # digest -> size; content-addressed, so valid across resets
        ctx.on_stop(self.stop)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self.reset()
        assert self._registry is not None
        return self._registry

    @property
    def host(self) -> str:
        return self.registry.host

    def reset(self) -> None:
        """An empty registry: a new process, storage and port. The new port matters for skopeo, whose
        blob-info cache remembers where it saw blobs and would try mounting them from there."""
        self.stop()
        self._generation += 1
        self._registry = start_registry(self._root() / str(self._generation))
        self._mark, self._cpu0 = 0, self._cpu()

    def _root(self) -> Path:
        """tmpfs when there is one: the registry fsyncs every blob it commits, and on this shared
        machine other work's disk writes made those fsyncs (not the client) vary by seconds."""
        shm = Path("/dev/shm")
        if shm.is_dir() and shutil.disk_usage(shm).free > 4096 * MiB:
            return shm / f"{self._ctx.workdir.name}-{self._name}"
        return self._ctx.workdir / self._name

    def stop(self) -> None:
        if self._registry is not None:
            self._registry.stop()
            shutil.rmtree(self._registry.workdir, ignore_errors=True)
            self._registry = None
        shutil.rmtree(self._root(), ignore_errors=True)

    def mark(self) -> None:
        """A run begins on this registry as it is (no wipe): count what it sends from here."""
        self._mark, self._cpu0 = len(_settled(self.registry)), self._cpu()

    def _cpu(self) -> float:
        """CPU seconds the registry process has used: it shares the 2 cores with the client, and
        receiving a blob (hash + write) costs it about as much CPU as sending it costs the client."""
        proc = self.registry.process
        try:
            assert proc is not None
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, AssertionError, IndexError, ValueError):
            return float("nan")

    def sent(self) -> Sent:
        lines = _settled(self.registry)[self._mark :]
        completed = [
            t
            for r in lines
            if r.method == "PUT" and r.status == 201 and (t := _upload_target(r.path)) is not None
        ]
        uploads = [r for r in lines if "/blobs/uploads/" in r.path]
        return Sent(
            uploaded_bytes=sum(self._size(repo, digest) for repo, digest in completed),
            blob_uploads=len(completed),
            blob_writes=sum(1 for r in uploads if r.method in ("PUT", "PATCH")),
            uploads_started=sum(1 for r in uploads if r.method == "POST" and r.status == 202),
            mounts=sum(1 for r in uploads if r.method == "POST" and r.status == 201 and "mount=" in r.path),
            manifest_puts=sum(1 for r in lines if r.method == "PUT" and "/manifests/" in r.path),
        )

    def record(self, m: Measurement) -> None:
        """A Tool's `after`: what the run sent, into m.extra."""
        m.extra["dest_cpu_s"] = self._cpu() - self._cpu0  # first: sent() asks the registry for sizes
        m.extra.update({k: float(v) for k, v in asdict(self.sent()).items()})

    def _size(self, repo: str, digest: str) -> int:
        if digest not in self._sizes:
            status, headers, _ = self.registry.client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
            if status != 200:
                raise RegistryError(f"HEAD {repo}@{digest} after its upload completed: HTTP {status}")
            self._sizes[digest] = int(headers["content-length"])
        return self._sizes[digest]

    def manifest(self, repo: str, reference: str) -> bytes:
        return self.registry.client.get_manifest(repo, reference)[1]

    def source_manifest(self, repo: str, reference: str) -> bytes:
        """From the session's source registry, after the timed run (so not in its served bytes)."""
        return self._ctx.registry.client.get_manifest(repo, reference)[1]


def median_extra(ms: Sequence[Measurement], tool: str, key: str) -> float:
    return median_or_nan([m.extra[key] for m in ms if m.tool == tool and m.counted and key in m.extra])


def skopeo_raw(ref: str) -> bytes:
    """`skopeo inspect --raw`: a manifest's bytes as a reader other than occystrap sees them."""
    proc = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          capture_output=True, check=False, timeout=120)  # fmt: skip
    if proc.returncode != 0:
        raise RegistryError(f"skopeo inspect --raw {ref}: {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def sample(tags: Sequence[str]) -> list[str]:
    """First, middle and last: enough to catch a mix-up without 20 skopeo runs per check."""
    return list(dict.fromkeys([tags[0], tags[len(tags) // 2], tags[-1]]))


def holds_same_manifests(dest: Destination, source: PushedImage, repo: str, tags: Sequence[str]) -> Verify:
    """DEST/repo:TAG serves the source's exact manifest bytes for every tag (HTTP), and `skopeo inspect
    --raw` agrees on a sample; so every digest the manifests name travelled unchanged."""

    def check(_image: PushedImage, _out: Path) -> str | None:
        try:
            for tag in tags:
                if dest.manifest(repo, tag) != dest.source_manifest(source.repo, tag):
                    return f"{dest.host}/{repo}:{tag} differs from {source.ref}:{tag}"
            for tag in sample(tags):
                if skopeo_raw(f"{dest.host}/{repo}:{tag}") != skopeo_raw(f"{source.ref}:{tag}"):
                    return f"skopeo inspect --raw: {dest.host}/{repo}:{tag} differs from the source"
        except RegistryError as exc:
            return str(exc)
        log(f"    checked {dest.host}/{repo}: {len(tags)} tag(s) serve the source's manifest bytes")
        return None

    return check


def holds_same_configs(dest: Destination, source: PushedImage, repo: str, tags: Sequence[str]) -> Verify:
    """For a push that recompresses layers (skopeo from a docker-archive): every tag's manifest names
    the source's config digest (the image ID) and as many layers, and skopeo reads a sample."""

    def check(_image: PushedImage, _out: Path) -> str | None:
        try:
            for tag in tags:
                got = json.loads(dest.manifest(repo, tag))
                want = json.loads(dest.source_manifest(source.repo, tag))
                if got["config"]["digest"] != want["config"]["digest"]:
                    return f"{dest.host}/{repo}:{tag} names config {got['config']['digest']}"
                if len(got["layers"]) != len(want["layers"]):
                    return f"{dest.host}/{repo}:{tag} has {len(got['layers'])} layers"
            for tag in sample(tags):
                skopeo_raw(f"{dest.host}/{repo}:{tag}")
        except (RegistryError, ValueError, KeyError) as exc:
            return str(exc)
        return None

    return check


def pushing_tool(
    name: str, argv: Callable[[PushedImage, Path], tuple[list[str], Path]], dest: Destination, verify: Verify
) -> Tool:
    """A command that writes into `dest`: wiped before every run, what it sent recorded after."""
    return Tool(name, argv, verify, before=dest.reset, after=dest.record)


PUSH_HEADERS = ["tool", "runs", "median s", "min s", "peak RSS MiB", "CPU s", "dest CPU s", "MiB uploaded",
                "MiB fetched", "ratio", "paired", "target", "targets met"]  # fmt: skip


def push_row(
    sm: Summary, ms: Sequence[Measurement], ratio: float, paired: float, target: str, met: str
) -> list[str]:
    """One PUSH_HEADERS row: uploaded from the destination's log, fetched (blob bodies) from the source's."""
    fetched = median_or_nan([m.served_blob_bytes for m in ms if m.tool == sm.tool and m.counted])
    rss = fmt(sm.peak_rss_mib, 1) + (" !" if sm.peak_rss_mib > RSS_LIMIT_MIB else "")
    return [sm.tool, str(sm.runs), fmt(sm.median_s), fmt(sm.min_s), rss, fmt(sm.median_cpu_s),
            fmt(median_extra(ms, sm.tool, "dest_cpu_s")), mib(median_extra(ms, sm.tool, "uploaded_bytes")),
            mib(fetched), fmt(ratio), fmt(paired), target,
            ("NO: failed" if met != "-" else "failed") if sm.failed else met]  # fmt: skip
