"""display: what the live progress display costs, the big fetch on a pseudo-terminal (rich) vs none."""

from __future__ import annotations

import shlex
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import log
from benchmarks.harness import BenchContext, Tool
from benchmarks.images import PushedImage, fetch_images
from benchmarks.report import ScenarioResult, fmt
from benchmarks.scenario import scenario
from benchmarks.stats import Check, paired_ratio, summarise
from benchmarks.tools import occystrap_tool

OCCY_QUIET = "occystrap --progress none"
OCCY_RICH = "occystrap --progress rich (pty)"
DISPLAY_TARGET = 1.02  # the live display may cost at most 2% of a fetch


@scenario(
    "display", "the rich progress display's cost: the big fetch on a pseudo-terminal vs no display", order=20
)
def display_cost(ctx: BenchContext) -> ScenarioResult:
    [big] = [spec for spec in fetch_images(ctx.args) if spec.name == "big"]
    image = ctx.push_image(big)
    quiet = occystrap_tool(ctx, OCCY_QUIET, "fetch-to-tarfile", "--progress", "none")
    shown = occystrap_tool(ctx, OCCY_RICH, "fetch-to-tarfile", "--progress", "rich")

    def rich(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        cmd, out = shown.argv(img, rundir)
        # script(1) gives the command a real pseudo-terminal, so rich draws as it would for a person.
        return ["script", "-qfec", " ".join(shlex.quote(c) for c in cmd), "/dev/null"], out

    tools = [quiet, Tool(OCCY_RICH, rich)]
    log(f"timing display cost on {image.name}; 1 warm-up + {ctx.args.runs} rounds")
    measurements = ctx.run_alternating(image, tools, ctx.args.runs)
    by_tool = {t.name: summarise(image, t.name, measurements) for t in tools}
    ratio = by_tool[OCCY_RICH].median_s / by_tool[OCCY_QUIET].median_s
    paired = paired_ratio(measurements, image.name, OCCY_RICH, OCCY_QUIET)
    cpu_ratio = by_tool[OCCY_RICH].median_cpu_s / max(by_tool[OCCY_QUIET].median_cpu_s, 1e-9)
    check = Check(image.name, f"{OCCY_RICH} / {OCCY_QUIET} (median wall)", ratio, DISPLAY_TARGET)
    headers = ["image", "tool", "runs", "median s", "CPU s", "ratio", "paired", "CPU ratio", "target"]
    rows = [
        [image.name, t.name, str(by_tool[t.name].runs), fmt(by_tool[t.name].median_s),
         fmt(by_tool[t.name].median_cpu_s),
         fmt(ratio) if t.name == OCCY_RICH else "-", fmt(paired) if t.name == OCCY_RICH else "-",
         fmt(cpu_ratio) if t.name == OCCY_RICH else "-",
         f"<={DISPLAY_TARGET:g}" if t.name == OCCY_RICH else "-"]
        for t in tools
    ]  # fmt: skip
    return ScenarioResult(
        name="display",
        title="progress display cost",
        headers=headers,
        rows=rows,
        checks=[check],
        notes=[
            "CPU ratio includes script(1) relaying the terminal output; wall time is what a person waits."
        ],
        data={"summaries": [asdict(s) for s in by_tool.values()]},
    )
