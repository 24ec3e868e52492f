"""fetch: `occystrap fetch-to-tarfile` (compressed and uncompressed layers) vs `skopeo copy` to a
docker-archive and to an OCI layout, on the big, five-layer and tiny images."""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.common import MiB, log
from benchmarks.harness import BenchContext, Measurement
from benchmarks.images import fetch_images
from benchmarks.report import ScenarioResult, fmt
from benchmarks.scenario import scenario
from benchmarks.stats import RSS_LIMIT_MIB, Check, Summary, failure_notes, paired_ratio, summarise
from benchmarks.tools import (
    SKOPEO_DA,
    SKOPEO_OCI,
    layer_diff_ids,
    layer_digests,
    occystrap_tool,
    skopeo_docker_archive_tool,
    skopeo_oci_tool,
    verify_docker_tarball,
)

OCCY_C = "occystrap-compressed"
OCCY_U = "occystrap-uncompressed"


@scenario(
    "fetch",
    "fetch-to-tarfile (compressed and uncompressed) vs skopeo copy to docker-archive and oci",
    order=10,
)
def fetch_to_tarfile(ctx: BenchContext) -> ScenarioResult:
    extra = ["-j", str(ctx.args.parallel)] if ctx.args.parallel else []
    tools = [
        occystrap_tool(ctx, OCCY_C, "fetch-to-tarfile", "--quiet", *extra,
                       verify=verify_docker_tarball(layer_digests)),
        occystrap_tool(ctx, OCCY_U, "fetch-to-tarfile", "--quiet", "--uncompressed-layers", *extra,
                       verify=verify_docker_tarball(layer_diff_ids)),
        skopeo_docker_archive_tool(),
        skopeo_oci_tool(),
    ]  # fmt: skip
    # (occystrap tool, skopeo tool it is compared with, target ratio of median times)
    pairs = {OCCY_U: (SKOPEO_DA, 0.5), OCCY_C: (SKOPEO_OCI, 1.0)}

    specs = fetch_images(ctx.args)
    untargeted = {spec.name for spec in specs if not spec.targets}
    images = [ctx.push_image(spec) for spec in specs]
    measurements: list[Measurement] = []
    for image in images:
        log(f"timing {image.name}: {', '.join(t.name for t in tools)}; 1 warm-up + {ctx.args.runs} rounds")
        measurements += ctx.run_alternating(image, tools, ctx.args.runs)

    headers = ["image", "tool", "runs", "median s", "min s", "MiB/s", "peak RSS MiB", "CPU s",
               "ratio", "paired", "target", "targets met"]  # fmt: skip
    rows: list[list[str]] = []
    checks: list[Check] = []
    summaries: list[Summary] = []
    for image in images:
        by_tool = {t.name: summarise(image, t.name, measurements) for t in tools}
        summaries += by_tool.values()
        for t in tools:
            s = by_tool[t.name]
            ratio = paired = float("nan")
            target = met = "-"
            if t.name in pairs:
                other, limit = pairs[t.name]
                ratio = s.median_s / by_tool[other].median_s
                paired = paired_ratio(measurements, image.name, t.name, other)
                if image.name not in untargeted:
                    time_check = Check(image.name, f"{t.name} / {other} (median wall)", ratio, limit)
                    rss_check = Check(image.name, f"{t.name} peak RSS", s.peak_rss_mib, RSS_LIMIT_MIB, "MiB")
                    checks += [time_check, rss_check]
                    target = f"<={limit:g}, RSS<={RSS_LIMIT_MIB:g}"
                    misses = [w for c, w in ((time_check, "time"), (rss_check, "RSS")) if not c.met]
                    met = "yes" if not misses else "NO: " + ", ".join(misses)
                    if s.failed:
                        met = "NO: failed"
            rss = fmt(s.peak_rss_mib, 1) + (" !" if s.peak_rss_mib > RSS_LIMIT_MIB else "")
            rows.append([
                image.name, t.name, str(s.runs), fmt(s.median_s), fmt(s.min_s), fmt(s.mib_per_s, 1), rss,
                fmt(s.median_cpu_s), fmt(ratio), fmt(paired), target, met,
            ])  # fmt: skip
    notes = [
        "ratio = median wall time of the occystrap row / median of its skopeo comparator "
        f"({OCCY_U} vs {SKOPEO_DA}, {OCCY_C} vs {SKOPEO_OCI}); paired = median of per-round ratios.",
        "MiB/s = compressed bytes of the image / median wall time; "
        f"'!' marks peak RSS > {RSS_LIMIT_MIB:g} MiB.",
        "CPU s = median user+sys of the process (GNU time); "
        "both tools run on the same 2 cores as the registry.",
    ]
    for image in images:
        notes.append(
            f"{image.name}: {len(image.layers)} layer(s), "
            f"{image.compressed_bytes / MiB:.1f} MiB compressed, "
            f"{image.uncompressed_bytes / MiB:.1f} MiB uncompressed, "
            f"{sum(la.files for la in image.layers)} files."
            + (" No target: its times are the tools' fixed costs." if image.name in untargeted else "")
        )
    notes += failure_notes(summaries, by_image=True)
    return ScenarioResult(
        name="fetch",
        title="fetch-to-tarfile vs skopeo copy",
        headers=headers,
        rows=rows,
        checks=checks,
        notes=notes,
        data={
            "images": {image.name: image.describe() for image in images},
            "summaries": [asdict(s) for s in summaries],
            "measurements": [asdict(m) for m in measurements],
        },
    )
