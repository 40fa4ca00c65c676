"""Recovery of lost units (backend_worker.delivery) on the suite's real PostgreSQL and Redis: the
reconciliation pass as a plain function (its timings given as arguments, so each rule is tested in
seconds), then end to end with real workers on the production visibility timeout."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import psycopg
import pytest
import redis

from backend_worker import delivery, exporter, ledger, record_buffer, sessions
from backend_worker.config import settings
from backend_worker.pipeline import Unit
from testkit import audio_fixtures, services

pytestmark = pytest.mark.integration

FAST = {"grace": 0, "confirm": 1, "live": 5, "nudge": 1, "every": 0}


class Recorder:
    """Stands in for the broker's send in the plain-function tests: what would have been sent."""

    def __init__(self):
        self.sent: list[tuple[str, dict, str]] = []

    def __call__(self, task: str, kwargs: dict, task_id: str) -> None:
        self.sent.append((task, kwargs, task_id))


def reconcile(conn, send, **timing):
    """One pass; the suite's workers run passes of their own, so wait for the lock if need be."""
    deadline = time.monotonic() + 20
    while (report := delivery.reconcile(conn, broker(), send, **{**FAST, **timing})) is None:
        assert time.monotonic() < deadline, "the reconciliation lock was never free"
        time.sleep(0.1)
    return report


def broker() -> redis.Redis:
    return redis.Redis.from_url(settings().broker_url)


def register(conn, session_id: str, unit_id: str) -> Unit:
    kwargs = {"session_id": session_id, "unit_id": unit_id, "paths": ["/nowhere/a.mp3"]}
    with conn.transaction():
        unit = Unit(unit_id, "extract", "extract.files", kwargs)
        (unit,) = ledger.register_units(conn, session_id, [unit])
    return unit


def unit_row(conn, session_id: str, unit_id: str) -> tuple:
    return conn.execute(
        "SELECT task_id, resent, suspect_since IS NOT NULL FROM scan_units "
        "WHERE session_id = %s AND unit_id = %s",
        (session_id, unit_id),
    ).fetchone()


def as_if_waited(conn, session_id: str, seconds: float) -> None:
    """What waiting `seconds` does to the clocks the reconciler reads (the session's start and
    last nudge, its units' creation, sending, completion and suspicion), without waiting: they
    are moved back, so the next pass sees the window passed, whatever this machine's load."""
    back = "make_interval(secs => %(s)s)"
    conn.execute(
        f"UPDATE scan_units SET created_at = created_at - {back}, sent_at = sent_at - {back}, "
        f"done_at = done_at - {back}, suspect_since = suspect_since - {back} WHERE session_id = %(id)s",
        {"s": seconds, "id": session_id},
    )
    conn.execute(
        f"UPDATE scan_sessions SET started_at = started_at - {back}, nudged_at = nudged_at - {back} "
        "WHERE id = %(id)s",
        {"s": seconds, "id": session_id},
    )


def test_register_units_records_the_message_and_keeps_the_first_task_id(db_conn):
    session = sessions.create_session(db_conn, ["/m"])
    first = register(db_conn, session, "walk:0/x0")
    again = register(db_conn, session, "walk:0/x0")  # a redelivered walk registers it again
    assert again.task_id == first.task_id
    message = db_conn.execute("SELECT message FROM scan_units WHERE unit_id = 'walk:0/x0'").fetchone()[0]
    assert message == {"task": "extract.files", "kwargs": first.kwargs}
    with db_conn.transaction():
        ledger.finish_unit(db_conn, session, "walk:0/x0", {})
        assert ledger.register_units(db_conn, session, [first]) == [], "a done unit is not sent again"


def test_queued_task_ids_reads_the_ids_of_kombu_messages(services_up):
    client = broker()
    client.delete("delivery-test")
    messages = [{"body": "e30=", "headers": {"id": f"task-{i}", "task": "x"}} for i in range(1203)]
    client.lpush("delivery-test", *[json.dumps(m) for m in messages], "not json", json.dumps({"headers": {}}))
    try:
        assert delivery.queued_task_ids(client, ["delivery-test"]) == {f"task-{i}" for i in range(1203)}
        assert delivery.queued_task_ids(client, ["no-such-queue"]) == set()
    finally:
        client.delete("delivery-test")


def test_a_unit_nobody_holds_is_suspected_then_resent_and_a_held_one_is_left_alone(db_conn):
    send = Recorder()
    session = sessions.create_session(db_conn, ["/m"])
    lost = register(db_conn, session, "walk:0/x0")
    held = register(db_conn, session, "walk:0/x1")
    db_conn.execute(
        "INSERT INTO worker_heartbeats (instance, worker, pid, held) "
        "VALUES ('live-1', 'extract-9@test', 1, %s)",
        ([held.task_id],),
    )
    report = reconcile(db_conn, send)
    assert report.suspects == 1 and report.resent == [] and send.sent == []
    assert unit_row(db_conn, session, "walk:0/x0") == (lost.task_id, 0, True)
    assert unit_row(db_conn, session, "walk:0/x1") == (held.task_id, 0, False)

    as_if_waited(db_conn, session, FAST["confirm"] + 0.2)  # still found nowhere after `confirm`: sent again
    db_conn.execute("UPDATE worker_heartbeats SET seen_at = now() WHERE instance = 'live-1'")
    report = reconcile(db_conn, send)
    [(task, kwargs, task_id)] = send.sent
    assert (task, kwargs) == ("extract.files", lost.kwargs) and task_id != lost.task_id
    assert unit_row(db_conn, session, "walk:0/x0") == (task_id, 1, False)
    assert [(r.unit_id, r.stage) for r in report.resent] == [("walk:0/x0", "extract")]
    assert "lost by the broker" in report.resent[0].reason
    assert unit_row(db_conn, session, "walk:0/x1") == (held.task_id, 0, False)
    assert ledger.resent_units(db_conn, session) == 1
    assert delivery.resent_counts(db_conn).get("extract", 0) >= 1


def test_the_units_of_a_worker_that_stopped_beating_are_resent_naming_it(db_conn):
    send = Recorder()
    session = sessions.create_session(db_conn, ["/m"])
    unit = register(db_conn, session, "walk:0/x0")
    db_conn.execute(
        "INSERT INTO worker_heartbeats (instance, worker, pid, held, seen_at) "
        "VALUES ('dead-1', 'insert-7@test', 4242, %s, now() - interval '6 seconds')",
        ([unit.task_id],),
    )
    reconcile(db_conn, send)
    as_if_waited(db_conn, session, FAST["confirm"] + 0.2)
    report = reconcile(db_conn, send)
    assert len(send.sent) == 1
    assert "its worker insert-7@test (pid 4242) stopped: no heartbeat for" in report.resent[0].reason


def test_a_unit_found_again_is_no_longer_suspect_and_a_unit_lost_too_often_is_left(db_conn):
    send = Recorder()
    session = sessions.create_session(db_conn, ["/m"])
    unit = register(db_conn, session, "walk:0/x0")
    reconcile(db_conn, send)
    assert unit_row(db_conn, session, "walk:0/x0")[2]
    db_conn.execute(
        "INSERT INTO worker_heartbeats (instance, worker, pid, held) "
        "VALUES ('live-2', 'extract-9@test', 1, %s)",
        ([unit.task_id],),
    )
    reconcile(db_conn, send)
    assert unit_row(db_conn, session, "walk:0/x0") == (unit.task_id, 0, False)

    db_conn.execute("DELETE FROM worker_heartbeats WHERE instance = 'live-2'")
    db_conn.execute("UPDATE scan_units SET resent = %s WHERE unit_id = 'walk:0/x0'", (delivery.MAX_RESENDS,))
    reconcile(db_conn, send)
    as_if_waited(db_conn, session, FAST["confirm"] + 0.2)
    reconcile(db_conn, send)
    assert send.sent == [], "re-sent no more than MAX_RESENDS times"


def test_a_unit_that_cannot_be_resent_any_more_gets_its_session_abandoned_after_the_stall_limit(db_conn):
    """The path that remains for a unit lost MAX_RESENDS times: nothing sends it again, and the
    session is failed as abandoned once nothing moved for the stall limit (never left running)."""
    send = Recorder()
    session = sessions.create_session(db_conn, ["/m"])
    register(db_conn, session, "walk:0/x0")
    stalled = sessions.stall_limit_seconds() + 60
    db_conn.execute("UPDATE scan_sessions SET started_at = now() - make_interval(secs => %s)", (stalled,))
    db_conn.execute(
        "UPDATE scan_units SET resent = %s, created_at = now() - make_interval(secs => %s), "
        "sent_at = now() - make_interval(secs => %s), suspect_since = now() - interval '1 hour'",
        (delivery.MAX_RESENDS, stalled, stalled),
    )
    reconcile(db_conn, send)
    assert send.sent == []
    with db_conn.transaction():
        assert sessions.fail_stale_sessions(db_conn) == [session]
    status, message = db_conn.execute(
        "SELECT status, message FROM scan_sessions WHERE id = %s", (session,)
    ).fetchone()
    assert status == "failed" and message.startswith("abandoned:"), message


def test_a_session_with_nothing_pending_that_did_not_close_is_sent_its_next_step(db_conn):
    send = Recorder()
    waiting = sessions.create_session(db_conn, ["/m"])  # its flush message was lost
    closing = sessions.create_session(db_conn, ["/n"])  # its final step's message was lost
    db_conn.execute("UPDATE scan_sessions SET phase = 'finishing' WHERE id = %s", (closing,))
    with db_conn.transaction():
        record_buffer.buffer_records(db_conn, waiting, "walk:0/x0/c", [{"path": "/m/a.mp3"}])
    for session in (waiting, closing):
        as_if_waited(db_conn, session, FAST["nudge"] + 0.1)
    report = reconcile(db_conn, send)
    assert sorted(report.nudged) == sorted([(waiting, "batch.flush"), (closing, "deferred.finalize")])
    assert sorted((kwargs["session_id"], task) for task, kwargs, _ in send.sent) == sorted(report.nudged)
    assert reconcile(db_conn, send, nudge=30).nudged == [], "once per nudge period"


def test_a_worker_killed_with_messages_in_hand_gets_them_back_from_the_ledger(pipeline, postgres, library):
    """kill -9 of the extract worker (main process and pool) while it holds chunks, on the
    production visibility timeout (Redis would hand them back after 30 min): the other workers'
    reconcilers re-send the units and the session completes within two minutes. The chunks are
    held by their CPU slots (PostgreSQL advisory locks, taken here), so the kill surely hits them."""
    from backend_worker.cpu import CPU_SLOT_LOCK_CLASS as SLOT_LOCK_CLASS

    assert settings().visibility_timeout >= 1800
    expected = audio_fixtures.build_library(library, artists=4, albums_per_artist=5, tracks_per_album=12)
    workers = pipeline.workers
    holder = services.hold_extract_slots(postgres.url)
    try:
        session_id = pipeline.cli("scan", str(library)).stdout.strip()
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid AND NOT granted"
        )
        deadline = time.monotonic() + 60
        # The worker's parsing thread waits for a slot, its other thread for the parsing turn; the
        # worker's heartbeat names what it holds.
        while (
            pipeline.rows(waiting, SLOT_LOCK_CLASS & 0xFFFFFFFF)[0][0] < 1
            or len(held("extract")) < workers.concurrency
        ):
            assert time.monotonic() < deadline, "the extract worker never took the chunks"
            time.sleep(0.2)
        main = workers.procs["extract"].pid
        subprocess.run(["kill", "-9", "--", f"-{main}"], check=False)  # main and pool
        killed = time.monotonic()
        workers.procs.pop("extract").wait()
    finally:
        holder.close()
    workers.start(["extract"])
    status = pipeline.wait_closed(session_id, timeout=240)
    recovered = time.monotonic() - killed
    assert status == "completed"
    assert recovered < 120, f"recovered in {recovered:.0f} s"
    paths = [p for (p,) in pipeline.rows("SELECT path FROM present_tracks ORDER BY path")]
    assert paths == sorted(e["path"] for e in expected)
    assert pipeline.rows("SELECT count(*) FROM file_errors") == [(0,)]
    resent = pipeline.rows("SELECT count(*) FROM scan_units WHERE session_id = %s AND resent > 0", session_id)
    assert resent[0][0] >= 1
    # What an operator sees: the session's count in `soniquebay status`, the exporter's counter.
    status = json.loads(pipeline.cli("status", "--json").stdout)
    [shown] = [s for s in status["sessions"] if s["id"] == session_id]
    assert shown["resent"] >= 1, shown
    assert f"resent={shown['resent']}" in pipeline.cli("status").stdout
    samples = exporter.collect(broker(), pipeline.conn)
    [extract_resent] = [
        v
        for name, labels, v in samples
        if name == "soniquebay_units_resent_total" and labels == {"stage": "extract"}
    ]
    assert extract_resent >= 1
    logs = "".join(workers.log_tail(q, 400) for q in services.QUEUES)
    assert "re-sent extract unit" in logs and "stopped: no heartbeat" in logs, logs[-3000:]


def held(queue: str) -> list[str]:
    """Task ids the queue's worker holds, as its latest heartbeat says."""
    with psycopg.connect(settings().database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT held FROM worker_heartbeats WHERE worker LIKE %s ORDER BY seen_at DESC LIMIT 1",
            (f"{queue}-1@%",),
        ).fetchone()
    return row[0] if row else []


def test_every_message_of_a_scan_delivered_again_changes_nothing(pipeline, library):
    """What Redis does half an hour after a loss, when the visibility timeout restores the old
    messages of units the ledger already re-sent and finished: every unit's message delivered again
    while its session still runs. Each task finds its unit done and changes nothing."""
    from backend_worker.app import app

    audio_fixtures.build_library(library, artists=2, albums_per_artist=3, tracks_per_album=20)
    session = pipeline.scan(library)
    assert session["status"] == "completed", session
    sid = session["id"]

    def state():
        return (
            pipeline.rows("SELECT path, updated_at, album_id, artist_id FROM present_tracks ORDER BY path"),
            pipeline.rows(
                "SELECT unit_id, counts, done_at FROM scan_units WHERE session_id = %s ORDER BY 1", sid
            ),
            pipeline.rows("SELECT * FROM file_errors ORDER BY path"),
            pipeline.rows("SELECT count(*) FROM record_buffer"),
        )

    before = state()
    pipeline.conn.execute(
        "UPDATE scan_sessions SET status = 'running', phase = 'scanning' WHERE id = %s", (sid,)
    )
    try:
        messages = pipeline.rows(
            "SELECT message FROM scan_units WHERE session_id = %s AND message IS NOT NULL", sid
        )
        assert {m["task"] for (m,) in messages} >= {
            "scan.walk",
            "extract.files",
            "batch.collect",
            "insert.records",
        }
        sent = {}
        for (message,) in messages:
            task_id = str(uuid.uuid4())
            app.send_task(message["task"], kwargs=message["kwargs"], task_id=task_id)
            sent[task_id] = message["task"]
        deadline = time.monotonic() + 60
        while True:
            logs = "".join(pipeline.workers.log_tail(q, 5000) for q in services.QUEUES)
            missing = [t for t in sent if f"[{t}] succeeded" not in logs]
            if not missing:
                break
            assert time.monotonic() < deadline, f"{len(missing)} re-delivered tasks never ran"
            time.sleep(0.3)
        assert all(f"[{t}] succeeded" in logs and "skipped" in logs for t in sent)
        assert state() == before
    finally:
        pipeline.conn.execute(
            "UPDATE scan_sessions SET status = 'completed', phase = 'closed' WHERE id = %s", (sid,)
        )


@pytest.fixture(autouse=True)
def _no_leftover_heartbeats(services_up):
    yield
    with psycopg.connect(settings().database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM worker_heartbeats WHERE worker LIKE '%@test'")
