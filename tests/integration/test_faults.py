"""Faults injected into a running scan on real workers: nothing is lost, nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psycopg
import pytest

from tests import audio_fixtures, services

pytestmark = pytest.mark.integration


def test_postgresql_restarted_mid_scan_the_tasks_retry_and_complete(pipeline, postgres, library):
    expected = audio_fixtures.build_library(library, artists=6, albums_per_artist=4, tracks_per_album=8)
    scan = subprocess.Popen(
        [str(services.VENV_BIN / "soniquebay"), "scan", str(library), "--wait", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Stop the database once the scan is under way, keep it down long enough for every stage's
    # tasks to hit the outage, then bring it back.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pipeline.rows("SELECT count(*) FROM scan_units WHERE done_at IS NOT NULL")[0][0] >= 3:
            break
        time.sleep(0.05)
    postgres.stop()
    time.sleep(4)
    postgres.start()
    out, err = scan.communicate(timeout=300)
    assert scan.returncode == 0, err
    session = json.loads(out.strip().splitlines()[-1])
    assert session["status"] == "completed"
    assert session["counts"]["inserted"] == len(expected) and session["counts"]["errors"] == 0
    with psycopg.connect(postgres.url) as conn:
        paths = [p for (p,) in conn.execute("SELECT path FROM tracks ORDER BY path")]
    assert paths == sorted(e["path"] for e in expected)
    logs = "".join(pipeline.workers.log_tail(q, 4000) for q in services.QUEUES)
    assert "retry" in logs.lower(), "some task met the outage and was retried"


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_a_stuck_task_is_killed_at_its_time_limit_recorded_and_the_queue_goes_on(pipeline, library):
    """Freeze (SIGSTOP) the pool process that is reading a chunk, as a hung disk read would: the
    worker kills it at the hard time limit, the chunk's files become error records, the other
    chunks go through and the session closes."""
    slow = {"SONIQUEBAY_TIME_LIMIT_EXTRACT": "40", "SONIQUEBAY_EXTRACT_CHUNK_FILES": "400"}
    workers = pipeline.workers
    workers.restart(["scan", "extract"], slow)
    try:
        expected = audio_fixtures.build_library(library, artists=8, albums_per_artist=5, tracks_per_album=20)
        scan = subprocess.Popen(
            [str(services.VENV_BIN / "soniquebay"), "scan", str(library), "--wait", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        frozen = None
        children = workers.pool_children("extract")
        before = {pid: _cpu_ticks(pid) for pid in children}
        deadline = time.monotonic() + 60
        while frozen is None and time.monotonic() < deadline:
            time.sleep(0.02)
            for pid in children:
                if _cpu_ticks(pid) > before[pid]:
                    os.kill(pid, signal.SIGSTOP)
                    frozen = pid
                    break
        assert frozen, "no extract pool process started working"
        out, err = scan.communicate(timeout=240)
        assert scan.returncode == 0, err
        session = json.loads(out.strip().splitlines()[-1])
        # The session may close (and `scan --wait` return) a moment before the kill completes.
        gone = time.monotonic() + 10
        while os.path.exists(f"/proc/{frozen}/stat") and _state(frozen) != "Z" and time.monotonic() < gone:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{frozen}/stat") or _state(frozen) == "Z", (
            "the stuck process was killed"
        )
        errors = pipeline.rows("SELECT reason FROM file_errors")
        assert errors, "the killed chunk's files are recorded"
        assert {reason for (reason,) in errors} == {"not read: its extract task ran past the 40 s time limit"}
        c = session["counts"]
        assert session["status"] == "completed"
        assert c["errors"] == len(errors) <= 400
        assert c["inserted"] == len(expected) - len(errors) > 0
        assert pipeline.rows("SELECT count(*) FROM tracks")[0][0] + len(errors) == len(expected)
        assert "Hard time limit (40s) exceeded" in workers.log_tail("extract", 400)
    finally:
        workers.restart(["scan", "extract"])


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_a_task_stopped_by_its_soft_time_limit_mid_query_is_recorded_and_the_session_closes(
    pipeline, postgres, library
):
    """The extract tasks wait for a CPU slot (a PostgreSQL advisory lock, held here) past their soft
    time limit: interrupted in the middle of a query, each task's failure is still recorded (on a new
    connection), the session closes, and once the slots are free `retry-failed` reads the files."""
    from backend_worker.tasks import _SLOT_LOCK_CLASS

    workers = pipeline.workers
    # Scan too: a task's time limits travel in its message, set by the sender (the scan worker).
    one_slot = {"SONIQUEBAY_TIME_LIMIT_EXTRACT": "40", "SONIQUEBAY_EXTRACT_SLOTS": "1"}
    workers.restart(["scan", "extract"], one_slot)
    holder = psycopg.connect(postgres.url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s, 0)", (_SLOT_LOCK_CLASS,))
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
        assert pipeline.rows("SELECT count(*) FROM tracks")[0][0] == len(expected)
        assert pipeline.rows("SELECT count(*) FROM file_errors")[0][0] == 0
    finally:
        holder.close()
        workers.restart(["scan", "extract"])
