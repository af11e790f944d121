"""mibcore benchmark suite: every operator x backend x mode against the eager reference.

Run `python -m benchmarks [--quick]`; pytest-benchmark files (`bench_*.py`) time the same
cases for `pytest benchmarks --benchmark-only`.
"""
