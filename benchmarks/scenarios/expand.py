"""expand: a root filesystem, `occystrap fetch-to-extracted --expand` vs `skopeo copy` to an OCI
layout followed by `umoci unpack`; the final trees are compared with the files the layers hold."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import MiB, log
from benchmarks.harness import BenchContext, Tool
from benchmarks.images import ImageSpec, PushedImage
from benchmarks.layers import LayerSpec, layer_file_names
from benchmarks.report import ScenarioResult, fmt, mib
from benchmarks.scenario import scenario
from benchmarks.stats import failure_notes, median_or_nan, paired_ratio, summarise
from benchmarks.tools import Verify, occystrap_tool

OCCY_EXPAND = "occystrap-expand"
SKOPEO_UMOCI = "skopeo+umoci-unpack"


def expand_image(args: argparse.Namespace) -> ImageSpec:
    sizes = (3.0, 2.0, 2.0, 1.0) if args.quick else (80.0, 60.0, 40.0, 20.0)  # 200 MiB of tar, ~110 MiB gzip
    return ImageSpec(
        "rootfs", "bench/rootfs", "v1",
        tuple(LayerSpec(mb, seed=800 + i, max_file_mb=min(mb / 4, 10.0)) for i, mb in enumerate(sizes)),
    )  # fmt: skip


def _tree_files(root: Path) -> set[str]:
    out = set()
    for sub, _dirs, files in os.walk(root):
        for f in files:
            path = Path(sub) / f
            if path.is_file() and not path.is_symlink():
                out.add(path.relative_to(root).as_posix())
    return out


@scenario("expand", "fetch-to-extracted --expand vs skopeo copy to oci + umoci unpack", order=50)
def expand_vs_umoci(ctx: BenchContext) -> ScenarioResult:
    title = "fetch-to-extracted --expand vs skopeo copy + umoci unpack"
    if not shutil.which("umoci"):
        missing = [["umoci is not installed (apt-get install umoci)"]]
        return ScenarioResult("expand", title, ["skipped"], missing)
    image = ctx.push_image(expand_image(ctx.args))
    expected = layer_file_names(image.layers)

    def umoci_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        script = (
            f'skopeo copy --quiet --src-tls-verify=false "docker://{img.ref}:{img.tag}" '
            f'"oci:{rundir}/oci:{img.tag}" && umoci unpack --image "{rundir}/oci:{img.tag}" "{rundir}/bundle"'
        )
        return ["sh", "-c", script], rundir

    def same_tree(root_of: Callable[[Path], Path]) -> Verify:
        def check(_img: PushedImage, out: Path) -> str | None:
            try:
                got = _tree_files(root_of(out))
            except (OSError, ValueError) as exc:
                return f"no root filesystem: {exc}"
            if got != expected:
                return f"{len(got)} files, expected {len(expected)}; e.g. {sorted(got ^ expected)[:3]}"
            return None

        return check

    def occystrap_root(out: Path) -> Path:
        [root] = list((out / "rootfs").iterdir())
        return root

    tools = [
        occystrap_tool(ctx, OCCY_EXPAND, "fetch-to-extracted", "--quiet", "--expand", output="out",
                       verify=same_tree(occystrap_root)),
        Tool(SKOPEO_UMOCI, umoci_argv, same_tree(lambda out: out / "bundle" / "rootfs")),
    ]  # fmt: skip
    log(f"timing {image.name}: {', '.join(t.name for t in tools)}; 1 warm-up + {ctx.args.runs} rounds")
    measurements = ctx.run_alternating(image, tools, ctx.args.runs)
    by_tool = {t.name: summarise(image, t.name, measurements) for t in tools}
    ratio = by_tool[OCCY_EXPAND].median_s / by_tool[SKOPEO_UMOCI].median_s
    paired = paired_ratio(measurements, image.name, OCCY_EXPAND, SKOPEO_UMOCI)
    headers = ["image", "tool", "runs", "median s", "min s", "MiB/s", "peak RSS MiB", "CPU s", "output MiB",
               "ratio", "paired"]  # fmt: skip
    rows = []
    for t in tools:
        sm = by_tool[t.name]
        out_mib = median_or_nan([m.output_bytes for m in measurements if m.tool == t.name and m.rc == 0])
        mine = t.name == OCCY_EXPAND
        rows.append([
            image.name, t.name, str(sm.runs), fmt(sm.median_s), fmt(sm.min_s), fmt(sm.mib_per_s, 1),
            fmt(sm.peak_rss_mib, 1), fmt(sm.median_cpu_s), mib(out_mib),
            fmt(ratio) if mine else "-", fmt(paired) if mine else "-",
        ])  # fmt: skip
    notes = [
        f"{image.name}: {len(image.layers)} gzip layers, {image.compressed_bytes / MiB:.1f} MiB compressed, "
        f"{image.uncompressed_bytes / MiB:.1f} MiB of tar, {len(expected)} files in the final tree.",
        f"{OCCY_EXPAND}: `occystrap fetch-to-extracted --expand REF TAG DIR` (blobs, every layer unpacked "
        "into layers/<hex>/, the final tree in rootfs/<hex>/); "
        f"{SKOPEO_UMOCI}: `skopeo copy docker://REF:TAG oci:DIR:TAG && umoci unpack --image DIR:TAG BUNDLE` "
        "(one command line, timed as a whole).",
        "ratio = occystrap median / skopeo+umoci median; the warm-up outputs' final trees are compared "
        "with the files the layers hold.",
    ]
    notes += failure_notes(by_tool.values())
    return ScenarioResult(
        name="expand",
        title=title,
        headers=headers,
        rows=rows,
        notes=notes,
        data={
            "image": image.describe(),
            "summaries": [asdict(sm) for sm in by_tool.values()],
            "measurements": [asdict(m) for m in measurements],
        },
    )
