# The README's two commands: `make demo` and `make test`. Both set up .venv first.
# `make test-fast` (unit tests and the quick integration tests, ~2 minutes) is for use while working.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# A CPU build of torch. Where pip's default index would give a multi-GB CUDA build, use e.g.
#   make TORCH_INDEX="--index-url <the PyTorch CPU wheel index>" demo
TORCH_INDEX ?=
DEMO_DIR := runs/demo
DEMO_SECONDS ?= 120

.PHONY: setup demo test test-fast docs figures bench bench-quality clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/fundamentallm train data/shakespeare_sample.txt --output-dir $(DEMO_DIR) \
		--max-time $(DEMO_SECONDS) --overwrite
	$(BIN)/fundamentallm generate $(DEMO_DIR)/final.pt --prompt "ROMEO:" --max-tokens 400 --seed 1

# The suite in one worker process per core (pytest-xdist, at most 4): tests train on one thread
# each. A module's tests stay in one worker (--dist loadscope), so its shared fixtures (a
# trained checkpoint, translation models) are built once. `pytest FILE` runs plainly.
XDIST := -n auto --maxprocesses 4 --dist loadscope

test: setup
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: setup
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

# The documentation site into site/ (every warning an error); `mkdocs serve` while writing.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The documentation's pictures, from a real run (about two minutes on 2 cores).
figures: setup
	$(BIN)/python docs/make_figures.py docs/images

# Throughput (baby-GPT shape) and KV-cache generation speed: a few minutes. JSON on stdout.
bench: setup
	$(BIN)/python benchmarks/throughput.py --json
	$(BIN)/python benchmarks/generate.py --json

# Validation loss after 105 s, ours vs the classic recipe, 3 seeds each: about 13 minutes.
bench-quality: setup
	$(BIN)/python benchmarks/quality.py --data ../shared/data/shakespeare.txt --json

clean:
	rm -rf $(VENV) runs .pytest_cache
