"""From measurements to figures: medians per tool, ratios of paired rounds, checks against targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.common import KiB, MiB
from benchmarks.harness import Measurement
from benchmarks.images import PushedImage

RSS_LIMIT_MIB = 64.0


@dataclass(frozen=True)
class Summary:
    """One tool on one image over the counted rounds; every figure NaN if any run failed."""

    image: str
    tool: str
    runs: int
    failed: bool
    median_s: float
    min_s: float
    max_s: float
    mib_per_s: float  # compressed bytes of the image / median time
    peak_rss_mib: float  # the largest peak over the counted runs
    median_cpu_s: float
    median_served_mib: float
    error: str = ""


def summarise(image: PushedImage, tool: str, ms: Sequence[Measurement]) -> Summary:
    mine = [m for m in ms if m.tool == tool and m.image == image.name]
    counted = [m for m in mine if m.counted]
    errors = [m.error for m in mine if m.rc != 0]
    if not counted or errors:
        nan = float("nan")
        return Summary(image.name, tool, len(counted), True, nan, nan, nan, nan, nan, nan, nan,
                       errors[0] if errors else "no runs")  # fmt: skip
    walls = [m.wall_s for m in counted]
    med = statistics.median(walls)
    return Summary(
        image=image.name,
        tool=tool,
        runs=len(counted),
        failed=False,
        median_s=med,
        min_s=min(walls),
        max_s=max(walls),
        mib_per_s=image.compressed_bytes / MiB / med,
        peak_rss_mib=max(m.max_rss_kib for m in counted) / KiB,
        median_cpu_s=statistics.median(m.cpu_s for m in counted),
        median_served_mib=statistics.median(m.served_bytes for m in counted) / MiB,
    )


def failure_notes(summaries: Iterable[Summary], by_image: bool = False) -> list[str]:
    """One report note per failed tool: its name and the last line of its error."""
    return [
        f"FAILED {s.image + '/' if by_image else ''}{s.tool}: {s.error.splitlines()[-1] if s.error else ''}"
        for s in summaries
        if s.failed
    ]


def paired_ratio(ms: Sequence[Measurement], image: str, a: str, b: str) -> float:
    """Median over rounds of a/b measured back to back (less sensitive to drift than medians' ratio)."""
    by_round: dict[int, dict[str, float]] = {}
    for m in ms:
        if m.image == image and m.counted:
            by_round.setdefault(m.round, {})[m.tool] = m.wall_s
    ratios = [r[a] / r[b] for r in by_round.values() if a in r and b in r and r[b] > 0]
    return statistics.median(ratios) if ratios else float("nan")


@dataclass(frozen=True)
class Check:
    """A figure against its target: met when value <= limit (NaN, from a failed run, never is)."""

    image: str
    what: str
    value: float
    limit: float
    unit: str = ""

    @property
    def met(self) -> bool:
        return not math.isnan(self.value) and self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def median_or_nan(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
