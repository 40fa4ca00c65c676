"""Faults injected into a running scan on real workers: nothing is lost, nothing duplicated."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime

import psycopg
import pytest

from testkit import audio_fixtures, freeze, services
from testkit.deploy.ops import wait_for

pytestmark = pytest.mark.integration


# Celery's line for a task that will run again: "Task extract.files[<id>] retry: Retry in 3s: <error>".
RETRY_LINE = re.compile(r"Task ([a-z]+\.[a-z]+)\[([0-9a-f-]+)\] retry: Retry in \d+s: (.*)")


def test_postgresql_restarted_mid_scan_the_tasks_retry_and_complete(pipeline, postgres, library):
    expected = audio_fixtures.build_library(library, artists=6, albums_per_artist=4, tracks_per_album=8)
    offsets = {q: pipeline.workers.log_size(q) for q in services.QUEUES}

    def retries() -> list[tuple[str, str, str]]:
        """(task, id, error) of every retry the workers logged since this test started."""
        return [
            found
            for queue, offset in offsets.items()
            for found in RETRY_LINE.findall(pipeline.workers.log_since(queue, offset))
        ]

    scan = subprocess.Popen(
        [str(services.VENV_BIN / "soniquebay"), "scan", str(library), "--wait", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    down = False
    try:
        # Stop the database while the scan is in flight: its session running, some units done,
        # others pending (their task ids are what must retry).
        deadline = time.monotonic() + 60
        while True:
            rows = pipeline.rows(
                "SELECT s.id, s.status, count(*) FILTER (WHERE u.done_at IS NOT NULL), "
                "       array_agg(u.task_id) FILTER (WHERE u.done_at IS NULL) "
                "FROM scan_sessions s LEFT JOIN scan_units u ON u.session_id = s.id GROUP BY s.id"
            )
            if rows and rows[0][1] == "running" and rows[0][2] >= 3 and rows[0][3]:
                break
            assert time.monotonic() < deadline, (
                f"the scan was never in flight (session, status, done, pending): {rows}"
            )
            time.sleep(0.05)
        [(session_id, _, _, _)] = rows
        postgres.stop()
        down = True
        stopped_at = datetime.now(UTC)
        # Down until a task logs its retry (one pending at the stop, or one registered just before
        # it: which of this session's tasks it is, is checked once the database is back).
        deadline = time.monotonic() + 60
        while not retries():
            assert time.monotonic() < deadline, (
                f"no task of session {session_id} retried while PostgreSQL was down: {retries()}"
            )
            time.sleep(0.1)
    except BaseException:
        scan.kill()  # it would follow the session for as long as it stays running
        raise
    finally:
        if down:
            postgres.start()
    out, err = scan.communicate(timeout=300)
    assert scan.returncode == 0, err
    session = json.loads(out.strip().splitlines()[-1])
    assert session["id"] == str(session_id) and session["status"] == "completed", session
    assert session["counts"]["inserted"] == len(expected) and session["counts"]["errors"] == 0
    with psycopg.connect(postgres.url) as conn:
        paths = [p for (p,) in conn.execute("SELECT path FROM present_tracks ORDER BY path")]
        units = {
            t for (t,) in conn.execute("SELECT task_id FROM scan_units WHERE session_id = %s", (session_id,))
        }
        [(ended_at,)] = conn.execute("SELECT ended_at FROM scan_sessions WHERE id = %s", (session_id,))
    assert paths == sorted(e["path"] for e in expected)
    assert ended_at > stopped_at, "the session was still running when PostgreSQL stopped"
    # The retries are this session's units' tasks, and the outage is why (psycopg's OperationalError
    # or a subclass of it, such as AdminShutdown for the connections the stop terminated).
    retried = [(task_id, error.split("(", 1)[0]) for _, task_id, error in retries() if task_id in units]
    assert retried, retries()
    for task_id, error in retried:
        raised = getattr(psycopg, error, None) or getattr(psycopg.errors, error, None)
        assert raised and issubclass(raised, psycopg.OperationalError), (task_id, error)


def test_a_stuck_task_is_failed_at_its_time_limit_recorded_and_the_queue_goes_on(pipeline, library):
    """Freeze the thread that reads a chunk inside a read of one of its files (testkit/freeze.py:
    the thread stops in the system call, the worker's other threads run on), as a hung disk read
    would: at the hard time limit the worker fails the task, the chunk's files become error
    records, the other chunk goes through and the session closes; the worker, holding a thread it
    cannot free, then exits (systemd would start a fresh one)."""
    # Chunks of 400 files from one walk: two chunks, one per thread of the worker.
    slow = {
        "SONIQUEBAY_TIME_LIMIT_EXTRACT": "40",
        "SONIQUEBAY_EXTRACT_CHUNK_FILES": "400",
        "SONIQUEBAY_WALK_UNIT_ENTRIES": "5000",
    }
    workers = pipeline.workers
    workers.restart(["scan", "extract"], slow)
    freezer = None
    try:
        expected = audio_fixtures.build_library(library, artists=8, albums_per_artist=5, tracks_per_album=20)
        worker = workers.procs["extract"].pid
        freezer = subprocess.Popen(
            ["python3", str(services.REPO / "testkit" / "freeze.py"), str(worker), str(library), "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(lambda: freeze.traced(worker), timeout=30, interval=0.05, what="the freezer on the worker")
        scan = subprocess.Popen(
            [str(services.VENV_BIN / "soniquebay"), "scan", str(library), "--wait", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        frozen = freezer.stdout.readline().split(maxsplit=2)
        assert frozen and frozen[0] == "frozen", f"no extract thread started reading: {freezer.stderr.read()}"
        out, err = scan.communicate(timeout=240)
        assert scan.returncode == 0, err
        session = json.loads(out.strip().splitlines()[-1])
        # The worker exits once the thread stayed stuck 60 s past the hard limit.
        gone = time.monotonic() + 90
        while workers.procs["extract"].poll() is None and time.monotonic() < gone:
            time.sleep(0.5)
        assert workers.procs["extract"].poll() is not None, "the worker with the stuck thread exited"
        errors = pipeline.rows("SELECT path, reason FROM file_errors")
        assert errors, "the stuck chunk's files are recorded"
        assert frozen[2].strip() in {path for path, _ in errors}, "the file being read is one of them"
        assert {reason for _, reason in errors} == {"not read: its extract task ran past the 40 s time limit"}
        c = session["counts"]
        assert session["status"] == "completed"
        assert c["errors"] == len(errors) <= 400
        assert c["inserted"] == len(expected) - len(errors) > 0
        assert pipeline.rows("SELECT count(*) FROM present_tracks")[0][0] + len(errors) == len(expected)
        assert "Hard time limit (40s) exceeded" in workers.log_tail("extract", 400)
    finally:
        if freezer is not None:
            freezer.kill()
            freezer.wait()
        workers.restart(["scan", "extract"])


def test_a_task_stopped_by_its_soft_time_limit_mid_query_is_recorded_and_the_session_closes(
    pipeline, postgres, library
):
    """The extract tasks wait for a CPU slot (a PostgreSQL advisory lock, held here) past their soft
    time limit: interrupted in the middle of a query, each task's failure is still recorded (on a new
    connection), the session closes, and once the slots are free `retry-failed` reads the files."""
    from backend_worker.cpu import CPU_SLOT_LOCK_CLASS

    workers = pipeline.workers
    # Scan too: a task's time limits travel in its message, set by the sender (the scan worker).
    one_slot = {"SONIQUEBAY_TIME_LIMIT_EXTRACT": "40", "SONIQUEBAY_EXTRACT_SLOTS": "1"}
    workers.restart(["scan", "extract"], one_slot)
    holder = psycopg.connect(postgres.url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s, 0)", (CPU_SLOT_LOCK_CLASS,))
        expected = audio_fixtures.build_library(library, artists=2, albums_per_artist=3, tracks_per_album=10)
        # A session that never closes times out here; the pipeline fixture then prints the logs.
        scan = pipeline.cli("scan", str(library), "--wait", "--json", timeout=180)
        session = json.loads(scan.stdout.strip().splitlines()[-1])
        assert session["status"] == "completed", session
        assert session["counts"]["errors"] == len(expected) and session["counts"]["inserted"] == 0, session
        reasons = {reason for (reason,) in pipeline.rows("SELECT reason FROM file_errors")}
        assert reasons == {"not read: its extract task ran past the 40 s time limit"}
        assert "could not record" not in workers.log_tail("extract", 20000)
        holder.close()  # the slot is free again
        retry = pipeline.cli("retry-failed", "--wait", "--json", timeout=180)
        assert json.loads(retry.stdout.strip().splitlines()[-1])["status"] == "completed", retry.stdout
        assert pipeline.rows("SELECT count(*) FROM present_tracks")[0][0] == len(expected)
        assert pipeline.rows("SELECT count(*) FROM file_errors")[0][0] == 0
    finally:
        holder.close()
        workers.restart(["scan", "extract"])


def test_a_chunk_revoked_while_it_waits_for_a_thread_is_dropped_and_recorded(pipeline, postgres, library):
    """An operator revokes (Flower's Revoke; here `celery control revoke`) a chunk the extract worker
    has taken but not started: a thread pool takes every task it receives at once, so Celery's own
    check for a revoke has passed. The worker drops it when a thread would start it
    (worker.RevocableThreadPool): its files become error records, the other chunks land, the
    session completes, and `retry-failed` reads them."""
    from backend_worker.app import app

    # Every CPU slot held: the chunks the worker takes wait, a thread's worth started.
    holder = services.hold_extract_slots(postgres.url)
    try:
        expected = audio_fixtures.build_library(library, artists=4, albums_per_artist=5, tracks_per_album=12)
        session_id = pipeline.cli("scan", str(library)).stdout.strip()
        deadline = time.monotonic() + 60
        while True:
            reserved = app.control.inspect(timeout=2).reserved() or {}
            waiting = [t for tasks in reserved.values() for t in tasks if t["name"] == "extract.files"]
            if waiting:
                break
            assert time.monotonic() < deadline, "the extract worker took no chunk it could not start"
            time.sleep(0.5)
        victim = waiting[0]
        # reply=True: returns once the workers have the broadcast (the extract worker among them).
        replies = app.control.revoke(victim["id"], reply=True, timeout=10)
        assert any(name.startswith("extract") for reply in replies for name in reply), replies
    finally:
        holder.close()
    assert pipeline.wait_closed(session_id, timeout=180) == "completed"
    errors = pipeline.rows("SELECT path, reason FROM file_errors ORDER BY path")
    assert [path for path, _ in errors] == sorted(victim["kwargs"]["paths"])
    revoked = "extract task failed: TaskRevokedError: revoked by an operator"
    assert {reason for _, reason in errors} == {revoked}
    tracks = pipeline.rows("SELECT count(*) FROM present_tracks")[0][0]
    assert tracks == len(expected) - len(errors) > 0
    retry = pipeline.cli("retry-failed", "--wait", "--json", timeout=180)
    assert json.loads(retry.stdout.strip().splitlines()[-1])["status"] == "completed", retry.stdout
    assert pipeline.rows("SELECT count(*) FROM present_tracks")[0][0] == len(expected)
    assert pipeline.rows("SELECT count(*) FROM file_errors")[0][0] == 0
