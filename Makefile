# The two commands of the README:
#   make demo   install, then run the main job on the built-in default data
#   make test   install with test extras, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= results/demo
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test install install-test bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "nearid_jax needs Python 3.11 (JAX 0.10); set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/python -m experiments.identifiability --config=experiments/configs/identifiability.py --workdir=$(DEMO_DIR)

# pytest exits 5 when it collects no tests; make treats any non-zero exit as failure.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.train_throughput

clean:
	rm -rf $(VENV) results
