"""registry-copy-big: the fetch scenario's big image (one layer) registry to registry: `occystrap copy
docker://SRC docker://DEST` vs `skopeo copy docker://SRC docker://DEST`; the tiny image too, for each
tool's fixed costs (no target)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from benchmarks.common import MiB, log
from benchmarks.destination import (
    PUSH_HEADERS,
    Destination,
    holds_same_manifests,
    median_extra,
    push_row,
    pushing_tool,
)
from benchmarks.harness import BenchContext, Measurement
from benchmarks.images import PushedImage, fetch_images
from benchmarks.report import ScenarioResult
from benchmarks.scenario import scenario
from benchmarks.stats import RSS_LIMIT_MIB, Check, Summary, failure_notes, paired_ratio, summarise

OCCY = "occystrap-copy-registry"
SKOPEO = "skopeo-copy-registry"
TIME_TARGET = 0.8  # occystrap / skopeo, median wall time


@scenario("registry-copy-big", "copy the big image registry to registry vs skopeo copy", order=70)
def registry_copy_big(ctx: BenchContext) -> ScenarioResult:
    specs = [s for s in fetch_images(ctx.args) if s.name in ("big", "tiny")]
    images = [ctx.push_image(s) for s in specs]
    untargeted = {s.name for s in specs if not s.targets}
    dest = Destination(ctx, "dest-copy")
    extra = ["-j", str(ctx.args.parallel)] if ctx.args.parallel else []

    def ends(img: PushedImage) -> list[str]:
        return [f"docker://{img.ref}:{img.tag}", f"docker://{dest.host}/{img.repo}:{img.tag}"]

    def occystrap_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        return [ctx.occystrap, "copy", "--quiet", *extra, *ends(img)], rundir / "none"

    def skopeo_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        tls = ["--src-tls-verify=false", "--dest-tls-verify=false"]
        return ["skopeo", "copy", "--quiet", *tls, *ends(img)], rundir / "none"

    ms: list[Measurement] = []
    for image in images:
        verify = holds_same_manifests(dest, image, image.repo, [image.tag])
        tools = [
            pushing_tool(OCCY, occystrap_argv, dest, verify),
            pushing_tool(SKOPEO, skopeo_argv, dest, verify),
        ]
        log(f"timing {image.name} into a registry: {OCCY}, {SKOPEO}; 1 warm-up + {ctx.args.runs} rounds")
        ms += ctx.run_alternating(image, tools, ctx.args.runs)
    dest.stop()

    rows: list[list[str]] = []
    checks: list[Check] = []
    summaries: list[Summary] = []
    for image in images:
        occy, skopeo = summarise(image, OCCY, ms), summarise(image, SKOPEO, ms)
        summaries += [occy, skopeo]
        mine = [m for m in ms if m.image == image.name]
        ratio = occy.median_s / skopeo.median_s
        paired = paired_ratio(ms, image.name, OCCY, SKOPEO)
        target = met = "-"
        if image.name not in untargeted:
            uploaded = median_extra(mine, OCCY, "uploaded_bytes") / image.compressed_bytes
            found = [
                Check(image.name, f"{OCCY} / {SKOPEO} (median wall)", ratio, TIME_TARGET),
                Check(image.name, f"{OCCY} peak RSS", occy.peak_rss_mib, RSS_LIMIT_MIB, " MiB"),
                Check(image.name, f"{OCCY} bytes uploaded / the image's blob bytes", uploaded, 1.0),
            ]
            checks += found
            misses = [w for c, w in zip(found, ("time", "RSS", "bytes"), strict=True) if not c.met]
            target = f"<={TIME_TARGET:g} x {SKOPEO}; RSS<={RSS_LIMIT_MIB:g}; uploaded=blobs"
            met = "yes" if not misses else "NO: " + ", ".join(misses)
        rows += [
            [image.name, *push_row(occy, mine, ratio, paired, target, met)],
            [image.name, *push_row(skopeo, mine, float("nan"), float("nan"), "-", "-")],
        ]
    notes = [
        f"{image.name}: {image.ref}:{image.tag}, {len(image.layers)} gzip layer(s), "
        f"{image.compressed_bytes / MiB:.1f} MiB of blobs ({image.uncompressed_bytes / MiB:.0f} MiB of tar)"
        + (": no target, its times are each tool's fixed costs." if image.name in untargeted else ".")
        for image in images
    ]
    notes += [
        "Into a second registry on loopback, wiped (new process, storage and port) before every run. "
        "ratio = occystrap median / skopeo median; paired = median of per-round ratios. MiB uploaded = sizes "
        "of the blobs whose upload the destination completed (from its access log), median; dest CPU s = "
        "the destination registry's CPU time during the run, median.",
    ]
    notes += failure_notes(summaries, by_image=True)
    return ScenarioResult(
        name="registry-copy-big",
        title="copy the big image registry to registry vs skopeo copy",
        headers=["image", *PUSH_HEADERS],
        rows=rows,
        checks=checks,
        notes=notes,
        data={
            "images": {image.name: image.describe() for image in images},
            "summaries": [asdict(s) for s in summaries],
            "measurements": [asdict(m) for m in ms],
        },
    )
