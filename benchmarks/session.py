"""One invocation of a benchmark program: the options every such program takes, and a session that
owns the scratch directory and the registry and cleans both up, also on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from benchmarks.common import log
from benchmarks.harness import BenchContext
from benchmarks.layers import DEFAULT_CACHE


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Image sizes, the occystrap under test, and the scratch directory's fate."""
    p.add_argument(
        "--big-mb", type=float, default=None, help="uncompressed MiB of the big layer (default 400)"
    )
    p.add_argument("--quick", action="store_true", help="small images and 1 round: a smoke test")
    p.add_argument(
        "-j", "--parallel", type=int, default=None, help="pass -j N to occystrap (default: its own)"
    )
    p.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"generated layers (default {DEFAULT_CACHE})"
    )
    p.add_argument("--occystrap", default=None, help="occystrap executable (default: beside this Python)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before one command is killed")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip checking warm-up outputs")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (registry storage, logs)")


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


def require(tools: Iterable[str], install: str) -> None:
    for tool in tools:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed ({install})")


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the registry and child commands are stopped."""
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def session(args: argparse.Namespace) -> Iterator[BenchContext]:
    """A BenchContext in a fresh scratch directory; on the way out (KeyboardInterrupt included, which
    the caller handles) the registry is stopped and the directory removed unless --keep."""
    workdir = Path(tempfile.mkdtemp(prefix="occystrap-bench-"))
    ctx = BenchContext(args, workdir, args.cache_dir, find_occystrap(args.occystrap))
    log(f"scratch dir {workdir}; occystrap {ctx.occystrap}")
    try:
        with _interruptible():
            yield ctx
    finally:
        ctx.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
