"""registry-copy-big: the fetch scenario's big image (one layer) registry to registry: `occystrap copy
docker://SRC docker://DEST` vs `skopeo copy docker://SRC docker://DEST`."""

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
from benchmarks.harness import BenchContext
from benchmarks.images import PushedImage, fetch_images
from benchmarks.report import ScenarioResult
from benchmarks.scenario import scenario
from benchmarks.stats import RSS_LIMIT_MIB, Check, paired_ratio, summarise

OCCY = "occystrap-copy-registry"
SKOPEO = "skopeo-copy-registry"
TIME_TARGET = 0.8  # occystrap / skopeo, median wall time


@scenario("registry-copy-big", "copy the big image registry to registry vs skopeo copy", order=70)
def registry_copy_big(ctx: BenchContext) -> ScenarioResult:
    image = ctx.push_image(next(s for s in fetch_images(ctx.args) if s.name == "big"))
    dest = Destination(ctx, "dest-copy")
    repo = image.repo
    extra = ["-j", str(ctx.args.parallel)] if ctx.args.parallel else []

    def occystrap_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        src, dst = f"docker://{img.ref}:{img.tag}", f"docker://{dest.host}/{repo}:{img.tag}"
        return [ctx.occystrap, "copy", "--quiet", *extra, src, dst], rundir / "none"

    def skopeo_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        src, dst = f"docker://{img.ref}:{img.tag}", f"docker://{dest.host}/{repo}:{img.tag}"
        tls = ["--src-tls-verify=false", "--dest-tls-verify=false"]
        return ["skopeo", "copy", "--quiet", *tls, src, dst], rundir / "none"

    verify = holds_same_manifests(dest, image, repo, [image.tag])
    tools = [
        pushing_tool(OCCY, occystrap_argv, dest, verify),
        pushing_tool(SKOPEO, skopeo_argv, dest, verify),
    ]
    log(f"timing {image.name} into {dest.host}: {OCCY}, {SKOPEO}; 1 warm-up + {ctx.args.runs} rounds")
    ms = ctx.run_alternating(image, tools, ctx.args.runs)
    dest.stop()

    occy, skopeo = summarise(image, OCCY, ms), summarise(image, SKOPEO, ms)
    ratio = occy.median_s / skopeo.median_s
    paired = paired_ratio(ms, image.name, OCCY, SKOPEO)
    uploaded = median_extra(ms, OCCY, "uploaded_bytes")
    time_c = Check(image.name, f"{OCCY} / {SKOPEO} (median wall)", ratio, TIME_TARGET)
    rss_c = Check(image.name, f"{OCCY} peak RSS", occy.peak_rss_mib, RSS_LIMIT_MIB, " MiB")
    bytes_c = Check(
        image.name, f"{OCCY} bytes uploaded / the image's blob bytes", uploaded / image.compressed_bytes, 1.0
    )
    misses = [w for c, w in ((time_c, "time"), (rss_c, "RSS"), (bytes_c, "bytes")) if not c.met]
    target = f"<={TIME_TARGET:g} x {SKOPEO}; RSS<={RSS_LIMIT_MIB:g}; uploaded=blobs"
    rows = [
        push_row(occy, ms, ratio, paired, target, "yes" if not misses else "NO: " + ", ".join(misses)),
        push_row(skopeo, ms, float("nan"), float("nan"), "-", "-"),
    ]
    layer = image.layers[0]
    notes = [
        f"{image.ref}:{image.tag}: one {layer.size / MiB:.1f} MiB gzip layer ({layer.tar_size / MiB:.0f} "
        f"MiB of tar) and its config ({image.compressed_bytes} blob bytes), into a second registry on "
        "loopback, wiped (new process, storage and port) before every run.",
        "ratio = occystrap median / skopeo median; paired = median of per-round ratios. MiB uploaded = sizes "
        "of the blobs whose upload the destination completed (from its access log), median.",
    ]
    notes += [
        f"FAILED {s.tool}: {s.error.splitlines()[-1] if s.error else ''}" for s in (occy, skopeo) if s.failed
    ]
    return ScenarioResult(
        name="registry-copy-big",
        title="copy the big image registry to registry vs skopeo copy",
        headers=PUSH_HEADERS,
        rows=rows,
        checks=[time_c, rss_c, bytes_c],
        notes=notes,
        data={
            "image": image.describe(),
            "summaries": [asdict(occy), asdict(skopeo)],
            "measurements": [asdict(m) for m in ms],
        },
    )
