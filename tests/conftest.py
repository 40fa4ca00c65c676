"""Suite-wide fixtures: real Redis, PostgreSQL and Celery workers (see testkit/services.py).

Ports are chosen when this file is imported, before anything builds the Celery app, so every
process of the suite (this one, the workers, the `soniquebay` CLI) sees the same settings.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit import services

_RUN_DIR = services.shared_tempdir("soniquebay-suite-")
# Also when no test starts the services (deploy-only or multihost sessions).
atexit.register(shutil.rmtree, _RUN_DIR, ignore_errors=True)
_REDIS = services.Redis(_RUN_DIR / "redis", services.free_port())
_POSTGRES = services.Postgres(_RUN_DIR / "postgres", services.free_port())
COVERS_DIR = _RUN_DIR / "covers"

os.environ.update(
    {
        "SONIQUEBAY_BROKER_URL": _REDIS.url,
        # The workers' role, as deployed: it owns nothing (the suite proves its privileges suffice).
        "SONIQUEBAY_DATABASE_URL": _POSTGRES.workers_url,
        "SONIQUEBAY_COVERS_DIR": str(COVERS_DIR),
        # Small units so a test library of a few hundred files still fans out and batches.
        "SONIQUEBAY_EXTRACT_CHUNK_FILES": "40",
        "SONIQUEBAY_INSERT_BATCH_ROWS": "100",
        "SONIQUEBAY_WALK_UNIT_ENTRIES": "60",
    }
)
os.environ.pop("SONIQUEBAY_LIBRARY_ROOTS", None)

LIBRARY_TABLES = services.LIBRARY_TABLES


@pytest.fixture(scope="session")
def services_up():
    """Redis and PostgreSQL running, schema migrated (by the owner role, as deployed)."""
    try:
        _REDIS.start()
        _POSTGRES.start()
        from backend_worker import db

        db.upgrade(_POSTGRES.owner_url)
        COVERS_DIR.mkdir(exist_ok=True)
        shutil.chown(COVERS_DIR, services.WORKER_USER)
        yield
    finally:
        _POSTGRES.stop()
        _REDIS.stop()
        shutil.rmtree(_RUN_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def broker(services_up) -> services.Redis:
    """The suite's Redis server: its users' URLs (the suite itself runs as `workers`)."""
    return _REDIS


@pytest.fixture(scope="session")
def postgres(services_up) -> services.Postgres:
    """The suite's PostgreSQL server, for tests that stop and start it."""
    return _POSTGRES


@pytest.fixture()
def db_conn(services_up):
    """A connection to an emptied library database (as the superuser: the workers cannot TRUNCATE)."""
    import psycopg

    with psycopg.connect(_POSTGRES.url, autocommit=True) as conn:
        # The previous test's last tasks may still be writing (a watch's session, a retry): the
        # TRUNCATE can then deadlock with one of them, and PostgreSQL may pick it as the victim.
        for attempt in range(5):
            try:
                conn.execute(f"TRUNCATE {LIBRARY_TABLES} RESTART IDENTITY CASCADE")
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
                time.sleep(1)
        yield conn


@pytest.fixture(scope="session")
def worker_procs(services_up):
    workers = services.Workers(_RUN_DIR / "logs", dict(os.environ))
    try:
        workers.start()
        yield workers
    finally:
        workers.stop()


@pytest.fixture()
def pipeline(worker_procs, db_conn, request):
    """Running workers on an empty database and empty queues; worker logs shown on failure."""
    from backend_worker.app import app

    with app.connection_for_write() as conn:
        for queue in services.QUEUES:
            conn.default_channel.queue_purge(queue)
    worker_procs.wait_ready()
    yield Pipeline(db_conn, worker_procs)
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        for queue in services.QUEUES:
            sys.stderr.write(f"\n--- {queue} worker log ---\n{worker_procs.log_tail(queue)}\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture()
def library(request):
    """An empty library folder the workers can read."""
    root = services.shared_tempdir("soniquebay-library-")
    yield root
    subprocess.run(["chmod", "-R", "u+rwX", str(root)], check=False)
    shutil.rmtree(root, ignore_errors=True)


class Pipeline:
    covers_dir = COVERS_DIR  # where the workers write cover files

    def __init__(self, conn, workers: services.Workers):
        self.conn = conn
        self.workers = workers

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(services.VENV_BIN / "soniquebay"), *args],
            capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"soniquebay {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def scan(self, *roots: Path) -> dict:
        import json

        proc = self.cli("scan", *map(str, roots), "--wait", "--json", check=False)
        assert proc.stdout.strip(), proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def wait_closed(self, session_id: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.conn.execute(
                "SELECT status FROM scan_sessions WHERE id = %s", (session_id,)
            ).fetchone()[0]
            if status != "running":
                return status
            time.sleep(0.2)
        raise TimeoutError(f"session {session_id} still running after {timeout} s")

    def rows(self, sql: str, *params) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()


# ---- time per suite -------------------------------------------------------------------------------
# make test prints where its time goes (scripts/test.sh): setup, call and teardown of every test,
# summed per folder of tests/ (a session fixture's setup counts for the suite of the first test
# that needs it, e.g. booting the test host for tests/deploy).
_SUITE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    parts = report.nodeid.split("/")
    suite = "/".join(parts[:2]) if len(parts) > 2 else parts[0].split("::")[0]
    _SUITE_SECONDS[suite] = _SUITE_SECONDS.get(suite, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not _SUITE_SECONDS:
        return
    terminalreporter.section("time per suite")
    for suite, seconds in sorted(_SUITE_SECONDS.items()):
        terminalreporter.write_line(f"{seconds / 60:6.1f} min  {suite}")
    phases = os.environ.get("SONIQUEBAY_TEST_PHASES")
    if phases:  # scripts/test.sh collects the lanes' times into one table
        with open(phases, "a") as handle:
            for suite, seconds in sorted(_SUITE_SECONDS.items()):
                handle.write(f"{suite}\t{seconds:.0f}\n")
