"""extracted20: the 20 tags of the mirror scenario by 20 x `occystrap fetch-to-extracted
--use-unique-names` into one directory; what counts is the blob bytes fetched (the base once)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from benchmarks.common import log
from benchmarks.harness import BenchContext, Tool
from benchmarks.images import PushedImage
from benchmarks.report import ScenarioResult, fmt, mib
from benchmarks.scenario import scenario
from benchmarks.stats import Check, failure_notes, median_or_nan, summarise
from benchmarks.taggroup import TAG_COUNT, merged_holds, push_tag_group

OCCY_EXTRACTED = "occystrap-extracted-loop"


@scenario(
    "extracted20", f"fetch-to-extracted --use-unique-names of {TAG_COUNT} tags into one dir: bytes", order=40
)
def extracted_loop(ctx: BenchContext) -> ScenarioResult:
    group = push_tag_group(ctx)
    image = group.as_image

    def loop_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        script = (
            f'for t in {" ".join(group.tags)}; do "{ctx.occystrap}" fetch-to-extracted --quiet '
            f'--use-unique-names "{group.first.ref}" "$t" "{out}" || exit 1; done'
        )
        return ["sh", "-c", script], out

    tool = Tool(OCCY_EXTRACTED, loop_argv, merged_holds(ctx, group))
    log(f"timing {OCCY_EXTRACTED}: 1 warm-up + {ctx.args.runs} rounds")
    measurements = ctx.run_alternating(image, [tool], ctx.args.runs)
    sm = summarise(image, tool.name, measurements)
    got = median_or_nan([m.served_blob_bytes for m in measurements if m.counted])
    check = Check("tags20", f"{OCCY_EXTRACTED} blob bytes fetched / unique blob bytes",
                  got / group.unique_bytes, 1.0)  # fmt: skip
    headers = ["tool", "runs", "median s", "min s", "peak RSS MiB", "blob MiB fetched", "referenced MiB",
               "unique MiB", "fetched/referenced", "fetched/unique", "target", "targets met"]  # fmt: skip
    rows = [[
        tool.name, str(sm.runs), fmt(sm.median_s), fmt(sm.min_s), fmt(sm.peak_rss_mib, 1), mib(got),
        mib(group.referenced_bytes), mib(group.unique_bytes), fmt(got / group.referenced_bytes, 3),
        fmt(got / group.unique_bytes, 3), "fetched=unique",
        "NO: failed" if sm.failed else ("yes" if check.met else "NO"),
    ]]  # fmt: skip
    notes = [
        f"{TAG_COUNT} invocations of `occystrap fetch-to-extracted --use-unique-names REPO TAG DIR`, "
        "one DIR: a blob already in DIR (re-hashed) is not fetched again, so the base is fetched once.",
        "referenced = what the tags reference (base counted per tag); unique = every blob once.",
    ]
    notes += failure_notes([sm])
    return ScenarioResult(
        name="extracted20",
        title=f"fetch-to-extracted --use-unique-names, {TAG_COUNT} tags into one directory",
        headers=headers,
        rows=rows,
        checks=[check],
        notes=notes,
        data={
            "group": group.describe(),
            "summary": asdict(sm),
            "measurements": [asdict(m) for m in measurements],
        },
    )
