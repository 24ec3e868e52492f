"""When to try a request again, and how long to wait: exponential backoff with jitter,
Retry-After honoured, a bounded number of tries. The sleep and the randomness are
injectable, so tests count the waits instead of waiting."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from occystrap.errors import RateLimitedError, TransferError
from occystrap.events import BlobRetry, Reporter

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Retry-After beyond this is not waited out: better to fail and let the user decide.
MAX_RETRY_AFTER = 300.0


class Retryable(Exception):
    """A failure worth another try: a dropped connection, a 5xx, a 429."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after

    @property
    def rate_limited(self) -> bool:
        # Only the status says so: a reason such as "body ended at byte 14290" must not.
        return self.reason.startswith("HTTP 429")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


def for_status(status: int, retry_after: str | None) -> Retryable:
    reason = "HTTP 429 (rate limited)" if status == 429 else f"HTTP {status}"
    return Retryable(reason, parse_retry_after(retry_after))


@dataclass
class RetryPolicy:
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: Callable[[], float] = random.random
    reporter: Reporter | None = field(default=None, repr=False)

    async def run(self, attempt: Callable[[], Awaitable[T]], what: str, digest: str | None = None) -> T:
        """attempt() until it succeeds, or the tries run out (then the library's own error)."""
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except Retryable as exc:
                await self.wait(tries, exc, what, digest)

    async def wait(self, tries: int, exc: Retryable, what: str, digest: str | None) -> None:
        """Wait before try number tries + 1, or give up."""
        if tries > self.retries:
            cls = RateLimitedError if exc.rate_limited else TransferError
            raise cls(f"{what}: {exc.reason} after {tries} tries") from None
        delay = min(self.max_backoff, self.backoff * (2 ** (tries - 1)))
        delay = delay * (0.5 + self.jitter() / 2)
        if exc.retry_after is not None:
            delay = min(max(delay, exc.retry_after), MAX_RETRY_AFTER)
        if self.reporter is not None:
            self.reporter.emit(BlobRetry(digest, what, tries, delay, exc.reason))
        await self.sleep(delay)
