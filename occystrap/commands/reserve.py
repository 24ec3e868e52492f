"""mirror --rate-limit-reserve: what the reserve held back, and the line the run stops with.

The reserve refuses a manifest GET (see registry/budget.py); here that refusal is narrowed
to the tag it was for. Everything else resolves and is mirrored, so every run makes progress
and a re-run (whose unchanged tags cost only free HEADs) picks up the tags left over. A lock
replay (--locked) is narrowed to the image instead.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from occystrap.errors import OccystrapError
from occystrap.mirror import lockfile
from occystrap.mirror.plan import Planned, Planner
from occystrap.platform import Platform, Platforms
from occystrap.reference import Reference
from occystrap.registry.budget import Budget, QuotaReserveReached
from occystrap.sources.base import Source

Held = dict[str, list[str]]  # image -> tags (or digests) held back; [] for the whole image


class ReservePlanner(Planner):
    """A planner that sets aside the tags the quota reserve refused, instead of failing."""

    def __init__(self, source: Source, default_platform: Platform, limiter: anyio.CapacityLimiter) -> None:
        super().__init__(source, default_platform, limiter)
        self.held: Held = {}

    async def resolve_key(self, repo: Reference, key: str, wanted: Platforms) -> list[Planned]:
        try:
            return await super().resolve_key(repo, key, wanted)
        except QuotaReserveReached:
            self.held.setdefault(repo.full_name, []).append(key)
            return []


def held_back(planner: Planner, failures: dict[str, str], budget: Budget) -> Held:
    """Tags and images the reserve held back; those images are taken out of failures (the
    failures are not theirs)."""
    held: Held = {}
    if isinstance(planner, ReservePlanner):
        held = {name: sorted(keys) for name, keys in planner.held.items()}
    for name in [n for n, why in failures.items() if budget.refused(why)]:
        del failures[name]
        held[name] = []
    return held


def write_lock(path: Path, fresh: lockfile.Lock, failures: dict[str, str], held: Held) -> None:
    """The lock of what was mirrored, keeping what an earlier lock said of what was held back
    (DEST still holds it)."""
    old: lockfile.Lock = {}
    if held and path.exists():
        try:
            old = lockfile.read_lock(path)
        except OccystrapError:
            old = {}
    merged = {name: dict(tags) for name, tags in fresh.items()}
    whole = dict(failures)
    for name, keys in held.items():
        if not keys:
            whole[name] = "held back"
            continue
        for key in keys:
            if key in old.get(name, {}):
                merged.setdefault(name, {}).setdefault(key, old[name][key])
    lockfile.write_lock(path, merged, whole)


def stopped(budget: Budget, held: Held) -> QuotaReserveReached:
    """The run's one line: why it stopped, when the quota refills, what is left for then."""
    left = [f"{name}:{key}" if not key.startswith("sha256:") else f"{name}@{key[:19]}"
            for name, keys in sorted(held.items()) for key in keys] + [
        name for name, keys in sorted(held.items()) if not keys
    ]  # fmt: skip
    shown = ", ".join(left[:5]) + (f", +{len(left) - 5} more" if len(left) > 5 else "")
    registry = budget.refusals[0].registry
    return QuotaReserveReached(f"{budget.reserve_message(registry)} (left: {shown})", registry)
