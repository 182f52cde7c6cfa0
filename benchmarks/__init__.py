"""The benchmark scripts (`bench_*.py`, each printing JSON) and their runner, `python -m benchmarks`."""
