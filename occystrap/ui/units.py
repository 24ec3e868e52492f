"""Sizes, rates, durations and names as every display prints them (ASCII only: CI logs and
odd locales must never break on them). Pure functions."""

from __future__ import annotations

import math


def short(digest: str | None) -> str:
    """`sha256:0123456789abcdef...` -> `0123456789ab` (what docker shows)."""
    if not digest:
        return "-"
    algo, sep, hexpart = digest.partition(":")
    return (hexpart if sep else algo)[:12]


def short_image(name: str) -> str:
    """Drop the registry host and `library/`: `127.0.0.1:5000/team/app:v1` -> `team/app:v1`."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        name = rest
        if first == "docker.io" and name.startswith("library/"):
            name = name[len("library/") :]
    base, at, digest = name.partition("@")
    return f"{base}@{short(digest)}" if at else name


_UNITS = ("B", "kB", "MB", "GB", "TB")


def _scale(n: float) -> tuple[float, str]:
    n = abs(n)
    for i, unit in enumerate(_UNITS):
        if n < 1000 or unit == _UNITS[-1]:
            return 1000.0**i, unit
        n /= 1000
    return 1.0, "B"  # pragma: no cover


def human(n: float) -> str:
    """Decimal units, as registries and docker report sizes: `1.2 MB`."""
    div, unit = _scale(n)
    return f"{n:.0f} {unit}" if unit == "B" else f"{n / div:.1f} {unit}"


def human_pair(done: float, total: float) -> str:
    """`4.2/10.0 MB`: both numbers in the unit of the total."""
    div, unit = _scale(max(total, done))
    if unit == "B":
        return f"{done:.0f}/{total:.0f} B"
    return f"{done / div:.1f}/{total / div:.1f} {unit}"


def rate(bps: float | None) -> str:
    return "" if bps is None else f"{human(bps)}/s"


def duration(seconds: float | None) -> str:
    """`7s`, `3m05s`, `1h02m`; empty when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
