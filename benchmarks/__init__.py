"""Benchmarks for occystrap: `python -m benchmarks.bench` (what `make bench` runs)."""
