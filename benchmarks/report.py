"""Reports: tables as text (stdout) and reStructuredText, and everything as JSON, in bench-out/."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import PROJECT_ROOT, MiB
from benchmarks.stats import Check


@dataclass
class ScenarioResult:
    """What a scenario hands back: its table, its checks against targets, notes, and JSON detail."""

    name: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def fmt(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]


def render_text(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = _widths(headers, rows)
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(out)


def render_rst(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A reStructuredText simple table (empty cells become '..' so columns stay intact)."""
    cells = [[c if c.strip() else ".." for c in r] for r in rows]
    widths = _widths(headers, cells)
    rule = " ".join("=" * w for w in widths)
    out = [rule, " ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), rule]
    out += [" ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    out.append(rule)
    return "\n".join(out)


def _status(check: Check) -> str:
    return "met" if check.met else "NOT MET"


def _against_target(check: Check) -> str:
    return f"{check.what} = {fmt(check.value)}{check.unit} (target <= {check.limit:g}{check.unit})"


def mib(n: float) -> str:
    return fmt(n / MiB, 1)


def _version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def environment() -> dict[str, Any]:
    git = _version(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--", "occystrap"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "occystrap": f"{git}{' (+ uncommitted changes)' if dirty else ''}",
        "python": platform.python_version(),
        "skopeo": _version(["skopeo", "--version"]),
        "registry": _version(["docker-registry", "--version"]),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
    }


def write_reports(
    out_dir: Path, results: list[ScenarioResult], env: dict[str, Any], args: argparse.Namespace
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    rst = [
        "occystrap benchmarks",
        "=" * 20,
        "",
        f"Run {now}: ``{' '.join(sys.argv[1:]) or '(defaults)'}``.",
        "",
    ]
    rst += [f"- {k}: {v}" for k, v in env.items()] + [""]
    for r in results:
        rst += [r.title, "-" * len(r.title), "", render_rst(r.headers, r.rows), ""]
        rst += [f"- {n}" for n in r.notes] + [""]
        if r.checks:
            rst += ["Checks:", ""]
            rst += [f"- {_status(c)}: {c.image} {_against_target(c)}" for c in r.checks] + [""]
    (out_dir / "results.rst").write_text("\n".join(rst))
    doc = {
        "generated": now,
        "argv": sys.argv[1:],
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": env,
        "all_targets_met": all_met(results),
        "scenarios": {
            r.name: {
                "title": r.title,
                "table": {"headers": r.headers, "rows": r.rows},
                "checks": [c.to_json() for c in r.checks],
                "notes": r.notes,
                **r.data,
            }
            for r in results
        },
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, default=str))


def all_met(results: Sequence[ScenarioResult]) -> bool:
    return all(c.met for r in results for c in r.checks)


def print_results(results: Sequence[ScenarioResult], out_dir: Path) -> None:
    for r in results:
        print(f"\n{r.title}\n")
        print(render_text(r.headers, r.rows))
        print()
        for n in r.notes:
            print(f"  {n}")
        for c in r.checks:
            print(f"  [{_status(c)}] {c.image}: {_against_target(c)}")
    print(
        f"\nall targets met: {'yes' if all_met(results) else 'no'}; "
        f"results in {out_dir}/results.rst and results.json"
    )


def any_failed(results: Sequence[ScenarioResult]) -> bool:
    """A command failed (as opposed to a target missed, which is a finding, not a failure)."""
    return any(row[-1] == "NO: failed" for r in results for row in r.rows)
