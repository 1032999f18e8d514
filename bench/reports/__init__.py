"""What the benchmarks' results look like: one module per table kind (bench_run: a `make bench` run, read by
runs and drawn by chart; serving, cluster, speculative, training), each imported by the command that writes the
result and by tables, which makes the documentation's and the README's tables from bench/results/."""
