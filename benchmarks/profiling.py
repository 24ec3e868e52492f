"""Where a fetch's time goes: py-spy profiles of `occystrap fetch-to-tarfile` (layers kept as served) on
the big and the five-layer images of the fetch scenario. This is what `make profile` runs:

    .venv/bin/python -m benchmarks.profiling            # big (400 MiB of tar) and five, 3 rounds
    .venv/bin/python -m benchmarks.profiling --quick    # small images, 1 round

Each round alternates, after a warm-up: the fetch without a profiler (GNU time: wall, CPU), and under
`py-spy record --threads` four ways: busy threads (CPU), only the thread holding the GIL (--gil), every
thread at every tick (--idle), and busy threads with native frames (--native). Shares of the wall
time are samples / ticks (the main thread is in every tick of the --idle runs); seconds are those
shares of the wall time without the profiler. Samples are put under roles (main thread: start-up or
event loop; worker threads: which stage) by the functions on their stack (benchmarks/pyspy.py).

Written to --out-dir (default bench-out/profile/): profile.txt (the tables, also on stdout),
profile.json, IMAGE.speedscope.json (open in https://www.speedscope.app or `npx speedscope`: one
flame graph per thread) and IMAGE.svg (a flame graph of all threads, any browser), both of busy
threads with native frames, and raw/IMAGE.KIND.ROUND.txt (py-spy's collapsed stacks).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import pyspy
from benchmarks.common import GNU_TIME, PROJECT_ROOT, MiB, log
from benchmarks.harness import BenchContext, Measurement, Tool
from benchmarks.images import PushedImage, fetch_images
from benchmarks.report import fmt, render_text
from benchmarks.session import add_common_args, require, session
from benchmarks.stats import summarise
from benchmarks.tools import layer_digests, occystrap_tool, verify_docker_tarball

PLAIN = "occystrap"
# py-spy flags of the counted runs. The shares come from --nonblocking runs of Python frames, which
# slow the fetch by 10-20%: --native must stop the process for every sample, and unwinding several
# threads' native stacks that way made the five-layer fetch 3-6 times slower, more so where more
# threads run, so its samples over-weigh the multi-threaded phases. The native run is used only for
# what happens inside each role (proportions within a role) and for the flame graphs.
RAW_RUNS = {
    "cpu": ["--nonblocking"],  # busy threads
    "gil": ["--nonblocking", "--gil"],  # the thread holding the GIL
    "idle": ["--nonblocking", "--idle"],  # every thread at every tick: the main thread counts ticks
    "native": ["--native"],  # busy threads with native frames
}
# The flame graphs (one run each, after the counted rounds): py-spy format -> file suffix.
FLAMES = {"speedscope": "speedscope.json", "flamegraph": "svg"}
TOP = 3  # costs shown per role
TOP_GIL = 8


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=None, help="counted rounds (default 3; 1 with --quick)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument(
        "--images", nargs="+", default=["big", "five"], help="of the fetch images (default big five)"
    )
    p.add_argument("--py-spy", default=None, help="py-spy executable (default: beside this Python)")
    p.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "bench-out" / "profile")
    add_common_args(p)
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    return args


def pyspy_tool(py_spy: str, inner: Tool, name: str, fmt_: str, flags: Sequence[str], rate: int,
               dest: Callable[[int], Path]) -> Tool:  # fmt: skip
    """`inner` under `py-spy record`; dest(n) names the n-th call's profile (n = round, from 0)."""
    calls = itertools.count()

    def argv(image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        cmd, out = inner.argv(image, rundir)
        record = [
            py_spy,
            "record",
            "--rate",
            str(rate),
            "--threads",
            "--format",
            fmt_,
            "-o",
            str(dest(next(calls))),
        ]
        return [*record, *flags, "--", *cmd], out

    return Tool(name, argv, inner.verify)


@dataclass
class Profile:
    """One image's counted runs: samples per kind (all rounds together), the runs' measurements."""

    image: PushedImage
    samples: dict[str, list[pyspy.Sample]]
    measurements: list[Measurement]
    rounds: int
    rate: int

    def median_wall(self, tool: str) -> float:
        return statistics.median(m.wall_s for m in self.measurements if m.tool == tool and m.counted)

    @property
    def ticks(self) -> int:
        """Sampling ticks over all rounds: the main thread is in each tick of the --idle runs."""
        return pyspy.main_thread_samples(self.samples["idle"])

    def share(self, samples: Sequence[pyspy.Sample]) -> float:
        """Of the wall time: samples / ticks (a sum over threads can exceed 1: more than one core)."""
        return sum(s.count for s in samples) / self.ticks if self.ticks else float("nan")


def _always(path: Path) -> Callable[[int], Path]:
    return lambda _n: path


def profile_image(ctx: BenchContext, args: argparse.Namespace, py_spy: str, image: PushedImage) -> Profile:
    extra = ["-j", str(args.parallel)] if args.parallel else []
    plain = occystrap_tool(
        ctx, PLAIN, "fetch-to-tarfile", "--quiet", *extra, verify=verify_docker_tarball(layer_digests)
    )
    raw_dir = args.out_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)

    def raw(kind: str) -> Callable[[int], Path]:
        return lambda n: raw_dir / f"{image.name}.{kind}.{n}.txt"

    tools = [plain] + [
        pyspy_tool(py_spy, plain, f"py-spy {kind}", "raw", flags, args.rate, raw(kind))
        for kind, flags in RAW_RUNS.items()
    ]
    log(f"profiling {image.name}: {', '.join(t.name for t in tools)}; 1 warm-up + {args.runs} rounds")
    ms = ctx.run_alternating(image, tools, args.runs)
    for kind in RAW_RUNS:
        raw(kind)(0).unlink(missing_ok=True)  # the warm-up round is not counted
    for fmt_, suffix in FLAMES.items():
        dest = args.out_dir / f"{image.name}.{suffix}"
        tool = pyspy_tool(py_spy, plain, f"py-spy {fmt_}", fmt_, ["--native"], args.rate, _always(dest))
        ms.append(ctx.measure(tool, image, 1))
    failed = [m for m in ms if m.rc != 0]
    if failed:
        raise SystemExit(f"{failed[0].tool} failed on {image.name}: {failed[0].error}")
    samples = {
        kind: [s for n in range(1, args.runs + 1) for s in pyspy.parse_raw(raw(kind)(n).read_text())]
        for kind in RAW_RUNS
    }
    return Profile(image, samples, [m for m in ms if m.tool in [t.name for t in tools]], args.runs, args.rate)


def render(p: Profile) -> tuple[str, dict[str, Any]]:
    """The text tables of one image's profile, and the same figures for JSON."""
    plain = summarise(p.image, PLAIN, p.measurements)
    wall = plain.median_s
    busy, gil = pyspy.busy(p.samples["cpu"]), p.samples["gil"]
    cpu_by, gil_by = pyspy.by_role(busy), pyspy.by_role(gil)
    rows, roles = [], {}
    for role in pyspy.ROLE_NAMES:
        c, g = cpu_by[role] / p.ticks, gil_by[role] / p.ticks
        roles[role] = {"cpu_share": c, "gil_share": g, "cpu_s": c * wall, "gil_s": g * wall}
        rows.append([role, f"{c:.0%}", fmt(c * wall), f"{g:.0%}", fmt(g * wall)])
    cpu_all, gil_all = p.share(busy), p.share(gil)
    rows.append(["all threads", f"{cpu_all:.0%}", fmt(cpu_all * wall), f"{gil_all:.0%}", fmt(gil_all * wall)])
    lines = [
        f"{p.image.name}: {len(p.image.layers)} layer(s), {p.image.compressed_bytes / MiB:.1f} MiB "
        f"compressed; occystrap fetch-to-tarfile --quiet (layers kept as served); {p.rounds} round(s)",
        f"  without profiler: wall {fmt(wall)} s, CPU {fmt(plain.median_cpu_s)} s (user+sys), "
        f"peak RSS {fmt(plain.peak_rss_mib, 1)} MiB (medians)",
        f"  under py-spy --nonblocking at {p.rate}/s: wall {fmt(p.median_wall('py-spy idle'))} s, "
        f"{p.ticks / p.rounds:.0f} ticks per run; "
        f"with --native: wall {fmt(p.median_wall('py-spy native'))} s",
        f"  CPU from samples {fmt(cpu_all * wall)} s, measured {fmt(plain.median_cpu_s)} s; "
        f"the GIL is held {gil_all:.0%} of the wall time",
        "",
        render_text(["role", "CPU/wall", "CPU s", "GIL/wall", "GIL s"], rows),
        "",
        "inside each role (--native runs: share of the role's busy samples; via = the innermost Python frame",
        "above; '?' = native code without a symbol, as in Debian's stripped libc, libcrypto and igzip)",
    ]
    native = pyspy.busy(p.samples["native"])
    cost_rows, costs = [], {}
    for role in pyspy.ROLE_NAMES:
        mine = [s for s in native if s.role == role]
        top = pyspy.top_costs(mine, TOP)
        total = sum(s.count for s in mine)
        costs[role] = [{"what": w, "via": v, "share_of_role": n / total} for w, v, n in top]
        cost_rows += [[role if i == 0 else "", f"{n / total:.0%}", w, v] for i, (w, v, n) in enumerate(top)]
    lines += ["", render_text(["role", "of role", "what", "via"], cost_rows), ""]
    lines += ["top GIL holders (--gil runs, Python frames; share of the wall time)"]
    gil_top = pyspy.top_costs(gil, TOP_GIL)
    lines += [
        "",
        render_text(["GIL/wall", "what", "via"], [[f"{n / p.ticks:.0%}", w, v] for w, v, n in gil_top]),
    ]
    data = {
        "image": p.image.describe(),
        "wall_s": wall,
        "cpu_s": plain.median_cpu_s,
        "ticks": p.ticks,
        "rate": p.rate,
        "gil_share": gil_all,
        "roles": roles,
        "inside_roles": costs,
        "gil_holders": [{"what": w, "via": v, "share": n / p.ticks} for w, v, n in gil_top],
    }
    return "\n".join(lines), data


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require((GNU_TIME, "docker-registry"), "apt-get install time docker-registry")
    py_spy = (
        args.py_spy or shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    )
    if py_spy is None:
        raise SystemExit("py-spy is needed: pip install -e '.[bench]' (make profile does it)")
    specs = {spec.name: spec for spec in fetch_images(args)}
    unknown = set(args.images) - set(specs)
    if unknown:
        raise SystemExit(f"unknown images {sorted(unknown)}; there are {sorted(specs)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    texts, doc = [], {}
    try:
        with session(args) as ctx:
            for name in args.images:
                text, doc[name] = render(profile_image(ctx, args, py_spy, ctx.push_image(specs[name])))
                texts.append(text)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    report = "\n\n\n".join(texts) + "\n"
    (args.out_dir / "profile.txt").write_text(report)
    (args.out_dir / "profile.json").write_text(json.dumps(doc, indent=2))
    print(report)
    print(f"flame graphs and tables in {args.out_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
