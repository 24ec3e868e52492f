"""bundle-push: the 20 tags sharing a base layer as one bundle tarball (made once with `occystrap
mirror SPEC bundle.tar`), pushed into a registry with `occystrap push bundle.tar DEST/PREFIX`, vs
`skopeo copy docker-archive:TAG.tar docker://DEST/...:TAG` per tag (one archive per image, made once
by `skopeo copy docker://... docker-archive:...`, so plain layers).

Archives with gzip layers (as `occystrap fetch-to-tarfile` writes them) made skopeo 2.5-4x slower
(15-33 s, 12 s of CPU): it inflates each archive's layer to learn its size and digest, then gzips
it again for the registry. So the comparator is skopeo's own archive."""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import MiB, log
from benchmarks.destination import (
    PUSH_HEADERS,
    Destination,
    holds_same_configs,
    holds_same_manifests,
    median_extra,
    push_row,
    pushing_tool,
)
from benchmarks.harness import BenchContext, path_size
from benchmarks.images import PushedImage
from benchmarks.report import ScenarioResult
from benchmarks.scenario import scenario
from benchmarks.stats import RSS_LIMIT_MIB, Check, failure_notes, paired_ratio, summarise
from benchmarks.taggroup import TAG_COUNT, TagGroup, mirror_spec, push_tag_group

OCCY = "occystrap-push-bundle"
SKOPEO = "skopeo-copy-loop-archive"


def _run(ctx: BenchContext, argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=ctx.env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()[-500:]}")


def _inputs(ctx: BenchContext, group: TagGroup) -> tuple[Path, Path]:
    """The bundle and the per-tag archives, made once per invocation (not timed)."""
    root = ctx.workdir / "push-inputs"
    bundle, archives = root / "bundle.tar", root / "archives"
    if bundle.exists():
        return bundle, archives
    archives.mkdir(parents=True)
    t0 = time.monotonic()
    _run(ctx, [ctx.occystrap, "mirror", "--quiet", str(mirror_spec(ctx, group)), str(bundle)])
    src = group.first
    for tag in group.tags:
        _run(ctx, ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{src.ref}:{tag}",
                   f"docker-archive:{archives / f'{tag}.tar'}:{src.ref}:{tag}"])  # fmt: skip
    log(f"made {bundle} ({path_size(bundle) / MiB:.1f} MiB) and {TAG_COUNT} docker-archives "
        f"({path_size(archives) / MiB:.0f} MiB) in {time.monotonic() - t0:.0f}s")  # fmt: skip
    return bundle, archives


@scenario(
    "bundle-push", f"push a bundle of {TAG_COUNT} tags into a registry vs skopeo copy per archive", order=80
)
def bundle_push(ctx: BenchContext) -> ScenarioResult:
    group = push_tag_group(ctx)
    image = group.as_image
    bundle, archives = _inputs(ctx, group)
    dest = Destination(ctx, "dest-push")
    src = group.first
    repos = {OCCY: f"occy/{src.repo}", SKOPEO: f"skopeo/{src.repo}"}

    def occystrap_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        return [ctx.occystrap, "push", "--quiet", str(bundle), f"docker://{dest.host}/occy"], rundir / "none"

    def loop_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        script = (
            f"for t in {' '.join(group.tags)}; do skopeo copy --quiet --dest-tls-verify=false "
            f'"docker-archive:{archives}/$t.tar" "docker://{dest.host}/{repos[SKOPEO]}:$t" || exit 1; done'
        )
        return ["sh", "-c", script], rundir / "none"

    tools = [
        pushing_tool(OCCY, occystrap_argv, dest, holds_same_manifests(dest, src, repos[OCCY], group.tags)),
        pushing_tool(SKOPEO, loop_argv, dest, holds_same_configs(dest, src, repos[SKOPEO], group.tags)),
    ]
    log(f"timing {TAG_COUNT} tags pushed into {dest.host}: {', '.join(t.name for t in tools)}; "
        f"1 warm-up + {ctx.args.runs} rounds")  # fmt: skip
    ms = ctx.run_alternating(image, tools, ctx.args.runs)
    dest.stop()

    sm = {t.name: summarise(image, t.name, ms) for t in tools}
    ratio = sm[OCCY].median_s / sm[SKOPEO].median_s
    paired = paired_ratio(ms, image.name, OCCY, SKOPEO)
    uploaded = median_extra(ms, OCCY, "uploaded_bytes")
    bytes_c = Check(
        "tags20", f"{OCCY} bytes uploaded / unique blob bytes", uploaded / group.unique_bytes, 1.0
    )
    rss_c = Check("tags20", f"{OCCY} peak RSS", sm[OCCY].peak_rss_mib, RSS_LIMIT_MIB, " MiB")
    misses = [w for c, w in ((bytes_c, "bytes"), (rss_c, "RSS")) if not c.met]
    rows = [
        push_row(sm[OCCY], ms, ratio, paired, f"same digests; uploaded=unique; RSS<={RSS_LIMIT_MIB:g}",
                 "yes" if not misses else "NO: " + ", ".join(misses)),
        push_row(sm[SKOPEO], ms, float("nan"), float("nan"), "-", "-"),
    ]  # fmt: skip
    notes = [
        f"{bundle.name}: {path_size(bundle) / MiB:.1f} MiB, the {TAG_COUNT} tags of {src.ref} (unique blob "
        f"bytes {group.unique_bytes}); pushed into a second registry on loopback, wiped (new process, "
        "storage and port) before every run.",
        f"{OCCY}: `occystrap push bundle.tar docker://DEST/occy`; {SKOPEO}: `skopeo copy "
        "docker-archive:TAG.tar docker://DEST/...:TAG` per tag, from archives skopeo wrote (plain layers: "
        "from archives with gzip layers skopeo took 2.5-4x as long, inflating and gzipping each again).",
        "Checked on the warm-up round: occystrap's pushed tags serve the source's manifest bytes (so every "
        "digest is the source's); skopeo's name the source's config but recompressed layers (a "
        "docker-archive holds no compressed digest), so their MiB uploaded is not the source's.",
        "ratio = occystrap median / skopeo median; paired = median of per-round ratios; no time target. "
        "MiB uploaded = sizes of the blobs whose upload completed (destination's access log), median; "
        "dest CPU s = the destination registry's CPU time during the run.",
    ]
    notes += failure_notes(sm.values())
    return ScenarioResult(
        name="bundle-push",
        title=f"push a bundle of {TAG_COUNT} tags into a registry vs skopeo copy per docker-archive",
        headers=PUSH_HEADERS,
        rows=rows,
        checks=[bytes_c, rss_c],
        notes=notes,
        data={
            "group": group.describe(),
            "bundle_bytes": path_size(bundle),
            "summaries": [asdict(s) for s in sm.values()],
            "measurements": [asdict(m) for m in ms],
        },
    )
