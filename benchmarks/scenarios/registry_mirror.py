"""registry-mirror: the 20 tags sharing a base layer, registry to registry: `occystrap mirror SPEC
docker://DEST/PREFIX` vs `skopeo sync --src docker --dest docker` and a loop of `skopeo copy` per tag;
bytes uploaded vs unique; the re-run against an up-to-date destination (nothing may be sent)."""

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
from benchmarks.harness import BenchContext, Measurement, Tool
from benchmarks.images import PushedImage
from benchmarks.report import ScenarioResult, fmt
from benchmarks.scenario import scenario
from benchmarks.stats import RSS_LIMIT_MIB, Check, failure_notes, paired_ratio, summarise
from benchmarks.taggroup import TAG_COUNT, TagGroup, mirror_spec, push_tag_group

OCCY = "occystrap-mirror-registry"
RERUN = "occystrap-mirror-registry re-run"
SYNC = "skopeo-sync-registry"
LOOP = "skopeo-copy-loop-registry"
TIME_TARGET = 0.5  # occystrap / the faster skopeo way, median wall time
RERUN_TARGET_S = 1.0
SKOPEO_TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


@scenario(
    "registry-mirror", f"mirror {TAG_COUNT} tags registry to registry vs skopeo sync / copy loop", order=60
)
def registry_mirror(ctx: BenchContext) -> ScenarioResult:
    group = push_tag_group(ctx)
    image = group.as_image
    spec = mirror_spec(ctx, group)
    dest = Destination(ctx, "dest-mirror")
    src = group.first
    # Where each tool puts the repository: occystrap keeps its path under the prefix, skopeo sync
    # keeps only its last component.
    repos = {OCCY: f"occy/{src.repo}", SYNC: f"sync/{src.repo.rsplit('/', 1)[-1]}", LOOP: f"loop/{src.repo}"}

    def occystrap_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        return [ctx.occystrap, "mirror", "--quiet", str(spec), f"docker://{dest.host}/occy"], rundir / "none"

    def sync_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        return ["skopeo", "sync", "--src", "docker", "--dest", "docker", *SKOPEO_TLS, src.ref,
                f"{dest.host}/sync"], rundir / "none"  # fmt: skip

    def loop_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        script = (
            f"for t in {' '.join(group.tags)}; do skopeo copy --quiet {' '.join(SKOPEO_TLS)} "
            f'"docker://{src.ref}:$t" "docker://{dest.host}/{repos[LOOP]}:$t" || exit 1; done'
        )
        return ["sh", "-c", script], rundir / "none"

    argvs = {OCCY: occystrap_argv, SYNC: sync_argv, LOOP: loop_argv}
    tools = [
        pushing_tool(n, argvs[n], dest, holds_same_manifests(dest, src, repos[n], group.tags)) for n in argvs
    ]
    log(f"timing {TAG_COUNT} tags into {dest.host}: {', '.join(argvs)}; 1 warm-up + {ctx.args.runs} rounds")
    ms = ctx.run_alternating(image, tools, ctx.args.runs)

    # The re-run: one full mirror into an empty destination, then the same command again and again.
    rerun_tools = [Tool(RERUN, occystrap_argv, before=dest.reset, after=dest.record),
                   Tool(RERUN, occystrap_argv, before=dest.mark, after=dest.record)]  # fmt: skip
    reruns = [ctx.measure(rerun_tools[0], image, 0)]
    for i in range(max(5, ctx.args.runs)) if reruns[0].rc == 0 else ():
        m = ctx.measure(rerun_tools[1], image, i + 1)
        reruns.append(m)
        failed = "" if m.rc == 0 else f" FAILED (rc {m.rc})"
        log(f"  [tags20] re-run {i + 1}: {m.wall_s:.2f}s, blob PUT/PATCH {m.extra.get('blob_writes')}, "
            f"manifest PUT {m.extra.get('manifest_puts')}{failed}")  # fmt: skip
    dest.stop()
    return _result(group, ms, reruns)


def _result(group: TagGroup, ms: list[Measurement], reruns: list[Measurement]) -> ScenarioResult:
    image = group.as_image
    sm = {n: summarise(image, n, ms) for n in (OCCY, SYNC, LOOP)}
    rerun = summarise(image, RERUN, reruns)
    ok = [n for n in (SYNC, LOOP) if not sm[n].failed]
    best = min(ok, key=lambda n: sm[n].median_s) if ok else None
    ratio = sm[OCCY].median_s / sm[best].median_s if best else float("nan")
    paired = paired_ratio(ms, image.name, OCCY, best) if best else float("nan")
    uploaded = median_extra(ms, OCCY, "uploaded_bytes")
    counted = [m for m in reruns if m.counted]
    sent_again = max(
        (m.extra["blob_writes"] + m.extra["manifest_puts"] for m in counted), default=float("nan")
    )
    time_c = Check("tags20", f"{OCCY} / {best or 'skopeo'} (median wall)", ratio, TIME_TARGET)
    bytes_c = Check(
        "tags20", f"{OCCY} bytes uploaded / unique blob bytes", uploaded / group.unique_bytes, 1.0
    )
    rss_c = Check("tags20", f"{OCCY} peak RSS", sm[OCCY].peak_rss_mib, RSS_LIMIT_MIB, " MiB")
    rerun_c = Check("tags20", f"{RERUN} median wall", rerun.median_s, RERUN_TARGET_S, " s")
    quiet_c = Check(
        "tags20", f"{RERUN} blob PUT/PATCH + manifest PUT requests (most in a run)", sent_again, 0
    )
    misses = [w for c, w in ((time_c, "time"), (bytes_c, "bytes"), (rss_c, "RSS")) if not c.met]
    rerun_misses = [w for c, w in ((rerun_c, "time"), (quiet_c, "sent")) if not c.met]
    rows = [
        push_row(sm[OCCY], ms, ratio, paired, f"<={TIME_TARGET:g} x {best or '?'}; uploaded=unique; "
                 f"RSS<={RSS_LIMIT_MIB:g}", "yes" if not misses else "NO: " + ", ".join(misses)),
        push_row(sm[SYNC], ms, float("nan"), float("nan"), "-", "-"),
        push_row(sm[LOOP], ms, float("nan"), float("nan"), "-", "-"),
        push_row(rerun, reruns, float("nan"), float("nan"), f"<={RERUN_TARGET_S:g} s; nothing sent",
                 "yes" if not rerun_misses else "NO: " + ", ".join(rerun_misses)),
    ]  # fmt: skip
    base = group.first.layers[0]
    notes = [
        f"{TAG_COUNT} tags of {group.first.ref}, one {base.size / MiB:.1f} MiB gzip base layer shared by "
        f"all plus a small layer each: unique blob bytes {group.unique_bytes} "
        f"({group.unique_bytes / MiB:.1f} MiB), referenced {group.referenced_bytes / MiB:.1f} MiB.",
        f"Into a second registry on loopback, wiped (new process, storage and port) before every run. "
        f"{OCCY}: `occystrap mirror SPEC docker://DEST/occy`; {SYNC}: `skopeo sync --src docker "
        f"--dest docker REPO DEST/sync`; {LOOP}: `skopeo copy docker://REPO:TAG docker://DEST/loop/...:TAG` "
        "per tag.",
        f"ratio = occystrap median / median of the faster skopeo way ({best}); paired = median of per-round "
        "ratios. MiB uploaded = sizes of the blobs whose upload the destination completed (its access log "
        "has no request sizes), median; MiB fetched = blob bodies the source served, median; dest CPU s = "
        "the destination registry's CPU time during the run, median.",
        f"{RERUN}: `occystrap mirror` again on an up-to-date destination ({len(counted)} timed runs after a "
        f"full one); most blob PUT/PATCH + manifest PUT requests in one run: {fmt(sent_again, 0)}.",
    ]
    notes += failure_notes([*sm.values(), rerun])
    return ScenarioResult(
        name="registry-mirror",
        title=f"mirror {TAG_COUNT} tags registry to registry vs skopeo",
        headers=PUSH_HEADERS,
        rows=rows,
        checks=[time_c, bytes_c, rss_c, rerun_c, quiet_c],
        notes=notes,
        data={
            "group": group.describe(),
            "summaries": [asdict(s) for s in [*sm.values(), rerun]],
            "measurements": [asdict(m) for m in ms + reruns],
        },
    )
