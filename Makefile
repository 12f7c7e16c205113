# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv in the repo root.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch 2.13.0 is a local CPU wheel on the project's CPU boxes; elsewhere pip takes it from PyPI.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
# glibc (Linux): keep freed memory and use huge pages, so the NAMM's large per-update CPU tensors are not
# page-faulted afresh every time (one 2k-token evolution generation 1.6x faster; bench/bench_allocator.py).
# Other platforms ignore it.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296:glibc.malloc.top_pad=268435456

.PHONY: demo test test-all bench lint install clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The main job on the embedded default: evolve (short, warm-started) -> language -> video -> RL -> report.
# Run again, it reuses the finished evolution in runs/demo/evolve and re-runs the rest (--resume).
demo: $(VENV)/.installed
	$(VENV)/bin/namm demo

# The core is typed; the rest is linted. Then the tests (real-model tests run only where the models are fetched).
CORE := namm/io.py namm/config.py namm/plots.py namm/view.py namm/features.py namm/scorer.py namm/selection.py \
	namm/policies namm/cache.py namm/attention.py namm/checkpoint.py namm/replay.py namm/memory.py namm/adapters
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check namm tests bench experiments
	$(VENV)/bin/mypy $(CORE)

test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# Speed and memory of every policy beside plain Hugging Face (SmolLM2 if fetched, else its shape): one run, ratios.
bench: $(VENV)/.installed
	$(PY) bench/bench_real.py

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) build *.egg-info
