# SoniqueBay ingest. `make deploy` provisions this machine; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deploy test deps lint unit dev dev-stop clean bench

deploy:
	scripts/deploy.sh

deps:
	scripts/install-deps.sh

# Everything CI runs: lint, unit tests, the pipeline on real services, the deployment on a
# booted systemd host.
test: deps
	$(VENV)/bin/ruff check backend_worker tests
	$(VENV)/bin/ruff format --check backend_worker tests
	$(PY) -m pytest $(PYTEST_ARGS)

unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check backend_worker tests
	$(VENV)/bin/ruff format --check backend_worker tests

# Redis, PostgreSQL, the five workers and Flower as plain processes, for development.
dev: deps
	scripts/dev.sh start

dev-stop:
	scripts/dev.sh stop

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

# Benchmarks (not tests): print tables and ratios, write docs/performance.md.
bench: deps
	$(PY) -m bench $(BENCH_ARGS)
