"""Spending a registry's pull quota with care: what each registry reports is left, and a
reserve that a run stops before touching.

Docker Hub counts manifest GETs (HEADs are free) and answers 429 once the quota is spent,
without a Retry-After. A run that keeps retrying then only dies later, mid-image. Instead:
a 429 that reports nothing left stops at once with one line saying when the quota refills,
and with a reserve, each manifest GET is admitted only while what the registry last
reported, less the GETs already in flight, stays at or above the reserve after it; one that
would not waits for those in flight to report, and is refused only on the registry's own count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from occystrap.errors import OccystrapError, RateLimitedError
from occystrap.registry.ratelimit import Quota, parse

# A quota that refills sooner than this is waited out by the ordinary retries.
SHORT_RESET = 300.0


class QuotaReserveReached(RateLimitedError):
    """The reserve a run keeps of a registry's pull quota would be touched."""

    def __init__(self, message: str, registry: str) -> None:
        super().__init__(message)
        self.registry = registry


class Budget:
    def __init__(self, reserve: int | None = None) -> None:
        self.reserve = reserve
        self.quotas: dict[str, Quota] = {}
        self._in_flight: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._probes: dict[str, asyncio.Lock] = {}
        self._probed: set[str] = set()
        # Every refusal this run: a stopped mirror tells an image held back by the reserve
        # from one that failed for its own reasons.
        self.refusals: list[QuotaReserveReached] = []

    def observe(self, registry: str, headers: Mapping[str, str]) -> Quota | None:
        """Note what a response says is left; the quota when it is news worth an event."""
        quota = parse(headers)
        if quota is None:
            return None
        old = self.quotas.get(registry)
        if old is not None and (old.limit, old.window) == (quota.limit, quota.window):
            # Answers to concurrent requests may arrive out of order: within one run the lower
            # count is the safe one (a refill during the run is only missed, never overspent).
            quota = min(old, quota, key=lambda q: q.remaining)
        self.quotas[registry] = quota
        return quota if old != quota else None

    def spent(self, registry: str, headers: Mapping[str, str]) -> RateLimitedError | None:
        """For a 429: the error to stop with when the quota is spent and will not refill soon."""
        quota = parse(headers) or self.quotas.get(registry)
        if quota is None or quota.remaining > 0:
            return None
        if quota.reset is not None and quota.reset <= SHORT_RESET:
            return None
        return RateLimitedError(
            f"{registry}: pull rate limit reached ({quota.describe()}); {quota.refill()}."
            " Run the same command again then to carry on: what was transferred is kept"
        )

    def note(self, registry: str, status: int, headers: Mapping[str, str]) -> Quota | None:
        """Every response: what it says is left (the quota when it is news worth an event); a
        429 that leaves nothing raises, since retrying into a spent quota only dies later."""
        quota = self.observe(registry, headers)
        if status == 429:
            spent = self.spent(registry, headers)
            if spent is not None:
                raise spent
        return quota

    def _wants_probe(self, registry: str) -> bool:
        return self.reserve is not None and registry not in self.quotas and registry not in self._probed

    async def learn(self, registry: str, head: Callable[[], Awaitable[object]]) -> None:
        """With a reserve, learn the quota with one free HEAD before the first counted GET,
        so the reserve holds from the start."""
        if not self._wants_probe(registry):
            return
        async with self._probes.setdefault(registry, asyncio.Lock()):
            if not self._wants_probe(registry):
                return
            with contextlib.suppress(OccystrapError):  # the GET that follows says what is wrong
                await head()
            self._probed.add(registry)

    @asynccontextmanager
    async def spend(self, registry: str) -> AsyncIterator[Callable[[], None]]:
        """Around one counted request (a manifest GET): refused when it would touch the reserve.
        Yields `settle`, to call once the response's own count has been observed."""
        while self.reserve is not None and (quota := self.quotas.get(registry)) is not None:
            in_flight = self._in_flight.get(registry, 0)
            if quota.remaining - in_flight - 1 >= self.reserve:
                break
            if in_flight == 0:
                refusal = QuotaReserveReached(self.reserve_message(registry), registry)
                self.refusals.append(refusal)
                raise refusal
            # Near the reserve, the GETs in flight decide: a registry counts a request when it
            # arrives, so a reply may already include the others in flight (CI once refused the
            # last tag a pull too early by counting one twice). Wait for them and decide exactly.
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(registry, []).append(waiter)
            await waiter
        self._in_flight[registry] = self._in_flight.get(registry, 0) + 1
        settled = False

        def settle() -> None:
            nonlocal settled
            if not settled:
                settled = True
                self._in_flight[registry] -= 1
                for waiter in self._waiters.pop(registry, []):
                    if not waiter.done():
                        waiter.set_result(None)

        try:
            yield settle
        finally:
            settle()

    def reserve_message(self, registry: str) -> str:
        """Why a run stops for the reserve, and when the quota refills."""
        quota = self.quotas[registry]
        return (
            f"{registry}: stopped to keep a reserve of {self.reserve} pull{'' if self.reserve == 1 else 's'}"
            f" ({quota.describe()});"
            f" {quota.refill()}: run the same command again then to carry on, what was mirrored is kept"
        )

    def refused(self, message: str) -> bool:
        """Whether a failure message is one of this run's reserve refusals."""
        return any(str(r) == message for r in self.refusals)
