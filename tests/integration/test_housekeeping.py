"""A closed session leaves no working rows behind: only its scan_sessions row and its units."""

from __future__ import annotations

import os
import uuid

import pytest

from backend_worker import db, sessions
from testkit import audio_fixtures

pytestmark = pytest.mark.integration


def working_rows(conn, session_id: str | None = None) -> dict[str, int]:
    where = "WHERE session_id = %s" if session_id else ""
    params = (session_id,) if session_id else ()
    return {
        table: conn.execute(f"SELECT count(*) FROM {table} {where}", params).fetchone()[0]
        for table in sessions.SESSION_WORK_TABLES
    }


NONE_LEFT = dict.fromkeys(sessions.SESSION_WORK_TABLES, 0)


def test_closing_a_session_prunes_its_working_rows(pipeline, library):
    expected = audio_fixtures.build_library(library, artists=2, albums_per_artist=2, tracks_per_album=3)
    first = pipeline.scan(library)
    assert first["status"] == "completed" and first["counts"]["inserted"] == 12
    assert working_rows(pipeline.conn) == NONE_LEFT
    # The history stays: one unit per task, with its counts.
    units = dict(
        pipeline.rows("SELECT stage, count(*) FROM scan_units WHERE session_id = %s GROUP BY 1", first["id"])
    )
    assert {"walk", "extract", "collect", "insert", "finalize", "cover"} <= set(units)

    # A session that removes files (session_vanished, session_dirs) and re-plans covers.
    os.unlink(expected[0]["path"])
    second = pipeline.scan(library)
    assert second["status"] == "completed" and second["counts"]["missing"] == 1
    assert working_rows(pipeline.conn) == NONE_LEFT

    # A failed session prunes too.
    failed = pipeline.scan(library / "missing")
    assert failed["status"] == "failed"
    assert working_rows(pipeline.conn) == NONE_LEFT
    assert pipeline.rows("SELECT count(*) FROM present_tracks") == [(11,)]


def test_a_session_closed_by_the_stale_session_check_is_pruned_and_a_running_one_keeps_its_rows(db_conn):
    conn = db_conn
    stale, running = str(uuid.uuid4()), str(uuid.uuid4())
    for session_id, age in ((stale, "3 hours"), (running, "0 seconds")):
        conn.execute(
            "INSERT INTO scan_sessions (id, roots, started_at) VALUES (%s, '{/x}', now() - %s::interval)",
            (session_id, age),
        )
        conn.execute("INSERT INTO session_dirs VALUES (%s, '/x', true)", (session_id,))
        conn.execute("INSERT INTO session_vanished VALUES (%s, '/x/gone.mp3')", (session_id,))
        conn.execute("INSERT INTO cover_plans VALUES (%s, 'cover/0', '1,2')", (session_id,))
        conn.execute(
            "INSERT INTO record_buffer VALUES (%s, 'u/x0/c', '/x/a.mp3', 1, NULL, NULL)", (session_id,)
        )
    with conn.transaction():
        assert sessions.fail_stale_sessions(conn) == [stale]
    assert working_rows(conn, stale) == NONE_LEFT
    assert working_rows(conn, running) == dict.fromkeys(sessions.SESSION_WORK_TABLES, 1)


def test_migration_0002_prunes_sessions_closed_before_it(db_conn):
    """What the migration does on a database where closed sessions kept their rows."""
    conn = db_conn
    ids = {status: str(uuid.uuid4()) for status in ("completed", "failed", "running")}
    for status, session_id in ids.items():
        conn.execute(
            "INSERT INTO scan_sessions (id, roots, status) VALUES (%s, '{/x}', %s)", (session_id, status)
        )
        conn.execute("INSERT INTO session_dirs VALUES (%s, '/x', true)", (session_id,))
        conn.execute("INSERT INTO session_vanished VALUES (%s, '/x/gone.mp3')", (session_id,))
        conn.execute("INSERT INTO cover_plans VALUES (%s, 'cover/0', '1')", (session_id,))
        conn.execute("INSERT INTO record_buffer VALUES (%s, 'u', '/x/a.mp3', 1, NULL, NULL)", (session_id,))
    [sql] = [sql for version, _, sql in db.migrations() if version == 2]
    conn.execute(sql)
    assert working_rows(conn, ids["completed"]) == NONE_LEFT
    assert working_rows(conn, ids["failed"]) == NONE_LEFT
    assert working_rows(conn, ids["running"]) == dict.fromkeys(sessions.SESSION_WORK_TABLES, 1)
    assert conn.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()[:2] == [
        ("0001_initial.sql",),
        ("0002_prune_closed_sessions.sql",),
    ]
