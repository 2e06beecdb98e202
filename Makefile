# kiln's two set-up commands: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kiln-installed
LINT_STAMP := $(VENV)/.kiln-lint
# The supported Pythons are $(PYTHON)'s (the main suite) and these (the matrix), no others.
MATRIX_PYTHONS ?= 3.10 3.12 3.13
MATRIX_STAMPS := $(MATRIX_PYTHONS:%=.venv-%/.kiln-installed)
MATRIX_WHEEL := build/matrix-wheel/.built
LATEST := .venv-latest
LATEST_VERSIONS = $(LATEST)/bin/python -c 'import platform; from importlib.metadata import version; \
	print("test-latest: $(1): Python " + platform.python_version() + ", " \
	      + ", ".join(p + " " + version(p) for p in ("flask", "werkzeug", "gunicorn")))'
# The matrix and test-latest venvs hold a non-editable install: refreshed when these change.
PACKAGE_FILES := $(shell find runtime scaffold builder templates images -type f \
	! -path '*/__pycache__/*' ! -name '*.pyc' 2>/dev/null)
DEMO_DIR ?= demo
DEMO_NAME ?= add-numbers
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: demo test test-matrix matrix-venvs test-latest system-deps base-images lint clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,lint]'
	@touch $@

# kiln's wheel, built once for every matrix venv: pip builds a source folder in place
# (build/, kiln.egg-info), so the venvs, made side by side, install this file instead.
$(MATRIX_WHEEL): setup.cfg pyproject.toml $(PACKAGE_FILES) | $(STAMP)
	rm -rf $(@D)
	$(PY) -m pip wheel -q --no-deps -w $(@D) .
	@touch $@

.venv-%/.kiln-installed: $(MATRIX_WHEEL)
	KILN_WHEEL=$$(ls $(<D)/kiln-*.whl) bash tests/infra/venv.sh $* $(@D) matrix
	@touch $@

# The matrix venvs side by side: each is mostly pip's own work, on one CPU.
matrix-venvs: $(MATRIX_WHEEL)
	$(MAKE) --no-print-directory -j3 $(MATRIX_STAMPS)

## demo: install into .venv, scaffold an example service and serve it on $(HOST):$(PORT)
demo: $(STAMP)
	@test -d $(DEMO_DIR)/$(DEMO_NAME) || $(VENV)/bin/kiln new-service $(DEMO_NAME) -o $(DEMO_DIR) --no-input
	$(VENV)/bin/kiln serve $(DEMO_DIR)/$(DEMO_NAME) --host $(HOST) --port $(PORT)

## system-deps: Debian packages the tests need (Docker engine, debootstrap, Chromium, wrk)
system-deps:
	bash tests/infra/system-deps.sh

## base-images: the local stand-in base images of the docker tests (built once, cached)
base-images: system-deps
	bash tests/infra/base-images.sh

## test: install what the tests need, Docker engine included, and run them; then the matrix
test: $(STAMP) system-deps matrix-venvs
	$(PY) -m pytest $(PYTEST_ARGS)
	bash tests/infra/matrix.sh $(MATRIX_PYTHONS)

## test-matrix: under each of MATRIX_PYTHONS, the in-process tests and a serve-predict-docs smoke
test-matrix: matrix-venvs
	bash tests/infra/matrix.sh $(MATRIX_PYTHONS)

## test-latest: the non-docker, non-slow tests and the smoke against the newest flask, werkzeug
## and gunicorn, pre-releases included (not part of `make test`: upstream may break it first)
test-latest: $(LATEST)/.kiln-installed
	$(LATEST)/bin/python -m pip install -q --upgrade --pre flask werkzeug gunicorn
	@$(call LATEST_VERSIONS,running against)
	$(LATEST)/bin/python -m pytest -m "not docker and not slow" $(PYTEST_ARGS)
	$(LATEST)/bin/python tests/infra/smoke.py
	@$(call LATEST_VERSIONS,passed against)

$(LATEST)/.kiln-installed: setup.cfg pyproject.toml $(PACKAGE_FILES)
	bash tests/infra/venv.sh $$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])') $(@D)
	@touch $@

## lint: ruff and mypy, from the lint extra
lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check runtime scaffold builder tests
	$(VENV)/bin/mypy runtime scaffold builder

clean:
	rm -rf $(VENV) $(MATRIX_PYTHONS:%=.venv-%) $(LATEST) build dist *.egg-info
