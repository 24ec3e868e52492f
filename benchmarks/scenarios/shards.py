"""shards: the 20 tags sharing a base layer, as four `occystrap mirror --shard I/4` processes run at
once then `occystrap merge`, against one `occystrap mirror` process. On one machine this measures
what scale-out costs (each shard starts, resolves the whole plan, and the merge copies and verifies
every blob again), not what it gains: the gain is many machines' bandwidth."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import MiB, log
from benchmarks.harness import BenchContext, Measurement, Tool
from benchmarks.images import PushedImage
from benchmarks.report import ScenarioResult, fmt, mib
from benchmarks.scenario import scenario
from benchmarks.stats import Check, failure_notes, median_or_nan, paired_ratio, summarise
from benchmarks.taggroup import TAG_COUNT, TagGroup, merged_holds, mirror_spec, push_tag_group
from benchmarks.tools import Verify

SHARDS = 4
ONE = "occystrap-mirror"
SHARDED = f"occystrap-{SHARDS}-shards+merge"
SAME_FILES = ("catalog.json", "index.json", "manifest.json", "occystrap.lock")


def _same_as(reference: Path, first: Verify) -> Verify:
    """The merged directory holds every tag (verify passes) and is the one-process mirror's."""

    def check(image: PushedImage, out: Path) -> str | None:
        problem = first(image, out)
        if problem:
            return problem
        for name in SAME_FILES:
            if (out / name).read_bytes() != (reference / name).read_bytes():
                return f"{name} differs from one mirror run's"
        blobs = sorted(p.name for p in (out / "blobs" / "sha256").iterdir())
        if blobs != sorted(p.name for p in (reference / "blobs" / "sha256").iterdir()):
            return "the blobs differ from one mirror run's"
        return None

    return check


def _phases(rundir: Path) -> dict[str, float]:
    """The script's timestamps: start, every shard done, merge done."""
    try:
        t0, t1, t2 = (float(x) for x in (rundir / "phases.txt").read_text().split())
    except (OSError, ValueError):
        return {}
    return {"shards_s": t1 - t0, "merge_s": t2 - t1}


@scenario(
    "shards", f"mirror {TAG_COUNT} tags as {SHARDS} concurrent --shard processes + merge vs one", order=35
)
def shards(ctx: BenchContext) -> ScenarioResult:
    group = push_tag_group(ctx)
    image = group.as_image
    spec = mirror_spec(ctx, group)
    occy = ctx.occystrap
    reference = ctx.workdir / "shards-reference"
    shutil.rmtree(reference, ignore_errors=True)
    subprocess.run([occy, "mirror", "--quiet", str(spec), str(reference)], check=True, env=ctx.env())

    def one_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        return [occy, "mirror", "--quiet", str(spec), str(out)], out

    def sharded_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        parts = " ".join(f'"{rundir}/shard-{i}"' for i in range(1, SHARDS + 1))
        script = (
            "set -e; t0=$(date +%s.%N); pids=''; "
            f"for i in $(seq 1 {SHARDS}); do "
            f'"{occy}" mirror --quiet --shard "$i/{SHARDS}" "{spec}" "{rundir}/shard-$i" & '
            'pids="$pids $!"; done; '
            "for p in $pids; do wait $p; done; t1=$(date +%s.%N); "
            f'"{occy}" merge --quiet {parts} "{out}"; '
            f'echo "$t0 $t1 $(date +%s.%N)" > "{rundir}/phases.txt"'
        )
        return ["sh", "-c", script], out

    def record(m: Measurement) -> None:
        m.extra.update(_phases(ctx.workdir / "run" / SHARDED))

    tools = [
        Tool(ONE, one_argv, merged_holds(ctx, group)),
        Tool(SHARDED, sharded_argv, _same_as(reference, merged_holds(ctx, group)), after=record),
    ]
    log(f"timing {TAG_COUNT} tags: {ONE} vs {SHARDED}; 1 warm-up + {ctx.args.runs} rounds")
    ms = ctx.run_alternating(image, tools, ctx.args.runs)
    shutil.rmtree(reference, ignore_errors=True)
    return _result(group, ms)


def _result(group: TagGroup, ms: list[Measurement]) -> ScenarioResult:
    image = group.as_image
    sm = {n: summarise(image, n, ms) for n in (ONE, SHARDED)}
    ratio = sm[SHARDED].median_s / sm[ONE].median_s
    paired = paired_ratio(ms, image.name, SHARDED, ONE)
    counted = [m for m in ms if m.counted and m.tool == SHARDED]
    shards_s = median_or_nan([m.extra["shards_s"] for m in counted if "shards_s" in m.extra])
    merge_s = median_or_nan([m.extra["merge_s"] for m in counted if "merge_s" in m.extra])

    def fetched(tool: str) -> float:
        return median_or_nan([m.served_blob_bytes for m in ms if m.tool == tool and m.counted])

    configs = sum(i.config_size for i in group.images)
    layers = group.unique_bytes - configs
    # Every shard reads every config while planning; the layers, once across the four.
    sharded_layers = fetched(SHARDED) - SHARDS * configs
    bytes_c = Check(
        "tags20", f"{SHARDED} layer bytes fetched / unique layer bytes", sharded_layers / layers, 1.0
    )
    headers = ["tool", "runs", "median s", "min s", "peak RSS MiB", "CPU s", "blob MiB fetched",
               "unique MiB", "shards s", "merge s", "ratio", "paired"]  # fmt: skip
    rows = [
        [ONE, str(sm[ONE].runs), fmt(sm[ONE].median_s), fmt(sm[ONE].min_s), fmt(sm[ONE].peak_rss_mib, 1),
         fmt(sm[ONE].median_cpu_s), mib(fetched(ONE)), mib(group.unique_bytes), "-", "-", "-", "-"],
        [SHARDED, str(sm[SHARDED].runs), fmt(sm[SHARDED].median_s), fmt(sm[SHARDED].min_s),
         fmt(sm[SHARDED].peak_rss_mib, 1), fmt(sm[SHARDED].median_cpu_s), mib(fetched(SHARDED)),
         mib(group.unique_bytes), fmt(shards_s), fmt(merge_s), fmt(ratio), fmt(paired)],
    ]  # fmt: skip
    base = group.first.layers[0]
    notes = [
        f"{TAG_COUNT} tags of {group.first.ref}: one {base.size / MiB:.1f} MiB gzip base layer shared by "
        f"all, plus a small layer each; unique blob bytes {group.unique_bytes} ({configs} of them configs).",
        f"{ONE}: `occystrap mirror SPEC DIR`. {SHARDED}: `occystrap mirror --shard I/{SHARDS} SPEC shard-I` "
        f"for I = 1..{SHARDS}, started together on this machine, then `occystrap merge shard-1 ... DIR` "
        "(which re-verifies every blob: digest, size, diff_id). The warm-up's merged DIR is checked to "
        "hold the same catalog.json, index.json, manifest.json, lock and blobs as one mirror run's.",
        "shards s / merge s: the two phases of the sharded run (median). ratio = sharded median / one "
        "process's; paired = median of per-round ratios. blob MiB fetched: GET .../blobs/ bodies in the "
        f"registry's log (median); every shard reads all {TAG_COUNT} configs while planning, the layers "
        f"are fetched once across the shards ({fmt(sharded_layers / layers, 3)} x the unique layer bytes).",
        "One machine's shards share its cores and its link to the registry: the split pays off across "
        "machines (a CI matrix, a Kubernetes Indexed Job), where each shard brings its own bandwidth.",
    ]
    notes += failure_notes(sm.values())
    return ScenarioResult(
        name="shards",
        title=f"mirror {TAG_COUNT} tags: {SHARDS} concurrent shards + merge vs one process",
        headers=headers,
        rows=rows,
        checks=[bytes_c],
        notes=notes,
        data={
            "group": group.describe(),
            "summaries": [asdict(s) for s in sm.values()],
            "measurements": [asdict(m) for m in ms],
            "phases": {"shards_s": shards_s, "merge_s": merge_s},
        },
    )
