"""Which tags a spec picks: explicit tags, regexes over the registry's tag list, semver
ranges (node-semver style) and the newest N. Pure functions, tested on their own."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_COMPARATOR = re.compile(r"\s*(>=|<=|>|<|=|\^|~)?\s*([^\s<>=^~]+)")
Key = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]
Range = tuple[tuple[tuple[str, Key], ...], ...]  # alternatives (||) of comparator sets (AND)
_SEMVER = re.compile(
    r"v?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*))?(?:\.(?P<patch>0|[1-9]\d*))?"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?"
)


def semver_key(tag: str) -> Key | None:
    """A sort key for semver-ish tags (v1, 1.2, 1.2.3-rc.1); None for tags that are not versions.

    A release sorts after its pre-releases; numeric pre-release parts compare as numbers.
    """
    m = _SEMVER.fullmatch(tag)
    if m is None:
        return None
    pre = m["pre"]
    parts: tuple[tuple[int, int | str], ...] = ()
    if pre:
        parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (int(m["major"]), int(m["minor"] or 0), int(m["patch"] or 0), 0 if pre else 1, parts)


def newest(tags: Iterable[str], count: int) -> list[str]:
    """The `count` newest semver tags, newest first; non-version tags never count."""
    keyed = [(k, t) for t in tags if (k := semver_key(t)) is not None]
    keyed.sort(key=lambda kt: (kt[0], kt[1]), reverse=True)
    return [t for _, t in keyed[:count]]


def parse_range(text: str) -> Range:
    """`>=1.2 <2 || ^3.1 || ~4.0.1 || 5.0.0`: comparator sets joined by ||, as node-semver writes them.

    ^X.Y.Z allows changes that keep the left-most non-zero part; ~X.Y.Z allows patch changes.
    """
    alternatives: list[tuple[tuple[str, Key], ...]] = []
    for part in text.split("||"):
        comparators: list[tuple[str, Key]] = []
        for m in _COMPARATOR.finditer(part.strip()):
            op, version = m.group(1) or "=", m.group(2)
            key = semver_key(version)
            if key is None:
                raise ValueError(f"{version!r} is not a version")
            major, minor, patch = key[0], key[1], key[2]
            if op == "^":
                upper = (major + 1, 0, 0) if major else (0, minor + 1, 0) if minor else (0, 0, patch + 1)
                comparators += [(">=", key), ("<", (*upper, 0, ()))]
            elif op == "~":
                comparators += [(">=", key), ("<", (major, minor + 1, 0, 0, ()))]
            else:
                comparators.append((op, key))
        if not comparators:
            raise ValueError(f"empty comparator set in {text!r}")
        alternatives.append(tuple(comparators))
    return tuple(alternatives)


def in_range(tag: str, version_range: Range) -> bool:
    key = semver_key(tag)
    if key is None:
        return False
    tests = {">=": key.__ge__, "<=": key.__le__, ">": key.__gt__, "<": key.__lt__, "=": key.__eq__}
    return any(all(tests[op](bound) for op, bound in group) for group in version_range)


def select_tags(
    available: Sequence[str],
    tags: Sequence[str] = (),
    include: Sequence[re.Pattern[str]] = (),
    exclude: Sequence[re.Pattern[str]] = (),
    latest: int | None = None,
    version_range: Range = (),
) -> list[str]:
    """explicit tags ∪ (available filtered by include, minus exclude, then newest N if latest given).

    With no include, every tag is included; the filtered part is empty when no filter
    (include, exclude or latest) is given at all. The result is sorted, without repeats.
    """
    chosen = set(tags)
    if include or exclude or latest is not None or version_range:
        filtered = [
            t
            for t in available
            if (not include or any(p.search(t) for p in include))
            and not any(p.search(t) for p in exclude)
            and (not version_range or in_range(t, version_range))
        ]
        if latest is not None:
            filtered = newest(filtered, latest)
        chosen.update(filtered)
    return sorted(chosen)
