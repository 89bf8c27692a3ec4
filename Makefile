# Pressroom — `make run` and `make test` are all a new user needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format test-deps unit integration faults bench contract monitoring clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## Run the pipeline on the embedded default and deliver the sample report into out/.
run: install
	$(BIN)/pressroom up --sample

## Servers the integration tests start themselves but cannot pip-install (Debian's prometheus).
test-deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (and promtool) for the Prometheus and alert-rule tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus >/dev/null; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The whole suite: lint, unit, integration (real servers) and fault injection.
test: install test-deps lint
	$(BIN)/pytest -n 2 --dist loadfile

unit: install
	$(BIN)/pytest tests/unit

contract: install
	$(BIN)/python -m shared.contract

## Regenerate the Grafana dashboard JSON and the Kubernetes rules ConfigMap (tests check both).
monitoring: install
	$(BIN)/python deploy/grafana/dashboard.py
	$(BIN)/python deploy/k8s/monitoring.py

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pressroom out .pytest_cache .mypy_cache .ruff_cache
