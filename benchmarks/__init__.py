"""Benchmarks for rdo: `python -m benchmarks.run` (or `make bench`); see docs/performance.md.

Each `bench_NAME.py` defines `run(quick: bool, device: str) -> dict` (`run(quick)` is accepted too)
and is found by `benchmarks.run` by its file name.
"""
