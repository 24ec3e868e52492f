"""mirror: `occystrap mirror` of 20 tags sharing a base layer vs `skopeo sync` and a `skopeo copy`
loop; blob bytes fetched vs unique; the incremental re-run on an up-to-date directory."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import KiB, MiB, log
from benchmarks.harness import BenchContext, Measurement, Tool
from benchmarks.images import PushedImage
from benchmarks.report import ScenarioResult, fmt, mib
from benchmarks.scenario import scenario
from benchmarks.stats import Check, failure_notes, median_or_nan, paired_ratio, summarise
from benchmarks.taggroup import TAG_COUNT, TagGroup, merged_holds, mirror_spec, push_tag_group
from benchmarks.tools import Verify, verify_oci_tags

OCCY_MIRROR = "occystrap-mirror"
OCCY_RERUN = "occystrap-mirror re-run"
SKOPEO_SYNC = "skopeo-sync-dir"
SKOPEO_LOOP = "skopeo-copy-loop-oci"
MIRROR_TARGET = 0.8  # occystrap mirror / the faster skopeo, median wall time
RERUN_TARGET_S = 1.0


def _skopeo_sync_holds(group: TagGroup) -> Verify:
    def check(_image: PushedImage, out: Path) -> str | None:
        found = {p.parent.name for p in out.rglob("manifest.json")}
        want = {f"{group.first.repo.rsplit('/', 1)[-1]}:{t}" for t in group.tags}
        return None if found == want else f"synced {sorted(found)}, expected {sorted(want)}"

    return check


@scenario(
    "mirror", f"mirror {TAG_COUNT} tags sharing a base layer vs skopeo sync / a skopeo copy loop", order=30
)
def mirror_tags(ctx: BenchContext) -> ScenarioResult:
    group = push_tag_group(ctx)
    image = group.as_image
    spec = mirror_spec(ctx, group)
    src = f"docker://{group.first.ref}"

    def occystrap_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        return [ctx.occystrap, "mirror", "--quiet", str(spec), str(out)], out

    def sync_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        return ["skopeo", "sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false",
                group.first.ref, str(out)], out  # fmt: skip

    def loop_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        script = (
            f'for t in {" ".join(group.tags)}; do skopeo copy --quiet --src-tls-verify=false "{src}:$t" '
            f'"oci:{out}:$t" || exit 1; done'
        )
        return ["sh", "-c", script], out

    tools = [
        Tool(OCCY_MIRROR, occystrap_argv, merged_holds(ctx, group)),
        Tool(SKOPEO_SYNC, sync_argv, _skopeo_sync_holds(group)),
        Tool(SKOPEO_LOOP, loop_argv, verify_oci_tags(group.tags)),
    ]
    log(f"timing {TAG_COUNT} tags: {', '.join(t.name for t in tools)}; 1 warm-up + {ctx.args.runs} rounds")
    measurements = ctx.run_alternating(image, tools, ctx.args.runs)

    # The incremental re-run: the same spec against an up-to-date DEST.
    inc_dir = ctx.workdir / "run" / "incremental"
    shutil.rmtree(inc_dir, ignore_errors=True)
    inc_dir.mkdir(parents=True)
    argv, out = occystrap_argv(image, inc_dir)
    first = ctx.timed(OCCY_RERUN, image.name, 0, argv, inc_dir, out)
    reruns = [first]
    if first.rc == 0:
        for i in range(max(5, ctx.args.runs)):
            m = ctx.timed(OCCY_RERUN, image.name, i + 1, argv, inc_dir, out)
            reruns.append(m)
            log(f"  [tags20] re-run {i + 1}: {m.wall_s:.2f}s, served blobs {m.served_blob_bytes} B"
                + ("" if m.rc == 0 else f" FAILED (rc {m.rc})"))  # fmt: skip
    shutil.rmtree(inc_dir, ignore_errors=True)
    measurements += reruns

    by_tool = {t.name: summarise(image, t.name, measurements) for t in tools}
    rerun = summarise(image, OCCY_RERUN, reruns)
    comparators = [n for n in (SKOPEO_SYNC, SKOPEO_LOOP) if not by_tool[n].failed]
    best = min(comparators, key=lambda n: by_tool[n].median_s) if comparators else None
    ratio = by_tool[OCCY_MIRROR].median_s / by_tool[best].median_s if best else float("nan")
    paired = paired_ratio(measurements, image.name, OCCY_MIRROR, best) if best else float("nan")

    def fetched(tool: str, ms: Sequence[Measurement] = measurements) -> float:
        return median_or_nan([m.served_blob_bytes for m in ms if m.tool == tool and m.counted])

    occy_fetched = fetched(OCCY_MIRROR)
    rerun_fetched = fetched(OCCY_RERUN, reruns)
    checks = [
        Check("tags20", f"{OCCY_MIRROR} / {best or 'skopeo'} (median wall)", ratio, MIRROR_TARGET),
        Check(
            "tags20",
            f"{OCCY_MIRROR} blob bytes fetched / unique blob bytes",
            occy_fetched / group.unique_bytes,
            1.0,
        ),
        Check("tags20", f"{OCCY_RERUN} median wall", rerun.median_s, RERUN_TARGET_S, " s"),
    ]
    headers = ["tool", "runs", "median s", "min s", "peak RSS MiB", "CPU s", "blob MiB fetched",
               "unique MiB", "referenced MiB", "ratio", "paired", "target", "targets met"]  # fmt: skip
    rows = []
    for name in [t.name for t in tools] + [OCCY_RERUN]:
        sm = rerun if name == OCCY_RERUN else by_tool[name]
        got = rerun_fetched if name == OCCY_RERUN else fetched(name)
        r = p = float("nan")
        target = met = "-"
        if name == OCCY_MIRROR:
            r, p = ratio, paired
            target = f"<={MIRROR_TARGET:g} x {best or '?'}; fetched=unique"
            misses = [w for c, w in zip(checks[:2], ("time", "bytes"), strict=True) if not c.met]
            met = "yes" if not misses else "NO: " + ", ".join(misses)
        elif name == OCCY_RERUN:
            target = f"<{RERUN_TARGET_S:g} s"
            met = "yes" if checks[2].met else "NO"
        if sm.failed:
            met = "NO: failed" if name in (OCCY_MIRROR, OCCY_RERUN) else "failed"
        rows.append([
            name, str(sm.runs), fmt(sm.median_s), fmt(sm.min_s), fmt(sm.peak_rss_mib, 1),
            fmt(sm.median_cpu_s), mib(got), mib(group.unique_bytes), mib(group.referenced_bytes), fmt(r),
            fmt(p), target, met,
        ])  # fmt: skip
    base = group.first.layers[0]
    notes = [
        f"{TAG_COUNT} tags of {group.first.ref}: one {base.size / MiB:.1f} MiB gzip base layer "
        f"({base.tar_size / MiB:.0f} MiB of tar) shared by all, plus one small layer each "
        f"({group.first.layers[1].size / KiB:.0f} KiB gzip); unique blob bytes {group.unique_bytes} "
        f"(layers + {TAG_COUNT} configs), referenced {group.referenced_bytes}.",
        f"{OCCY_MIRROR}: `occystrap mirror SPEC DIR` into a merged directory; {SKOPEO_SYNC}: "
        f"`skopeo sync --src docker --dest dir REPO DIR` (one directory per tag, blobs not shared); "
        f"{SKOPEO_LOOP}: `skopeo copy docker://REPO:TAG oci:DIR:TAG` for each tag into one OCI layout.",
        f"ratio = occystrap median / median of the faster skopeo way ({best}); paired = median of per-round "
        "ratios. blob MiB fetched = bytes of GET .../blobs/ bodies in the registry's access log (median).",
        f"{OCCY_RERUN}: the same `occystrap mirror` again on a complete DIR ({len(reruns) - 1} timed runs "
        f"after a first full one); blob bytes fetched: {rerun_fetched:.0f} (manifests are asked for again; "
        "configs DIR holds are read from it; every blob in DIR is re-hashed once).",
    ]
    notes += failure_notes([*by_tool.values(), rerun])
    return ScenarioResult(
        name="mirror",
        title=f"mirror {TAG_COUNT} tags sharing a base layer vs skopeo",
        headers=headers,
        rows=rows,
        checks=checks,
        notes=notes,
        data={
            "group": group.describe(),
            "summaries": [asdict(sm) for sm in [*by_tool.values(), rerun]],
            "measurements": [asdict(m) for m in measurements],
        },
    )
