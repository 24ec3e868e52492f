"""A registry pull quota, as Docker Hub keeps one, for the fault proxy to impose.

Docker Hub counts GETs of manifests (HEADs are free, which is how a client checks its quota
without spending it), reports the quota on every manifest response, and answers 429
TOOMANYREQUESTS once it is spent:

    ratelimit-limit: 100;w=21600
    ratelimit-remaining: 76;w=21600
    docker-ratelimit-source: 203.0.113.7

`style="ietf"` sends the IETF draft's form instead (draft-ietf-httpapi-ratelimit-headers):
`RateLimit-Limit: 100`, `RateLimit-Remaining: 76`, `RateLimit-Reset: 3600` and
`RateLimit-Policy: 100;w=21600`. Both use the same header names (Docker Hub's is an early form
of the draft), so one proxy speaks one style at a time.

    proxy.set_rate_limit(RateLimit(limit=3))
    ... three manifest GETs pass, the fourth gets 429 ...
    assert proxy.rate_limit.counted == 3 and proxy.rate_limit.refused == 1
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

RateLimitStyle = Literal["dockerhub", "ietf"]
DOCKER_HUB_WINDOW = 21600  # seconds: Docker Hub's six-hour window
TOO_MANY_REQUESTS_MESSAGE = (
    "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading"
)


@dataclass
class RateLimit:
    limit: int = 100
    remaining: int | None = None  # the starting balance (None: the full limit)
    window: int = DOCKER_HUB_WINDOW
    source: str = "127.0.0.1"  # docker-ratelimit-source: the address the quota is charged to
    style: RateLimitStyle = "dockerhub"
    reset: int = 3600  # RateLimit-Reset (ietf): seconds until the quota refills
    retry_after: int | None = None  # a Retry-After on the 429 (Docker Hub sends none)
    match: str = "/manifests/"  # which paths the quota covers

    counted: int = 0  # GETs that spent quota
    refused: int = 0  # GETs answered 429
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.remaining is None:
            self.remaining = self.limit

    @property
    def left(self) -> int:
        assert self.remaining is not None
        return self.remaining

    def refill(self, remaining: int | None = None) -> None:
        """A new window: the balance back to `remaining` (default: the limit)."""
        with self._lock:
            self.remaining = self.limit if remaining is None else remaining

    def charge(self, method: str, path: str) -> tuple[bool, list[tuple[str, str]]] | None:
        """None when the quota does not apply; else (allowed, headers for the response).

        A GET spends one unit, or is refused once none is left; a HEAD reports the balance
        without spending it, and is never refused.
        """
        if self.match not in path or method not in ("GET", "HEAD"):
            return None
        with self._lock:
            if method == "GET":
                if self.left <= 0:
                    self.refused += 1
                    return False, self._headers(0, refused=True)
                self.remaining = self.left - 1
                self.counted += 1
            return True, self._headers(self.left, refused=False)

    def _headers(self, remaining: int, refused: bool) -> list[tuple[str, str]]:
        if self.style == "dockerhub":
            headers = [
                ("ratelimit-limit", f"{self.limit};w={self.window}"),
                ("ratelimit-remaining", f"{remaining};w={self.window}"),
                ("docker-ratelimit-source", self.source),
            ]
        else:
            headers = [
                ("RateLimit-Limit", str(self.limit)),
                ("RateLimit-Remaining", str(remaining)),
                ("RateLimit-Reset", str(self.reset)),
                ("RateLimit-Policy", f"{self.limit};w={self.window}"),
            ]
        if refused and self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers


__all__ = ["DOCKER_HUB_WINDOW", "TOO_MANY_REQUESTS_MESSAGE", "RateLimit", "RateLimitStyle"]
