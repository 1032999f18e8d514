# Two commands for a new user: `make demo` and `make test`. Both create and reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := ../shared/data/tinyshakespeare/input.txt
DATA_SOURCE := $(if $(wildcard $(SHARED_DATA)),--source $(SHARED_DATA))
OUT ?= out
PYTEST_ARGS ?=

.PHONY: install data demo train sample test bench lint clean

install: $(VENV)/.installed

# torch 2.13.0 is installed first, on its own: asking for it by exact version picks the local CPU wheel
# (and, on a GPU machine, the matching CUDA build) before any other package can pull a different one.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,export,dev]'
	touch $@

data: install
	$(PY) -m gpt.data $(DATA_SOURCE)

train: data
	$(PY) -m gpt.train --preset cpu --out-dir $(OUT)

sample: install
	$(PY) -m gpt.sample --ckpt $(OUT) --prompt "ROMEO:" --max-new-tokens 500 --stats

demo: train sample

test: data
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

bench: install
	$(PY) -m pytest bench -q

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(OUT) .pytest_cache
