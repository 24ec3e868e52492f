"""The pull-quota reserve under concurrent GETs, deterministic (no I/O): CI once saw a
registry's reply already count another GET still in flight, and the reserve then refused the
last tag a pull too early."""

from __future__ import annotations

import asyncio

import pytest

from occystrap.registry.budget import Budget, QuotaReserveReached

REGISTRY = "registry.example"


def _left(n: int) -> dict[str, str]:
    return {"ratelimit-limit": "5;w=21600", "ratelimit-remaining": f"{n};w=21600"}


async def test_a_reply_that_counts_the_other_gets_in_flight_does_not_refuse_early() -> None:
    budget = Budget(reserve=2)
    budget.observe(REGISTRY, _left(5))
    async with budget.spend(REGISTRY) as settle_a, budget.spend(REGISTRY) as settle_b:
        # The registry counted both on arrival: the first reply already says 3 left.
        budget.observe(REGISTRY, _left(3))
        settle_a()
        third = asyncio.ensure_future(_admitted(budget))
        await asyncio.sleep(0)
        assert not third.done()  # 3 left, one in flight: not known yet whether a pull is spare
        settle_b()  # its reply also says 3: nothing was in flight beyond it
    assert await third  # 3 - 1 keeps the reserve of 2
    with pytest.raises(QuotaReserveReached, match=r"reserve of 2 pulls \(2 of 5 left"):
        budget.observe(REGISTRY, _left(2))
        async with budget.spend(REGISTRY):
            pass


async def test_a_get_whose_reply_counts_only_itself_still_holds_the_reserve() -> None:
    budget = Budget(reserve=2)
    budget.observe(REGISTRY, _left(3))
    async with budget.spend(REGISTRY) as settle:
        waiting = asyncio.ensure_future(_admitted(budget))
        await asyncio.sleep(0)
        assert not waiting.done()  # 3 - 1 in flight - 1 would touch the reserve, if counted
        budget.observe(REGISTRY, _left(2))  # it was not counted yet: now it is
        settle()
    with pytest.raises(QuotaReserveReached, match=r"\(2 of 5 left"):
        await waiting
    assert len(budget.refusals) == 1


async def _admitted(budget: Budget) -> bool:
    async with budget.spend(REGISTRY):
        return True
