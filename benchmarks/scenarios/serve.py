"""serve: `skopeo` pulling from `occystrap serve` vs from the distribution registry, same content.

The big image and the 20-tag set are pushed to the registry, mirrored from it with `occystrap
mirror` into a merged directory and into a bundle tarball, and each is served by `occystrap
serve`. Then, alternating, the same pull from each of the three: `skopeo copy` of the big image
to an OCI layout, and `skopeo copy` of each of the 20 tags into one OCI layout (skopeo reuses
the shared base layer there, so the time is the pulls', not a gigabyte of disk writes).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import MiB, log
from benchmarks.harness import BenchContext, Measurement, Tool
from benchmarks.images import PushedImage, fetch_images
from benchmarks.report import ScenarioResult, fmt, mib
from benchmarks.scenario import scenario
from benchmarks.stats import Check, Summary, failure_notes, paired_ratio, summarise
from benchmarks.taggroup import TAG_COUNT, push_tag_group
from benchmarks.tools import Verify, verify_oci_dir, verify_oci_tags

REGISTRY = "registry"
SERVE_DIR = "occystrap-serve-dir"
SERVE_BUNDLE = "occystrap-serve-bundle"
TARGET = 1.0  # median wall of the pull from occystrap serve / from the registry (throughput >= 1x)


class ServeProcess:
    """`occystrap serve PATH` on a port of its choosing, its access log in a file."""

    def __init__(self, ctx: BenchContext, path: Path, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [ctx.occystrap, "serve", str(path), "--listen", "127.0.0.1:0"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=ctx.env(),
            )
        self.host = self._wait_url().split("://", 1)[1].rstrip("/")

    def _wait_url(self, limit: float = 300.0) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("occystrap: serving ") and " at " in line:
                    return line.rsplit(" at ", 1)[1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"occystrap serve did not start:\n{self.log_path.read_text(errors='replace')}")

    def blob_bytes(self) -> int:
        """Body bytes of successful blob GETs so far (fields: client method path status bytes ms)."""
        total = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 6 and parts[1] == "GET" and "/blobs/" in parts[2] and parts[3] in ("200", "206"):
                total += int(parts[4])
        return total

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _pull_tools(
    host_of: dict[str, str], pull: Callable[[str, PushedImage, Path], list[str]], check: Verify
) -> list[Tool]:
    """One Tool per source: the same pull command, pointed at that source's host."""

    def make(source: str) -> Tool:
        def argv(image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
            out = rundir / "out"
            return pull(host_of[source], image, out), out

        return Tool(source, argv, check)

    return [make(source) for source in host_of]


def _copy_big(host: str, image: PushedImage, out: Path) -> list[str]:
    src = f"docker://{host}/{image.repo}:{image.tag}"
    return ["skopeo", "copy", "--quiet", "--src-tls-verify=false", src, f"oci:{out}:{image.tag}"]


def _copy_tags(tags: list[str]) -> Callable[[str, PushedImage, Path], list[str]]:
    def argv(host: str, image: PushedImage, out: Path) -> list[str]:
        src = f"docker://{host}/{image.repo}"
        script = (
            f'for t in {" ".join(tags)}; do skopeo copy --quiet --src-tls-verify=false "{src}:$t" '
            f'"oci:{out}:$t" || exit 1; done'
        )
        return ["sh", "-c", script]

    return argv


@scenario("serve", "skopeo pulling from occystrap serve (merged dir, bundle) vs from the registry", order=50)
def serve_pulls(ctx: BenchContext) -> ScenarioResult:
    big = ctx.push_image(next(s for s in fetch_images(ctx.args) if s.name == "big"))
    group = push_tag_group(ctx)
    tags20 = group.as_image
    spec = ctx.workdir / "serve.yaml"
    spec.write_text(
        f"images:\n  - name: {big.ref}\n    tags: [{big.tag}]\n"
        f"  - name: {group.first.ref}\n    tags: [{', '.join(group.tags)}]\n"
    )
    merged, bundle = ctx.workdir / "serve-merged", ctx.workdir / "serve-bundle.tar"
    for dest in (merged, bundle):
        done = subprocess.run([ctx.occystrap, "mirror", "--quiet", str(spec), str(dest)], env=ctx.env())
        if done.returncode != 0:
            raise SystemExit(f"occystrap mirror into {dest} failed")
    servers = {
        SERVE_DIR: ServeProcess(ctx, merged, ctx.workdir / "serve-merged.log"),
        SERVE_BUNDLE: ServeProcess(ctx, bundle, ctx.workdir / "serve-bundle.log"),
    }
    try:
        host_of = {REGISTRY: ctx.registry.host, **{name: s.host for name, s in servers.items()}}
        log(f"serving: {', '.join(f'{n} at {h}' for n, h in host_of.items())}")
        measurements: list[Measurement] = []
        served: dict[tuple[str, str], float] = {}
        cases = (
            (big, _copy_big, verify_oci_dir),
            (tags20, _copy_tags(group.tags), verify_oci_tags(group.tags)),
        )
        for image, pull, check in cases:
            tools = _pull_tools(host_of, pull, check)
            before = {name: s.blob_bytes() for name, s in servers.items()}
            log(f"timing {image.name}: {', '.join(host_of)}; 1 warm-up + {ctx.args.runs} rounds")
            measurements += ctx.run_alternating(image, tools, ctx.args.runs)
            for name, s in servers.items():
                served[(image.name, name)] = (s.blob_bytes() - before[name]) / (ctx.args.runs + 1)
        peaks = {name: s.peak_rss_mib() for name, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    return _report([big, tags20], list(host_of), measurements, served, peaks)


def _report(
    images: list[PushedImage],
    sources: list[str],
    measurements: list[Measurement],
    served: dict[tuple[str, str], float],
    peaks: dict[str, float],
) -> ScenarioResult:
    headers = ["image", "pulled from", "runs", "median s", "min s", "MiB/s", "blob MiB served",
               "server RSS MiB", "throughput x registry", "paired", "target", "targets met"]  # fmt: skip
    rows: list[list[str]] = []
    checks: list[Check] = []
    summaries: list[Summary] = []
    for image in images:
        by_source = {s: summarise(image, s, measurements) for s in sources}
        summaries += by_source.values()
        reg = by_source[REGISTRY]
        for source, sm in by_source.items():
            ratio = paired = float("nan")
            target = met = "-"
            if source != REGISTRY:
                ratio = reg.median_s / sm.median_s  # throughput relative to the registry's
                paired = 1 / paired_ratio(measurements, image.name, source, REGISTRY)
                check = Check(image.name, f"skopeo from {source} / from {REGISTRY} (median wall)",
                              sm.median_s / reg.median_s, TARGET)  # fmt: skip
                checks.append(check)
                target = f">={TARGET:g}x"
                met = "NO: failed" if sm.failed else "yes" if check.met else "NO"
            by_log = served.get((image.name, source))
            blob = mib(by_log) if by_log is not None else fmt(sm.median_served_mib, 1)
            rss = fmt(peaks[source], 1) if source in peaks else "-"
            rows.append([image.name, source, str(sm.runs), fmt(sm.median_s), fmt(sm.min_s),
                         fmt(sm.mib_per_s, 1), blob, rss, fmt(ratio), fmt(paired), target, met])  # fmt: skip
    notes = [
        f"{REGISTRY}: the distribution registry (docker-registry, filesystem storage) the images were "
        f"pushed to; {SERVE_DIR} / {SERVE_BUNDLE}: `occystrap serve` over `occystrap mirror`'s merged "
        "directory / bundle tarball of the same images (same digests); all on 127.0.0.1, plain HTTP.",
        "big: `skopeo copy docker://HOST/REPO:TAG oci:out:TAG`; "
        f"tags20: `skopeo copy docker://HOST/REPO:TAG oci:out:TAG` for each of the {TAG_COUNT} tags into one "
        "OCI layout (the shared base layer is fetched once: skopeo finds it in the layout after the first).",
        "throughput x registry = registry median / this median (>= 1: at least as fast); paired = the "
        "same from per-round ratios. blob MiB served: per run, from each server's access log.",
        "server RSS MiB: peak (VmHWM) of each `occystrap serve` process over the whole scenario.",
    ]
    for image in images:
        notes.append(
            f"{image.name}: {len(image.layers)} unique layer(s), {image.compressed_bytes / MiB:.1f} MiB"
        )
    notes += failure_notes(summaries, by_image=True)
    return ScenarioResult(
        name="serve",
        title="skopeo pulling from occystrap serve vs from the registry",
        headers=headers,
        rows=rows,
        checks=checks,
        notes=notes,
        data={
            "images": {image.name: image.describe() for image in images},
            "server_peak_rss_mib": peaks,
            "summaries": [asdict(s) for s in summaries],
            "measurements": [asdict(m) for m in measurements],
        },
    )
