"""Benchmarks (pytest-benchmark) and their report: `make bench`, `python -m bench.report RESULTS.json`."""
