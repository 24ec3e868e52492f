"""The scenario registry: each module in `benchmarks/scenarios/` registers its scenarios with
`@scenario(...)`; `load()` imports them all, so a new scenario is one new file there.

A scenario is a function of a `BenchContext` returning a `ScenarioResult`. `order` places it in
`--list` and in the reports (the default set runs in that order too).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.harness import BenchContext
from benchmarks.report import ScenarioResult

Scenario = Callable[[BenchContext], ScenarioResult]

PACKAGE = "benchmarks.scenarios"


@dataclass(frozen=True)
class Registered:
    name: str
    fn: Scenario
    description: str
    default: bool  # runs when no --scenario is given
    order: int


_REGISTRY: dict[str, Registered] = {}


def scenario(
    name: str, description: str, *, default: bool = True, order: int = 100
) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(
                f"two scenarios named {name!r}: {_REGISTRY[name].fn.__module__} and {fn.__module__}"
            )
        _REGISTRY[name] = Registered(name, fn, description, default, order)
        return fn

    return register


def load() -> dict[str, Registered]:
    """Every scenario in the package, by name, in their order."""
    package = importlib.import_module(PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{PACKAGE}.{module.name}")
    return {r.name: r for r in sorted(_REGISTRY.values(), key=lambda r: (r.order, r.name))}
