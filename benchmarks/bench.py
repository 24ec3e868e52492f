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

Method: every command runs under `/usr/bin/time -v` (peak RSS, CPU) and is timed with a monotonic
clock; the commands of one scenario alternate A B C D A B C D ... after one uncounted warm-up round,
so drift on this shared 2-core machine hits all of them alike; outputs are deleted and `sync`ed
between runs. Only ratios measured in the same invocation mean much.

Generated layers are cached (default /tmp/occystrap-bench-cache, keyed by every generation
parameter), so only the first invocation pays for generating and gzipping them.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from benchmarks import scenario
from benchmarks.common import GNU_TIME, PROJECT_ROOT, log
from benchmarks.harness import BenchContext
from benchmarks.layers import DEFAULT_CACHE
from benchmarks.report import ScenarioResult, any_failed, environment, print_results, write_reports


def parse_args(
    scenarios: Mapping[str, scenario.Registered], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs", type=int, default=None, help="counted rounds per image (default 3; 1 with --quick)"
    )
    p.add_argument(
        "--big-mb", type=float, default=None, help="uncompressed MiB of the big layer (default 400)"
    )
    p.add_argument("--quick", action="store_true", help="small images and 1 round: a smoke test")
    p.add_argument(
        "-j", "--parallel", type=int, default=None, help="pass -j N to occystrap (default: its own)"
    )
    p.add_argument(
        "--scenario", action="append", choices=sorted(scenarios), help="run only these (repeatable)"
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"generated layers (default {DEFAULT_CACHE})"
    )
    p.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "bench-out", help="where results.* go")
    p.add_argument("--occystrap", default=None, help="occystrap executable (default: beside this Python)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before one command is killed")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip checking warm-up outputs")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (registry storage, logs)")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def find_occystrap(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "occystrap"
    if beside.exists():
        return str(beside)
    found = shutil.which("occystrap")
    if found is None:
        raise SystemExit(
            "occystrap not found: install it in this venv (pip install -e .) or pass --occystrap"
        )
    return found


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the registry and child commands are stopped."""
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    scenarios = scenario.load()
    args = parse_args(scenarios, argv)
    if args.list:
        for s in scenarios.values():
            print(f"{s.name:<12} {'(default) ' if s.default else ''}{s.description}")
        return 0
    for tool in (GNU_TIME, "docker-registry", "skopeo"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt-get install time docker-registry skopeo)")
    names = args.scenario or [s.name for s in scenarios.values() if s.default]
    workdir = Path(tempfile.mkdtemp(prefix="occystrap-bench-"))
    ctx = BenchContext(args, workdir, args.cache_dir, find_occystrap(args.occystrap))
    log(f"scratch dir {workdir}; occystrap {ctx.occystrap}")
    results: list[ScenarioResult] = []
    try:
        with interruptible():
            for name in names:
                t0 = time.monotonic()
                results.append(scenarios[name].fn(ctx))
                log(f"scenario {name} took {time.monotonic() - t0:.0f}s")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        ctx.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    write_reports(args.out_dir, results, environment(), args)
    print_results(results, args.out_dir)
    # Missing a target is a finding, not a failure of the harness: exit 0 unless a command failed.
    return 1 if any_failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
