# Two commands for a new user: `make demo` and `make test`. Both create and reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := ../shared/data/tinyshakespeare/input.txt
DATA_SOURCE := $(if $(wildcard $(SHARED_DATA)),--source $(SHARED_DATA))
OUT ?= out
PYTEST_ARGS ?=
# A second venv with only the base install (numpy + onnxruntime, no torch) proves the ONNX sampler stands alone.
BASE_VENV ?= .venv-base
BASE_CHECK := $(BASE_VENV)/check
TINY_TRAIN := --n_layer 1 --n_head 2 --n_embd 32 --block_size 32 --dropout 0 --batch_size 8 --max_iters 30 \
	--eval_interval 30 --eval_iters 2 --warmup_iters 5 --no-compile --no-progress

.PHONY: install data demo train sample onnx sample-onnx serve quality test test-base mutants bench lint web docs \
	docs-serve generated walkthrough scoreboard clean

install: $(VENV)/.installed

# torch 2.13.0 is installed first, on its own: asking for it by exact version picks the local CPU wheel
# (and, on a GPU machine, the matching CUDA build) before any other package can pull a different one.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,export,serve,ray,dev,genai,hf,docs]'
	touch $@

data: install
	$(PY) -m gpt.data $(DATA_SOURCE)

train: data
	$(PY) -m gpt.train --preset cpu --out-dir $(OUT)

sample: install
	$(PY) -m gpt.sample --ckpt $(OUT) --prompt "ROMEO:" --max-new-tokens 500 --stats

onnx: install
	$(PY) -m export.onnx --ckpt $(OUT)

sample-onnx: install
	$(PY) -m gpt.sample --backend onnxruntime --ckpt $(OUT) --prompt "ROMEO:" --max-new-tokens 500 --stats

# The OpenAI-compatible server on the demo model (127.0.0.1:8000; SERVE_ARGS="--slots 8 --port 8001 ...").
serve: install
	$(PY) -m gpt.serve --onnx $(OUT)/model.onnx $(SERVE_ARGS)

# The trained model's val loss and the share of its sampled words found in the training text.
quality: install
	$(PY) -m bench.quality --ckpt $(OUT)

demo: train sample onnx sample-onnx quality

test: data
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)
	$(PY) -m pytest bench -q --bench-smoke --benchmark-disable -p no:cacheprovider
	$(MAKE) --no-print-directory test-base
	$(MAKE) --no-print-directory docs

# Deliberate bugs, each in a copy of the tree: the tests meant to catch them must fail (tests/mutants.py).
mutants: data
	$(PY) tests/mutants.py

$(BASE_VENV)/.installed: pyproject.toml
	rm -rf $(BASE_VENV)
	python3 -m venv $(BASE_VENV)
	$(BASE_VENV)/bin/python -m pip install -q .
	rm -rf build
	touch $@

# Export a tiny model with the full venv, then sample it from the base venv, outside the source tree (so the
# installed package is what runs) and with torch absent.
test-base: data $(BASE_VENV)/.installed
	$(BASE_VENV)/bin/python -m pip install -q .
	rm -rf build
	$(PY) -m gpt.train --out-dir $(BASE_CHECK) $(TINY_TRAIN) > /dev/null
	$(PY) -m export.onnx --ckpt $(BASE_CHECK)
	$(PY) -m export.onnx --ckpt $(BASE_CHECK) --attention onnx --out $(BASE_CHECK)/portable.onnx
	cd $(BASE_VENV) && bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
		|| { echo "test-base: torch is importable in the base venv"; exit 1; }
	for f in model portable; do \
		(cd $(BASE_VENV) && bin/python -m gpt.sample --backend onnxruntime --onnx check/$$f.onnx --prompt "ROMEO:" \
			--max-new-tokens 100 --temperature 0 --stats > check/$$f.txt) || exit 1; \
		grep -q '^ROMEO:' $(BASE_CHECK)/$$f.txt && test $$(wc -c < $(BASE_CHECK)/$$f.txt) -gt 100 || exit 1; \
	done
	cmp $(BASE_CHECK)/model.txt $(BASE_CHECK)/portable.txt
	@echo "test-base: the base install (numpy + onnxruntime, no torch) sampled the same text from both layouts"

# `make bench`: bench/results/<date>-<cpu>.json (pytest-benchmark; `pytest-benchmark compare` reads it; with the
# machine, date and command the docs show beside its figures), then the
# Markdown table (.md, also printed) and bar chart (.png) beside it. BENCH_ARGS adds options, e.g.
# BENCH_ARGS="--bench-presets cpu,shakespeare,large" or "--bench-train-variants all" (see bench/conftest.py).
BENCH_ARGS ?=
bench: install
	@json=$$($(PY) -m bench.report --new-path) && echo "bench: writing $$json" && \
	BENCH_COMMAND='make bench$(if $(BENCH_ARGS), BENCH_ARGS="$(BENCH_ARGS)")' $(PY) -m pytest bench -q \
		-p no:cacheprovider --benchmark-json $$json --benchmark-columns median,iqr,rounds --benchmark-sort name \
		$(BENCH_ARGS) && \
	$(PY) -m bench.report $$json

# `make scoreboard`: every headline figure measured on this machine in one run (~5 minutes on 2 cores, at most ~15),
# on the demo's model in $(OUT) (run `make demo` first): bench/results/<date>-<cpu>-scoreboard.json and .md, the
# file the README's "What you get" table is made from by `make generated`. SCOREBOARD_ARGS="--only ROW,ROW" or
# "--out bench/results/NAME".
SCOREBOARD_ARGS ?=
scoreboard: data
	$(PY) -m bench.scoreboard --ckpt $(OUT) $(SCOREBOARD_ARGS)

lint: install
	$(PY) -m ruff check .

# `make web`: the static site of export.web (index.html, gpt.js, the model, onnxruntime-web fetched by npm) in
# site/, served on 127.0.0.1:8080 (make serve's API has 8000) with the COOP/COEP headers that multi-threaded wasm
# needs. WEB_ONNX picks the file; by default out/web.onnx, the portable `onnx` layout, exported from the
# checkpoint the first time: in a browser it runs faster than the gqa file (docs/web.md).
WEB_ONNX ?= $(OUT)/web.onnx
WEB_PORT ?= 8080
web: install $(WEB_ONNX)
	$(PY) -m export.web --onnx $(WEB_ONNX) --out site --serve --port $(WEB_PORT)

# (without a checkpoint, export.onnx says so in one line; after a new one, the file is exported again)
$(OUT)/web.onnx: $(wildcard $(OUT)/model.safetensors)
	$(PY) -m export.onnx --ckpt $(OUT) --attention onnx --explain --out $@

# `make docs`: the documentation site in docs-build/ (`mkdocs build --strict`: a broken link, anchor or result file
# fails it, and so does a generated block that `make generated` would write differently), and
# docs/walkthrough.ipynb is executed again (on out/'s model, or a tiny one it trains if out/ has none).
# `make docs-serve` previews it on 127.0.0.1:8001, rebuilding on every save (the notebook only when it changes).
DOCS_ENV := NO_MKDOCS_2_WARNING=1 PYDEVD_DISABLE_FILE_VALIDATION=1
docs: data
	$(DOCS_ENV) $(PY) -m mkdocs build --strict --quiet
	@echo "docs: wrote docs-build/index.html"

docs-serve: data
	$(DOCS_ENV) DOCS_CACHE=true $(PY) -m mkdocs serve --strict -a 127.0.0.1:8001

# `make generated`: every block between `<!-- generated: ... -->` markers in README.md and docs/ (results tables,
# the CLI and API references, the presets), written from bench/results/*.json and the code, so a page reads
# whole on GitHub; tests/test_docs.py and the docs build fail on a stale one.
generated: install
	$(PY) -m docsgen.generated

# `make walkthrough`: execute docs/walkthrough.ipynb in place on its tiny model (about a minute; the model is kept
# in .cache/), so GitHub shows its outputs; tests/test_docs.py checks they were made from its cells as they are.
walkthrough: data
	$(PY) -m docsgen.walkthrough

clean:
	rm -rf $(OUT) .pytest_cache
