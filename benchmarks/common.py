"""What every benchmark module needs: units, progress logging, GNU time's report."""

from __future__ import annotations

import contextlib
import sys

from benchmarks import PROJECT_ROOT

__all__ = ["GNU_TIME", "PROJECT_ROOT", "KiB", "MiB", "gnu_time_stats", "log"]

KiB = 1024
MiB = 1024 * KiB
GNU_TIME = "/usr/bin/time"


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the result tables."""
    print(msg, file=sys.stderr, flush=True)


_TIME_FIELDS = {
    "Maximum resident set size (kbytes)": "rss",
    "User time (seconds)": "user",
    "System time (seconds)": "sys",
}


def gnu_time_stats(text: str) -> dict[str, float]:
    """`/usr/bin/time -v` output -> {"rss": KiB, "user": s, "sys": s} (the fields present)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key in _TIME_FIELDS:
            with contextlib.suppress(ValueError):
                out[_TIME_FIELDS[key]] = float(value)
    return out
