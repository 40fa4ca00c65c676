#!/usr/bin/env bash
# `make test`: install what the tests need (scripts/install-deps.sh), lint, then two lanes of pytest
# side by side, then the time of each phase.
#   lane "host":     unit tests and the deployment on the Debian 12 test host, which shares this
#                    machine's network (tests/deploy);
#   lane "machines": what runs beside it: machines in network namespaces of their own, the
#                    multi-host deployment (tests/multihost) and the README's commands (tests/readme:
#                    make deploy in a fresh Debian 13, make sandbox, make dev), then the pipeline on
#                    real Redis/PostgreSQL/Celery on free ports (tests/integration). Each lane takes
#                    about half of the time.
# PYTEST_ARGS go to both lanes; a lane where they select nothing (pytest exit 5) is not a failure.
# Logs: artifacts/test-logs/<lane>.log (the host lane is also shown as it runs), each ending with
# its 15 slowest tests (where the 40-minute budget goes).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
logs=artifacts/test-logs
mkdir -p "$logs"
phases=$logs/phases.tsv
: > "$phases"
export SONIQUEBAY_TEST_PHASES=$PWD/$phases
started=$(date +%s)
# PYTEST_ARGS is a list of arguments.
read -r -a extra <<< "${PYTEST_ARGS:-}"

lap() {  # lap NAME START: one line of the phase table
    printf '%s\t%s\n' "$1" "$(($(date +%s) - $2))" >> "$phases"
}

t=$(date +%s)
scripts/install-deps.sh || exit 1
lap "install (Debian packages, .venv)" "$t"

t=$(date +%s)
.venv/bin/ruff check . && .venv/bin/ruff format --check .
lint=$?
lap "lint (ruff)" "$t"

t_machines=$(date +%s)
(
    $PY -m pytest -m "multihost or readme or integration" tests/multihost tests/readme tests/integration \
        --durations=15 "${extra[@]}" > "$logs/machines.log" 2>&1
    echo $? > "$logs/machines.rc"
    lap "lane machines (wall clock)" "$t_machines"
) &
machines_pid=$!

t_host=$(date +%s)
$PY -m pytest -m "not multihost and not readme and not integration" --durations=15 "${extra[@]}" 2>&1 | tee "$logs/host.log"
host=${PIPESTATUS[0]}
lap "lane host (wall clock)" "$t_host"

wait "$machines_pid"
machines=$(cat "$logs/machines.rc" 2>/dev/null || echo 1)
echo
echo "================================ lane machines (artifacts/test-logs/machines.log) ================================"
cat "$logs/machines.log"

ok() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }
echo
echo "================================ time per phase ================================"
lap "make test (wall clock)" "$started"
awk -F'\t' '{ printf "%6.1f min  %s\n", $2 / 60, $1 }' "$phases"
status=0
[ "$lint" -eq 0 ] || { echo "FAILED: lint"; status=1; }
ok "$host" || { echo "FAILED: lane host (pytest exit $host)"; status=1; }
ok "$machines" || { echo "FAILED: lane machines (pytest exit $machines)"; status=1; }
[ "$status" -eq 0 ] && echo "make test: every phase passed"
exit "$status"
