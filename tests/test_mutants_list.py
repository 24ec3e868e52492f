"""`make mutants` is too slow for `make test`, so its list could go stale unnoticed (it did once:
two checks moved in a refactor and their mutations no longer applied). This keeps the cheap half
in every run: each mutation's snippet is still in its file exactly once, and every test it names
exists."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _mutants() -> ModuleType:
    spec = importlib.util.spec_from_file_location("occystrap_mutants", ROOT / "tools" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_every_mutation_still_applies_exactly_once() -> None:
    mutants = _mutants()
    assert mutants._find_all(mutants.MUTATIONS) == []


def test_every_test_a_mutation_names_exists() -> None:
    mutants = _mutants()
    missing = []
    for m in mutants.MUTATIONS:
        for test_id in m.tests:
            path, _, name = test_id.partition("::")
            name = name.split("[", 1)[0]
            source = (ROOT / path).read_text() if (ROOT / path).exists() else ""
            if f"def {name}(" not in source:
                missing.append(f"{m.name}: {test_id}")
    assert missing == []
