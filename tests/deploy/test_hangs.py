"""A task that hangs in a thread-pool worker (scan, extract, insert, deferred): Celery enforces time
limits only in prefork, so backend_worker.hangs does it. The hang is a PostgreSQL lock another
session holds (what an operator's forgotten transaction or a long `VACUUM FULL` does; for extract,
every CPU slot of the host, advisory locks): the task waits in the server, its thread in psycopg
(or, for extract, behind the thread of its process that waits there for the parsing turn). At the
soft limit the hang guard raises in the thread and cancels its query; the task fails without retry,
Flower lists it as FAILURE, the failure is recorded, the thread's connection gives its locks back,
and the worker goes on: the next scan completes. Recorded: the session fails, naming the task; an
extract chunk's files become error records instead and the session completes.

The lock is released once the hang guard has acted (its log line): the failure is recorded in the
same tables the lock covers. Had the hang guard not acted, the task would go on and succeed. The CPU
slots cover no table: they are held until the session has closed, so that every chunk of the scan
(all running at once) is seen to fail, none read once they are free.

The queue's time limit is 40 s for this test only (a /run drop-in, and the scan command sends with
it too): with the shipped 600-900 s the outcome is the same ten minutes later.
"""

from __future__ import annotations

import json
import time

import pytest

from testkit.deploy import chaos
from testkit.deploy.checks import LIBRARY, wait_all_active
from testkit.deploy.ops import (
    HOLDS,
    BackgroundScan,
    assert_library_is_exactly,
    flower_api,
    hold_lock,
    put_library,
    release_lock,
    reset_library_db,
    short_extract_time_limit,
    transactions_left_open,
    wait_for,
)
from testkit.stack import psql, soniquebay_json

pytestmark = pytest.mark.deploy

LIMIT = 40
# queue of a thread pool -> the task that hangs (on the lock ops.HOLDS names)
HANGS = {
    "scan": "scan.walk",
    "extract": "extract.files",
    "insert": "insert.records",
    "deferred": "deferred.finalize",
}


@pytest.fixture(scope="module")
def library(deployed, tmp_path_factory):
    return put_library(deployed, tmp_path_factory.mktemp("hangs") / "music", **chaos.LIBRARY_SHAPE)


@pytest.mark.parametrize("queue", list(HANGS))
def test_a_task_hung_in_a_thread_pool_fails_at_its_time_limit_and_is_recorded(deployed, library, queue):
    task = HANGS[queue]
    with short_extract_time_limit(deployed, LIMIT, queue=queue):
        reset_library_db(deployed)
        since = deployed.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        started = time.time()
        hold_lock(deployed, HOLDS[queue])
        try:
            scan = BackgroundScan(deployed, env_file=short_extract_time_limit.ENV_FILE)
            journal = f"journalctl --since '{since}' --no-pager -o cat -u 'soniquebay-worker-{queue}-*'"
            wait_for(
                lambda: (
                    f"Soft time limit ({LIMIT - 30}s) exceeded for {task}" in deployed.ssh(journal).stdout
                ),
                timeout=LIMIT + 60,
                interval=1,
                what=f"the soft time limit of the hung {task}",
            )
            if queue == "extract":
                out, err = scan.proc.communicate(timeout=LIMIT + 120)
        finally:
            release_lock(deployed)

        def failed_now():
            listed = flower_api(deployed, f"api/tasks?state=FAILURE&taskname={task}")[1] or {}
            return [i for i, t in listed.items() if (t.get("received") or 0) >= started]

        failed = wait_for(
            failed_now, timeout=120, interval=2, what=f"the hung {task} listed as FAILURE in Flower"
        )
        if queue != "extract":
            out, err = scan.proc.communicate(timeout=120)
        for task_id in failed:
            status, info = flower_api(deployed, f"api/task/info/{task_id}")
            assert status == 200 and info["state"] == "FAILURE" and not info.get("retries"), info
            assert "TimeLimitExceeded" in (info.get("traceback") or ""), info
    session = json.loads(out.strip().splitlines()[-1])
    if queue == "extract":
        # Recorded as the chunks' error records: the session completed, every file one of them.
        assert scan.proc.returncode == 0 and session["status"] == "completed", (out, err)
        assert session["counts"]["errors"] == len(library), session
        assert session["counts"]["inserted"] == 0, session
        reason = f"not read: its extract task ran past the {LIMIT} s time limit"
        errors = psql(deployed, "SELECT path, reason FROM file_errors ORDER BY path")
        assert [p for p, _ in errors] == sorted(e["path"] for e in library), errors[:3]
        assert {r for _, r in errors} == {reason}, errors[:3]
    else:
        # Recorded: the session closed as failed, naming the task and why.
        assert scan.proc.returncode == 1 and session["status"] == "failed", (out, err)
        assert f"{task} failed: " in session["message"] and "TimeLimitExceeded" in session["message"], session
    # Its thread gave its connection back (no transaction left open) and the worker goes on.
    assert not transactions_left_open(deployed)
    wait_all_active(deployed)
    session = soniquebay_json(deployed, "scan", LIBRARY, "--wait", "--json")
    assert session["status"] == "completed", session
    assert_library_is_exactly(deployed, library)
