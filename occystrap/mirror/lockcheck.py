"""A lock against a spec: does it cover exactly the spec's images and tags (`mirror --locked
SPEC`), and what moved between two locks (`occystrap lock`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from occystrap.concurrency import gather
from occystrap.digest import Digest
from occystrap.errors import UsageError
from occystrap.mirror.lockfile import Lock
from occystrap.mirror.plan import Planner
from occystrap.mirror.spec import MirrorSpec

SHOWN = 10  # names listed per kind in the one error line
# What `referrers: true` adds to a lock beyond the spec's own tags: the tag schema's
# `sha256-<hex>` (and cosign's .sig/.att/.sbom) tags, and digests the referrers API named.
_REFERRER_KEY = re.compile(r"sha256-[a-f0-9]{64}(\.sig|\.att|\.sbom)?|sha256:[a-f0-9]{64}")


def _name(image: str, key: str) -> str:
    return f"{image}@{key}" if key.startswith("sha256:") else f"{image}:{key}"


def _listed(names: list[str]) -> str:
    more = f", +{len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def mismatch(spec: MirrorSpec, lock: Lock, keys: dict[str, list[str]]) -> str | None:
    """What keeps the lock from covering exactly the spec (keys: each image's selected tags
    and digests), as one line; None when it does."""
    missing: list[str] = []
    extra: list[str] = []
    wanted = {s.name: s for s in spec.images}
    for name, image in sorted(wanted.items()):
        locked = lock.get(name)
        if locked is None:
            missing.append(f"{name} (every tag)")
            continue
        missing += [_name(name, k) for k in sorted(set(keys[name]) - set(locked))]
        allowed = spec.wants_referrers(image)
        extra += [
            _name(name, k)
            for k in sorted(set(locked) - set(keys[name]))
            if not (allowed and _REFERRER_KEY.fullmatch(k))
        ]
    extra += [f"{name} (every tag)" for name in sorted(set(lock) - set(wanted))]
    if not missing and not extra:
        return None
    parts = ([f"missing {_listed(missing)}"] if missing else []) + (
        [f"extra {_listed(extra)}"] if extra else []
    )
    return "; ".join(parts)


async def selected_keys(planner: Planner, spec: MirrorSpec) -> dict[str, list[str]]:
    """Each image's tags and digests as the spec selects them now (tag lists are fetched
    for filters; no manifest is)."""

    found = await gather([lambda s=s: planner.tags_of(s) for s in spec.images])  # type: ignore[misc]
    return {s.name: keys for s, keys in zip(spec.images, found, strict=True)}


async def check_covers(planner: Planner, spec: MirrorSpec, lock: Lock, where: str) -> None:
    """One clear error, before any digest is fetched, when the lock is not the spec's."""
    problem = mismatch(spec, lock, await selected_keys(planner, spec))
    if problem is not None:
        raise UsageError(f"{where} does not match the spec: {problem} (run `occystrap lock` to update it)")


@dataclass(frozen=True)
class Moved:
    """One tag whose locked content differs between two locks."""

    image: str
    key: str
    before: dict[str, str]
    after: dict[str, str]

    @property
    def status(self) -> str:
        return "added" if not self.before else "removed" if not self.after else "moved"

    def line(self) -> str:
        name = _name(self.image, self.key)
        if self.status != "moved":
            plats = self.after or self.before
            shown = ", ".join(f"{p} {Digest.parse(d).short}" for p, d in sorted(plats.items()))
            return f"{self.status} {name} ({shown})"
        changes = [
            f"{p} {_short(self.before.get(p))} -> {_short(self.after.get(p))}"
            for p in sorted(set(self.before) | set(self.after))
            if self.before.get(p) != self.after.get(p)
        ]
        return f"moved {name} ({', '.join(changes)})"


def _short(digest: str | None) -> str:
    return Digest.parse(digest).short if digest else "none"


def moved(old: Lock, new: Lock) -> list[Moved]:
    """Every tag added, removed or moved from old to new, sorted by name."""
    out = []
    for image in sorted(set(old) | set(new)):
        before, after = old.get(image, {}), new.get(image, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                out.append(Moved(image, key, before.get(key, {}), after.get(key, {})))
    return out
