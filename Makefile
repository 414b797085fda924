# The two commands of the README:
#   make demo   install, then run the main job on the built-in default data
#   make test   install with test extras, then run the test suite (CI: .ci/run)
# Any Python 3.11-3.13: `make test PYTHON=python3.12`.
PYTHON ?= python3
SUPPORTED_PYTHONS := 3.11 3.12 3.13
PYTHON_BIN := $(shell .ci/find_python $(PYTHON))
PY_VERSION := $(if $(PYTHON_BIN),$(shell $(PYTHON_BIN) -c 'import sys; print("%d.%d" % sys.version_info[:2])'))
# The default interpreter keeps the historical .venv; another gets its own.
ifeq ($(origin PYTHON),file)
VENV ?= .venv
else
VENV ?= .venv-py$(PY_VERSION)
endif
BIN := $(VENV)/bin
DEMO_DIR ?= results/demo
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# Checked by a full `make test` (no PYTEST_ARGS) besides $(PYTHON): the demo's
# :smoke from an installed wheel and the notebooks. `OTHER_PYTHONS=` skips.
OTHER_PYTHONS ?= $(filter-out $(PY_VERSION),$(SUPPORTED_PYTHONS))

.PHONY: demo test install install-test bench clean check-python test-other-pythons

check-python:
	@test -n "$(PYTHON_BIN)" || { echo "error: PYTHON=$(PYTHON) is not a working Python interpreter (nearid_jax needs Python $(SUPPORTED_PYTHONS))" >&2; exit 1; }
	@case " $(SUPPORTED_PYTHONS) " in *" $(PY_VERSION) "*) ;; *) echo "error: $(PYTHON) is Python $(PY_VERSION); nearid_jax supports Python $(SUPPORTED_PYTHONS): set PYTHON=python3.12, for example" >&2; exit 1;; esac

$(BIN)/python: | check-python
	$(PYTHON_BIN) -m venv $(VENV)
	$(PIP) install --upgrade pip

# A venv of another Python version (a .venv made before switching PYTHON) is
# refused rather than silently reused.
$(VENV)/.python-ok: $(BIN)/python | check-python
	@v=$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  test "$$v" = "$(PY_VERSION)" || { echo "error: $(VENV) is Python $$v, PYTHON=$(PYTHON) is $(PY_VERSION): remove $(VENV) or set VENV=" >&2; exit 1; }
	touch $@

$(VENV)/.installed: setup.cfg pyproject.toml | $(VENV)/.python-ok
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(VENV)/.python-ok
	$(PIP) install -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/python -m experiments.identifiability --config=experiments/configs/identifiability.py --workdir=$(DEMO_DIR)

# pytest exits 5 when it collects no tests (a PYTEST_ARGS that selects
# nothing): that is a failure too, said in words. TEST_WORKERS pytest-xdist
# processes share the tests file by file (the suite is compile-bound: one
# compiling process per core); TEST_WORKERS=0 runs them in this process.
# A worker that crashes ends the run (--max-worker-restart 0): after a
# replaced worker, xdist's loadfile scheduler was seen to wait forever.
TEST_WORKERS ?= 2
test: $(VENV)/.installed-test
	@$(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --max-worker-restart 0) $(PYTEST_ARGS) || { rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests (PYTEST_ARGS=$(PYTEST_ARGS))" >&2; fi; exit $$rc; }
	@if [ -z "$(PYTEST_ARGS)" ]; then $(MAKE) --no-print-directory test-other-pythons; fi

# For each other version, in parallel (the notebooks are compile-bound, one
# core each): a fresh venv with the package installed as a wheel (not
# editable), `nearid-report` run from outside the repository, and the
# notebooks. A version that is not installed here is skipped, said so.
# The wheel is built once, before the versions run in parallel (two pip
# builds of one tree race in its build/ directory); it is pure Python.
test-other-pythons: $(VENV)/.installed-test
	@rm -rf .wheel && $(PIP) wheel --no-deps -w .wheel . > /dev/null
	@$(MAKE) --no-print-directory -j2 --output-sync=target $(addprefix test-python-,$(OTHER_PYTHONS))

test-python-%:
	@py=$$(.ci/find_python $*) || { echo "SKIP: Python $* is not installed here (looked for python$* on the PATH and under pyenv)"; exit 0; }; \
	  venv=.venv-wheel-py$*; pip="$$venv/bin/python -m pip --disable-pip-version-check -q"; \
	  whl=$$(ls .wheel/nearid_jax-*.whl 2>/dev/null) || { echo "no wheel in .wheel/: run make test-other-pythons" >&2; exit 1; }; \
	  echo "== Python $* ($$py): the wheel, nearid-report :smoke, the notebooks"; \
	  if [ ! -x $$venv/bin/python ]; then $$py -m venv $$venv && $$pip install --upgrade pip || exit 1; fi; \
	  if [ ! -e $$venv/.installed-test ] || [ setup.cfg -nt $$venv/.installed-test ]; then \
	    $$pip install "$$whl[test]" && touch $$venv/.installed-test || exit 1; fi; \
	  $$pip install --no-deps --force-reinstall "$$whl" || exit 1; \
	  tmp=$$(mktemp -d); \
	  (cd $$tmp && $(CURDIR)/$$venv/bin/nearid-report --config=identifiability:smoke --workdir=$$tmp/report) || exit 1; \
	  rm -rf $$tmp; \
	  $$venv/bin/python -m pytest -q -p no:cacheprovider tests/test_colabs.py || { echo "FAILED on Python $*" >&2; exit 1; }

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.train_throughput

clean:
	rm -rf .wheel $(VENV) $(addprefix .venv-py,$(SUPPORTED_PYTHONS)) $(addprefix .venv-wheel-py,$(SUPPORTED_PYTHONS)) results
