"""occystrap benchmarks against skopeo, on a real registry on loopback.

Run from the project root (this is what `make bench` does):

    .venv/bin/python -m benchmarks.bench              # defaults: --runs 3 --big-mb 400
    .venv/bin/python -m benchmarks.bench --quick      # small images, 1 run: a smoke test
    .venv/bin/python -m benchmarks.bench --list       # the scenarios there are

Scenarios (`--list`; all run by default, `--scenario NAME` picks some) are one module each in
`benchmarks/scenarios/`. The pieces they are built from:

    harness.py   BenchContext (the registry, the layer cache, a scratch directory), a command under
                 /usr/bin/time -v, alternating rounds, Measurement
    stats.py     medians per tool (Summary), paired ratios, Check against a target
    tools.py     occystrap and skopeo commands as Tools, checks of what they write
    layers.py    deterministic generated layers, cached on disk
    images.py    images of generated layers pushed to the registry; the fetch image set
    report.py    ScenarioResult and the text / rst / json reports in bench-out/
    scenario.py  the @scenario registry
    session.py   the options every benchmark program takes; scratch directory and registry clean-up

Method: every command runs under `/usr/bin/time -v` (peak RSS, CPU) and is timed with a monotonic
clock; the commands of one scenario alternate A B C D A B C D ... after one uncounted warm-up round,
so drift on this shared 2-core machine hits all of them alike; outputs are deleted and `sync`ed
between runs. Only ratios measured in the same invocation mean much.

Generated layers are cached (default /tmp/occystrap-bench-cache, keyed by every generation
parameter), so only the first invocation pays for generating and gzipping them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks import scenario
from benchmarks.common import GNU_TIME, PROJECT_ROOT, log
from benchmarks.report import ScenarioResult, any_failed, environment, print_results, write_reports
from benchmarks.session import add_common_args, require, session


def parse_args(
    scenarios: Mapping[str, scenario.Registered], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs", type=int, default=None, help="counted rounds per image (default 3; 1 with --quick)"
    )
    p.add_argument(
        "--scenario", action="append", choices=sorted(scenarios), help="run only these (repeatable)"
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "bench-out", help="where results.* go")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    scenarios = scenario.load()
    args = parse_args(scenarios, argv)
    if args.list:
        for s in scenarios.values():
            print(f"{s.name:<12} {'(default) ' if s.default else ''}{s.description}")
        return 0
    require((GNU_TIME, "docker-registry", "skopeo"), "apt-get install time docker-registry skopeo")
    names = args.scenario or [s.name for s in scenarios.values() if s.default]
    results: list[ScenarioResult] = []
    try:
        with session(args) as ctx:
            for name in names:
                t0 = time.monotonic()
                results.append(scenarios[name].fn(ctx))
                log(f"scenario {name} took {time.monotonic() - t0:.0f}s")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    write_reports(args.out_dir, results, environment(), args)
    print_results(results, args.out_dir)
    # Missing a target is a finding, not a failure of the harness: exit 0 unless a command failed.
    return 1 if any_failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
