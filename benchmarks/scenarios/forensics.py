"""forensics: looking inside the big image, layers streamed from the registry, against fetching it.

`occystrap files` and `occystrap diff` (big against big-v2: the same base layer and a small layer
of its own, the usual "what did this release change") should take no longer than
`occystrap fetch-to-tarfile` of the same image: they read and verify the same bytes, and write
nothing but the answer. `occystrap export` (the flattened root filesystem as one tar) is compared
with the usual way without it: `skopeo copy` to an OCI layout, `umoci unpack`, `tar -c` of the
rootfs. Peak RSS of `files` and `export` is held to the fetch target (64 MiB).
"""

from __future__ import annotations

import shlex
import tarfile
from dataclasses import asdict, replace
from pathlib import Path

from benchmarks.common import MiB, log
from benchmarks.harness import BenchContext, Measurement, Tool
from benchmarks.images import ImageSpec, PushedImage, fetch_images
from benchmarks.layers import LayerSpec, layer_file_names
from benchmarks.report import ScenarioResult, fmt
from benchmarks.scenario import scenario
from benchmarks.stats import RSS_LIMIT_MIB, Check, Summary, failure_notes, paired_ratio, summarise
from benchmarks.tools import Verify, layer_digests, occystrap_tool, skopeo_copy_argv, verify_docker_tarball

FETCH = "occystrap-fetch"
FILES = "occystrap-files"
DIFF = "occystrap-diff"
EXPORT = "occystrap-export"
SKOPEO_UMOCI_TAR = "skopeo+umoci+tar"

# (tool, what it is compared with, target ratio of median wall times, RSS held to the limit)
TARGETS = {FILES: (FETCH, 1.0, True), DIFF: (FETCH, 1.0, False), EXPORT: (SKOPEO_UMOCI_TAR, 1.0, True)}


def v2_spec(big: ImageSpec, quick: bool) -> ImageSpec:
    """big's layer, then a small one of its own: a release on top of the same base."""
    top = LayerSpec(1.0 if quick else 8.0, seed=451, max_file_mb=1.0)
    return replace(big, name="big-v2", tag="v2", layers=(*big.layers, top))


def _sh(*argv: str, out: Path) -> list[str]:
    # exec: GNU time then measures occystrap itself, not a shell around it.
    return ["sh", "-c", f"exec {shlex.join(argv)} > {shlex.quote(str(out))}"]


def _lines_at_least(minimum: int) -> Verify:
    def check(_img: PushedImage, out: Path) -> str | None:
        lines = out.read_text().count("\n")
        return None if lines >= minimum else f"{lines} lines of output, expected at least {minimum}"

    return check


def _tar_holds(expected: set[str], strip: str = "") -> Verify:
    def check(_img: PushedImage, out: Path) -> str | None:
        with tarfile.open(out) as tf:
            got = {m.name.removeprefix(strip) for m in tf if m.isfile()}
        if got != expected:
            return f"{len(got)} files, expected {len(expected)}; e.g. {sorted(got ^ expected)[:3]}"
        return None

    return check


def _tools(ctx: BenchContext, big: PushedImage, v2: PushedImage) -> list[Tool]:
    occy = ctx.occystrap
    files = layer_file_names(big.layers)

    def files_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "files.txt"
        return _sh(occy, "files", "--quiet", f"{img.ref}:{img.tag}", out=out), out

    def diff_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "diff.txt"
        return _sh(occy, "diff", "--quiet", f"{img.ref}:{img.tag}", f"{v2.ref}:{v2.tag}", out=out), out

    def export_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "rootfs.tar"
        return [occy, "export", "--quiet", f"{img.ref}:{img.tag}", str(out)], out

    def umoci_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "rootfs.tar"
        layout, bundle = f"{rundir}/oci:{img.tag}", rundir / "b"
        script = (
            f"{shlex.join(skopeo_copy_argv(img, f'oci:{layout}'))}"
            f" && umoci unpack --image {shlex.quote(layout)} {shlex.quote(str(bundle))}"
            f" && tar -C {shlex.quote(str(bundle / 'rootfs'))} -cf {shlex.quote(str(out))} ."
        )
        return ["sh", "-c", script], out

    new_files = len(layer_file_names(v2.layers[len(big.layers) :]))
    return [
        occystrap_tool(
            ctx, FETCH, "fetch-to-tarfile", "--quiet", verify=verify_docker_tarball(layer_digests)
        ),
        Tool(FILES, files_argv, _lines_at_least(len(files))),
        Tool(DIFF, diff_argv, _lines_at_least(new_files)),
        Tool(EXPORT, export_argv, _tar_holds(files)),
        Tool(SKOPEO_UMOCI_TAR, umoci_argv, _tar_holds(files, "./")),
    ]


@scenario(
    "forensics",
    "files / diff vs fetch-to-tarfile of the big image; export vs skopeo copy + umoci unpack + tar -c",
    order=55,
)
def forensics(ctx: BenchContext) -> ScenarioResult:
    spec = next(s for s in fetch_images(ctx.args) if s.name == "big")
    big = ctx.push_image(spec)
    v2 = ctx.push_image(v2_spec(spec, ctx.args.quick))
    tools = _tools(ctx, big, v2)
    log(f"timing {big.name}: {', '.join(t.name for t in tools)}; 1 warm-up + {ctx.args.runs} rounds")
    measurements: list[Measurement] = ctx.run_alternating(big, tools, ctx.args.runs)
    by_tool: dict[str, Summary] = {t.name: summarise(big, t.name, measurements) for t in tools}

    headers = ["image", "tool", "runs", "median s", "min s", "peak RSS MiB", "CPU s", "vs", "ratio", "paired",
               "target", "targets met"]  # fmt: skip
    rows: list[list[str]] = []
    checks: list[Check] = []
    for t in tools:
        s = by_tool[t.name]
        vs = ratio_s = paired_s = target = met = "-"
        if t.name in TARGETS:
            other, limit, rss_held = TARGETS[t.name]
            ratio = s.median_s / by_tool[other].median_s
            vs, ratio_s = other, fmt(ratio)
            paired_s = fmt(paired_ratio(measurements, big.name, t.name, other))
            mine = [Check(big.name, f"{t.name} / {other} (median wall)", ratio, limit)]
            if rss_held:
                mine.append(Check(big.name, f"{t.name} peak RSS", s.peak_rss_mib, RSS_LIMIT_MIB, "MiB"))
            checks += mine
            target = f"<={limit:g}" + (f", RSS<={RSS_LIMIT_MIB:g}" if rss_held else "")
            misses = ["RSS" if c.unit else "time" for c in mine if not c.met]
            met = "NO: failed" if s.failed else ("yes" if not misses else "NO: " + ", ".join(misses))
        rss = fmt(s.peak_rss_mib, 1) + (" !" if s.peak_rss_mib > RSS_LIMIT_MIB else "")
        rows.append([big.name, t.name, str(s.runs), fmt(s.median_s), fmt(s.min_s), rss, fmt(s.median_cpu_s),
                     vs, ratio_s, paired_s, target, met])  # fmt: skip
    notes = [
        f"{big.name}: {len(big.layers)} gzip layer, {big.compressed_bytes / MiB:.1f} MiB compressed, "
        f"{big.uncompressed_bytes / MiB:.1f} MiB of tar, {sum(la.files for la in big.layers)} files; "
        f"{v2.name} adds a layer of {v2.layers[-1].size / MiB:.1f} MiB.",
        f"{FETCH}: `occystrap fetch-to-tarfile --quiet REF TAG out.tar`; {FILES}: `occystrap files --quiet "
        f"REF:TAG > out`; {DIFF}: `occystrap diff --quiet REF:v1 REF:v2 > out` (the shared base read once); "
        f"{EXPORT}: `occystrap export --quiet REF:TAG out.tar`.",
        f"{SKOPEO_UMOCI_TAR}: `skopeo copy docker://REF:TAG oci:DIR:TAG && umoci unpack --image DIR:TAG B "
        "&& tar -C B/rootfs -cf out.tar .` (one command line, timed as a whole).",
        "ratio = median wall time / the median of the tool in 'vs'; paired = median of per-round ratios.",
        f"{FILES} and {FETCH} verify the same bytes (digest, inflate, diff_id); {FILES} also parses the "
        f"tar where {FETCH} writes the blob. {DIFF} also reads big-v2's layer and hashes the files of "
        "both images that differ in layers (the base's only where an upper layer touches them).",
    ]
    notes += failure_notes(by_tool.values())
    return ScenarioResult(
        name="forensics",
        title="files / diff / export over the registry vs fetching",
        headers=headers,
        rows=rows,
        checks=checks,
        notes=notes,
        data={
            "images": {i.name: i.describe() for i in (big, v2)},
            "summaries": [asdict(s) for s in by_tool.values()],
            "measurements": [asdict(m) for m in measurements],
        },
    )
