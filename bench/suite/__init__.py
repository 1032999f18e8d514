"""The pytest-benchmark suite (`pytest bench`, `make bench`); its session, options and fixtures: bench/conftest.py."""
