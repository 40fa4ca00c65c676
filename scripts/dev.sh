#!/usr/bin/env bash
# Development stack as plain processes (no Ansible, no systemd): Redis, a private PostgreSQL
# cluster, one Celery worker per queue and Flower, all on loopback, state under .dev/ (or DEV_DIR).
#   scripts/dev.sh start   # then: source .dev/env && soniquebay scan ~/Music --wait
#   scripts/dev.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=$(realpath -m "${DEV_DIR:-$PWD/.dev}")
# The installed PostgreSQL release (15 on Debian 12, 17 on Debian 13).
PG_BIN=$(find /usr/lib/postgresql -path '*/bin/initdb' -printf '%h\n' 2>/dev/null | sort -V | tail -1)
[ -n "$PG_BIN" ] || { echo "dev: PostgreSQL is not installed (make deps installs it)" >&2; exit 1; }
REDIS_PORT=${DEV_REDIS_PORT:-16379}
PG_PORT=${DEV_PG_PORT:-15432}
FLOWER_PORT=${DEV_FLOWER_PORT:-15555}
QUEUES="scan extract batch insert deferred"

start() {
    mkdir -p "$DEV/logs" "$DEV/covers" "$DEV/pg"
    chown postgres:postgres "$DEV/pg"
    if [ ! -f "$DEV/flower-password" ]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DEV/flower-password")
    fi
    cat > "$DEV/env" <<ENV
export SONIQUEBAY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0
export SONIQUEBAY_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/soniquebay
export SONIQUEBAY_COVERS_DIR=$DEV/covers
export PATH=$PWD/.venv/bin:\$PATH
ENV
    # shellcheck disable=SC1091
    source "$DEV/env"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DEV" --appendonly yes \
        --maxmemory-policy noeviction --daemonize yes --pidfile "$DEV/redis.pid" --logfile "$DEV/logs/redis.log"
    if [ ! -f "$DEV/pg/data/PG_VERSION" ]; then
        runuser -u postgres -- "$PG_BIN/initdb" -D "$DEV/pg/data" --auth=trust -U postgres >/dev/null
    fi
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DEV/pg/data" -w -l "$DEV/pg/postgres.log" \
        -o "-p $PG_PORT -k $DEV/pg -c listen_addresses=127.0.0.1" start >/dev/null
    runuser -u postgres -- "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres soniquebay 2>/dev/null || true
    soniquebay db upgrade
    for q in $QUEUES; do
        nohup celery -A backend_worker worker -Q "$q" -c 2 -n "$q-1@%h" --loglevel INFO \
            > "$DEV/logs/$q.log" 2>&1 &
        echo $! > "$DEV/worker-$q.pid"
    done
    FLOWER_BASIC_AUTH="admin:$(cat "$DEV/flower-password")" nohup celery -A backend_worker flower \
        --address=127.0.0.1 --port="$FLOWER_PORT" --url_prefix=flower \
        > "$DEV/logs/flower.log" 2>&1 &
    echo $! > "$DEV/flower.pid"
    echo "dev stack up. source $DEV/env"
    echo "Flower: http://127.0.0.1:$FLOWER_PORT/flower/ (admin, password in $DEV/flower-password)"
}

stop() {
    # Workers finish a warm shutdown; wait for every process (up to 60 s) so the ports are free
    # when this returns, then kill what is left.
    pids=""
    for pidfile in "$DEV"/worker-*.pid "$DEV"/flower.pid "$DEV"/redis.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null && pids="$pids $pid"
        rm -f "$pidfile"
    done
    [ -d "$DEV/pg/data" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DEV/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    for _ in $(seq 600); do
        alive=$(for pid in $pids; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done; true)
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for pid in $alive; do kill -9 "$pid" 2>/dev/null || true; done
    echo "dev stack stopped"
}

"${1:-start}"
