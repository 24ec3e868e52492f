"""Benchmarks for occystrap: `python -m benchmarks.bench` (what `make bench` runs).

The modules import the registry and image helpers of the test suite (`tests.support`), so the
project root must be importable even when this package is run from elsewhere: done once here,
before any module of the package is loaded.
"""

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
