"""What the benchmarks share: what is measured and how much (plan), the hardware-limit arithmetic (limits), the
machine (machine), the model files every backend is timed on (models), timing (timing), the serving load
(server, load, engines), onnxruntime-genai on our files (genai), `gpt.train` runs (train_runs), the options of
the `python -m bench.X` commands (cli) and the result files (results_files)."""
