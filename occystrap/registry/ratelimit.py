"""A registry's pull quota, read from its rate-limit headers. Pure: headers in, a Quota out.

The forms seen in the wild, all read wherever they appear:

- Docker Hub: `ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 76;w=21600` (an early form
  of the IETF draft; `w` is the window in seconds) and `docker-ratelimit-source`.
- The IETF draft (draft-ietf-httpapi-ratelimit-headers), earlier revisions: `RateLimit-Limit`,
  `RateLimit-Remaining`, `RateLimit-Reset` (seconds until the quota refills) and
  `RateLimit-Policy: 100;w=3600`; a limit may list its policies (`10, 10;w=1, 50;w=60`).
- Its later revisions: `RateLimit: limit=100, remaining=50, reset=5`, then the structured
  `RateLimit: "default";r=50;t=30` with `RateLimit-Policy: "default";q=100;w=60`.
- GitHub-style `X-RateLimit-Limit/Remaining/Reset`, whose reset is a Unix time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

# A reset this large is a point in time (Unix seconds), not a number of seconds to wait.
EPOCH_THRESHOLD = 1_000_000_000


@dataclass(frozen=True)
class Quota:
    """What is left of a registry's quota, and over what window."""

    remaining: int
    limit: int | None = None
    window: int | None = None  # seconds the limit covers
    reset: float | None = None  # seconds until it refills, when the registry says
    source: str | None = None  # whom the registry charges (docker-ratelimit-source)

    def describe(self) -> str:
        """`76 of 100 left, window 6h` (and when it refills, if known)."""
        text = (
            f"{self.remaining} of {self.limit} left" if self.limit is not None else f"{self.remaining} left"
        )
        if self.window is not None:
            text += f", window {span(self.window)}"
        if self.reset is not None:
            text += f", refills in {span(self.reset)}"
        return text

    def refill(self) -> str:
        """When it refills, as precisely as the registry said."""
        if self.reset is not None:
            return f"it refills in {span(self.reset)}"
        if self.window is not None:
            # Docker Hub's window slides: pulls drop out of it six hours after they were made.
            return f"it refills within {span(self.window)} (its window)"
        return "the registry does not say when it refills"


def span(seconds: float) -> str:
    """`6h`, `1h30m`, `45m`, `2m05s`, `30s`."""
    s = max(0, round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


Item = tuple[str, dict[str, str]]


def _items(value: str) -> list[Item]:
    """`a;k=v, b` -> [("a", {"k": "v"}), ("b", {})]: the list form every variant shares."""
    out: list[Item] = []
    for raw in value.split(","):
        head, *params = (p.strip() for p in raw.split(";"))
        if head or params:
            pairs = (p.partition("=") for p in params if "=" in p)
            out.append((head.strip('"'), {k.strip().lower(): v.strip().strip('"') for k, _, v in pairs}))
    return out


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip().strip('"')
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value >= 0 else None


def _first(value: str | None) -> Item | None:
    items = _items(value) if value else []
    return items[0] if items else None


def _reset(value: str | None, now: float) -> float | None:
    seconds = _number(value)
    if seconds is None:
        return None
    return float(max(0.0, seconds - now) if seconds >= EPOCH_THRESHOLD else seconds)


def _window(*values: str | None) -> int | None:
    for value in values:
        for _, params in _items(value or ""):
            window = _number(params.get("w"))
            if window:
                return window
    return None


def _structured(value: str, policy: str | None, now: float) -> Quota | None:
    """`RateLimit:` in its later forms, with the policy it names (else the first)."""
    items = _items(value)
    if items and "=" in items[0][0]:  # limit=100, remaining=50, reset=5
        fields = dict(head.partition("=")[::2] for head, _ in items)
        count = _number(fields.get("remaining"))
        if count is None:
            return None
        return Quota(count, _number(fields.get("limit")), _window(policy), _reset(fields.get("reset"), now))
    name, params = items[0] if items else ("", {})
    count = _number(params.get("r"))
    if count is None:
        return None
    policies = _items(policy or "")
    chosen = next((p for n, p in policies if n == name), policies[0][1] if policies else {})
    return Quota(count, _number(chosen.get("q")), _number(chosen.get("w")), _reset(params.get("t"), now))


def parse(headers: Mapping[str, str], now: float | None = None) -> Quota | None:
    """The quota these response headers report; None when they report none."""
    now = time.time() if now is None else now
    h = {k.lower(): v for k, v in headers.items()}
    source = h.get("docker-ratelimit-source")
    policy = h.get("ratelimit-policy")
    for prefix in ("ratelimit-", "x-ratelimit-"):
        remaining = _first(h.get(prefix + "remaining"))
        count = _number(remaining[0]) if remaining else None
        if count is None:
            continue
        limit_item = _first(h.get(prefix + "limit"))
        limit = _number(limit_item[0]) if limit_item else None
        policy_item = _first(policy)
        if limit is None and policy_item is not None and prefix == "ratelimit-":
            limit = _number(policy_item[0])
        window = _window(h.get(prefix + "limit"), h.get(prefix + "remaining"), policy)
        return Quota(count, limit, window, _reset(h.get(prefix + "reset"), now), source)
    if "ratelimit" in h:
        found = _structured(h["ratelimit"], policy, now)
        return Quota(found.remaining, found.limit, found.window, found.reset, source) if found else None
    return None
