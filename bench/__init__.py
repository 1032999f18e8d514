"""Benchmarks and their reports: `make bench` (the pytest-benchmark suite, bench/suite/, then `python -m
bench.report RESULTS.json`) and the `python -m bench.X` commands at this level. What they share is in
bench/harness/; what their results look like, and the documentation's tables, in bench/reports/."""
