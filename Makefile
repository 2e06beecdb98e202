# kiln's two set-up commands: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kiln-installed
DEMO_DIR ?= demo
DEMO_NAME ?= add-numbers
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: demo test system-deps base-images lint clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

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

## test: install what the tests need, Docker engine included, and run them
test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime scaffold builder tests
	$(VENV)/bin/mypy runtime scaffold builder

clean:
	rm -rf $(VENV) build dist *.egg-info
