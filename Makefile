# SoniqueBay ingest. `make deploy` provisions this machine; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deploy uninstall test deps lint unit dev dev-stop clean bench bench-scale chaos sandbox sandbox-down

deploy:
	scripts/deploy.sh

# Remove what `make deploy` installed (playbooks/uninstall.yml, inventory/local; INVENTORY= as for
# deploy): the services, settings and app. The data (database, broker data, covers, service user,
# backups) is kept unless ARGS='-e soniquebay_uninstall_data=true'; the music library never goes.
uninstall:
	@test -x $(VENV)/bin/ansible-playbook || { echo "uninstall: $(VENV) has no Ansible: run make deploy first" >&2; exit 1; }
	ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg $(VENV)/bin/ansible-playbook -i $${INVENTORY:-inventory/local/hosts.yml} playbooks/uninstall.yml $(ARGS)

deps:
	scripts/install-deps.sh

# Everything CI runs (scripts/test.sh): install, lint, then two lanes side by side: unit and the
# Debian 12 test host (it shares this machine's network) | the multi-host deployment and the
# README's commands (make deploy in a fresh Debian 13, make sandbox, make dev) on machines in
# network namespaces of their own, then integration; at the end, the time of each phase.
test:
	scripts/test.sh

unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

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

# One million files (the bench library hard-linked 50 times) on the shipped layout: ingest, rescans,
# status, sizes, memory, the watch's start; writes the "1,000,000 files" part of docs/performance.md.
# About 40 minutes; CI does not run it. BENCH_ARGS: see python -m bench.scale --help.
bench-scale: deps
	$(PY) -m bench.scale $(BENCH_ARGS)

# Random faults (30 by default) during repeated scans on a deployed test host: tracks lost and
# duplicated, recovery times (docs/reliability.md). CHAOS_ARGS: --faults N --copies N --seed N.
chaos: deps
	$(PY) -m bench.chaos $(CHAOS_ARGS)

# A throwaway Debian 12 machine (HOSTS=3: db1 + two worker hosts) in its own network namespace,
# deployed with playbooks/site.yml and a sample library scanned; prints the Flower URL. As root.
HOSTS ?= 1
sandbox: deps
	$(PY) scripts/sandbox.py up --hosts $(HOSTS)

sandbox-down:
	python3 scripts/sandbox.py down
