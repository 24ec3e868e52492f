"""Every way occystrap runs things at once, in one place: limiters, gathering, first errors.

Task groups wrap failures in exception groups; the user wants the one that mattered
(`first_error`). Limits are named so a reader sees what bounds what: blob bodies in
flight, their stage threads, manifest and tag requests, CPU-bound checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from occystrap.errors import OccystrapError
from occystrap.tuning import DEFAULT_PARALLEL, DEFAULT_VERIFY_WORKERS

T = TypeVar("T")

# Manifests and tag lists are small requests: many at once hide latency without memory cost.
RESOLVE_PARALLEL = 16
# How often to look again at a blob another process is writing into the same directory.
BUSY_POLL = 0.2


@dataclass
class Limits:
    """The named limiters of one run."""

    parallel: int = DEFAULT_PARALLEL
    cpu_workers: int = DEFAULT_VERIFY_WORKERS
    transfers: anyio.CapacityLimiter = field(init=False)
    # Each blob in flight runs up to three stage threads; their own limiter keeps them
    # from starving (or being starved by) the short calls that share anyio's default one.
    stages: anyio.CapacityLimiter = field(init=False)
    resolves: anyio.CapacityLimiter = field(init=False)
    cpu: anyio.CapacityLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.parallel = max(1, self.parallel)
        self.transfers = anyio.CapacityLimiter(self.parallel)
        self.stages = anyio.CapacityLimiter(3 * self.parallel)
        self.resolves = anyio.CapacityLimiter(RESOLVE_PARALLEL)
        self.cpu = anyio.CapacityLimiter(max(1, self.cpu_workers))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def first_error(exc: BaseException) -> BaseException:
    """The failure that mattered: a library error, else Ctrl-C, else the first that is not a
    cancellation (siblings cancelled because of it are noise)."""
    leaves = _leaves(exc)
    for kind in (OccystrapError, KeyboardInterrupt):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    # Also called after the event loop has ended (the CLI's last word), where anyio cannot say.
    cancelled = _cancelled_class()
    return next((leaf for leaf in leaves if not isinstance(leaf, cancelled)), leaves[0])


def _cancelled_class() -> type[BaseException]:
    try:
        return anyio.get_cancelled_exc_class()
    except RuntimeError:  # no event loop running: ours is always asyncio's
        return asyncio.CancelledError


def library_error(exc: BaseException) -> OccystrapError | None:
    """The library error when that is all a failure is (so --keep-going may carry on past it)."""
    leaves = [leaf for leaf in _leaves(exc) if not isinstance(leaf, anyio.get_cancelled_exc_class())]
    if leaves and all(isinstance(leaf, OccystrapError) for leaf in leaves):
        found = leaves[0]
        assert isinstance(found, OccystrapError)
        return found
    return None


async def gather(
    calls: Sequence[Callable[[], Awaitable[T]]], limiter: anyio.CapacityLimiter | None = None
) -> list[T]:
    """Run calls concurrently (each under limiter, if given); results in the calls' order."""
    results: list[T] = []
    slots: list[tuple[bool, T | None]] = [(False, None)] * len(calls)

    async def one(i: int, call: Callable[[], Awaitable[T]]) -> None:
        if limiter is None:
            slots[i] = (True, await call())
        else:
            async with limiter:
                slots[i] = (True, await call())

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(one, i, call)
    for done, value in slots:
        if done:
            results.append(value)  # type: ignore[arg-type]
    return results


class Busy(Exception):
    """Another process holds what we want right now (e.g. it is writing this blob)."""


R = TypeVar("R")


def thread_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int, on_failure: Callable[[], None]
) -> Iterator[R]:
    """fn over items on up to `workers` threads (synchronous callers: code already on a worker
    thread), results in the items' order. When one fails (or the consumer stops), on_failure()
    tells the others to stop early and what has not started is cancelled."""
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items) or 1))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in futures:
                yield future.result()
        except BaseException:
            on_failure()
            for f in futures:
                f.cancel()
            raise
