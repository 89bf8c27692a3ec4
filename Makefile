# Pressroom — `make run` and `make test` are all a new user needs.
SHELL := /bin/bash
## The interpreter .venv is made with: the distribution's /usr/bin/python3 where it is 3.11 or
## newer and can make a venv (Debian builds it with PGO and LTO: here it runs pure-Python code
## 1.4x, imports 1.2x and a WeasyPrint render 1.25x faster than the unoptimised pyenv build on
## PATH), else python3 from PATH. `make PYTHON=/path/to/python3` chooses another.
PYTHON ?= $(shell for p in /usr/bin/python3 python3; do \
  "$$p" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  && { echo "$$p"; exit 0; }; done; echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format test-deps unit integration faults bench bench-console contract \
	monitoring clean \
	compose-deps compose-images compose-test k8s-walk

install: $(STAMP)

# Quiet: two lines on success; the whole log, and the reason, only when something fails.
# uv installs the dependencies in seconds where pip takes a minute (pip is the fallback).
$(STAMP): pyproject.toml
	@echo "pressroom: installing into $(VENV) (the first time takes a minute or two) …"
	@$(PYTHON) -m venv --clear $(VENV)
	@{ $(BIN)/python -m pip install --quiet --upgrade pip uv \
	   && { $(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]" \
	        || $(BIN)/python -m pip install --quiet -e ".[dev]"; }; } > $(VENV)/install.log 2>&1 \
	  || { tail -n 25 $(VENV)/install.log; \
	       echo "pressroom: install failed (whole log: $(VENV)/install.log)"; exit 1; }
	@$(BIN)/python -c "from services.renderer.fonts import harfbuzz_subset_available as ok; ok() or \
	  print('note: HarfBuzz-Subset is missing (Debian: libharfbuzz-subset0): PDFs render ~4x slower, ' \
	        'and reports with Chinese, Japanese or Korean text take 10-25 s more')"
	@touch $(STAMP)
	@echo "pressroom: installed — .venv/bin/pressroom is ready"

## Run the pipeline on the embedded default and deliver the sample report into out/.
run: install
	$(BIN)/pressroom up --sample

## What the tests need but cannot pip-install: Debian's prometheus (the Prometheus source tests),
## poppler-utils (pdftoppm: the font tests look at a page) and HarfBuzz-Subset (WeasyPrint subsets
## fonts with it; without it, fontTools takes 10-25 s more per report with CJK text) and
## SpamAssassin (run offline on the emails Pressroom sends); SoftHSM, the PKCS#11 token that
## PDF signing is tested with; Chromium (the console's browser tests drive it through
## Playwright: Playwright's own browser download cannot work here).
TEST_DEBS := prometheus:prometheus pdftoppm:poppler-utils spamassassin:spamassassin \
	softhsm2-util:softhsm2 chromium:chromium \
	/usr/lib/$(shell uname -m)-linux-gnu/libharfbuzz-subset.so.0:libharfbuzz-subset0
## The official checkers other teams use on what Pressroom emits (tests/integration/
## test_contract_wire.py): the AsyncAPI parser, from npm into a project-local folder.
NPM_TOOLS := .npm-tools
TEST_NPM := @asyncapi/parser@3.6.6
NPM_STAMP := $(shell echo "$(TEST_NPM)" | cksum | cut -d" " -f1)
test-deps:
	@missing=""; for pair in $(TEST_DEBS); do \
	  probe=$${pair%%:*}; deb=$${pair##*:}; \
	  if [ "$${probe#/}" != "$$probe" ]; then [ -e "$$probe" ] || missing="$$missing $$deb"; \
	  else command -v "$$probe" >/dev/null 2>&1 || missing="$$missing $$deb"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages the tests need:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@[ -f $(NPM_TOOLS)/.installed-$(NPM_STAMP) ] || { \
	  echo "installing npm packages the tests need into $(NPM_TOOLS)/: $(TEST_NPM)"; \
	  npm install --prefix $(NPM_TOOLS) --no-audit --no-fund --silent $(TEST_NPM) \
	  && touch $(NPM_TOOLS)/.installed-$(NPM_STAMP); }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/import_graph.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The whole suite: lint, unit, integration (real servers) and fault injection. Three test
## processes on two cores: a quarter of the CPU idled while tests waited for servers, cron
## minutes and timeouts (make test 13.9 -> 11.1 min here; it passes with a core busy too).
test: install test-deps lint
	$(BIN)/pytest -n 4 --dist loadfile --durations=25

unit: install
	$(BIN)/pytest tests/unit

contract: install
	$(BIN)/python -m services.console.contract

## Regenerate the Grafana dashboard JSON and the Kubernetes rules ConfigMap (tests check both).
monitoring: install
	$(BIN)/python deploy/grafana/dashboard.py
	$(BIN)/python deploy/k8s/monitoring.py

bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.console

## The console's page times with 100,000 reports in the ledger (docs/console/bench.json).
bench-console: install
	$(BIN)/python -m bench.console

## Containers, with podman (deploy/ci): podman itself and podman-compose, set up for this kind of
## machine; every image compose.yaml needs (offline stand-ins where no registry answers); then
## compose.yaml + deploy/ci/compose.offline.yaml up, checked from the host (tests/compose).
PODMAN_COMPOSE_VERSION := 1.6.0
compose-deps: install
	@deploy/ci/podman-setup.sh
	@$(BIN)/python -c "import podman_compose" 2>/dev/null \
	  || $(BIN)/python -m pip install --quiet "podman-compose==$(PODMAN_COMPOSE_VERSION)"

compose-images: compose-deps
	@deploy/ci/images.sh

compose-test: compose-deps
	@started=$$SECONDS; PRESSROOM_COMPOSE_TEST=1 $(BIN)/pytest tests/compose --timeout 1800 -v -s \
	  && echo "compose-test: passed in $$((SECONDS - started)) s"

## The Kubernetes walk-through against kubectl's current context (README "Deployment"):
## PRESSROOM_K8S_SECRETS=<env file> make k8s-walk. `make test` runs the same script against a
## stand-in API server (tests/integration/test_k8s_walk.py).
k8s-walk: install
	PATH="$(CURDIR)/$(BIN):$$PATH" deploy/k8s/walk.sh

clean:
	rm -rf $(VENV) .pressroom out .pytest_cache .mypy_cache .ruff_cache
