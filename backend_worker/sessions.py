"""Scan sessions (the scan_sessions table): starting one (what `soniquebay scan`, its timer and
`soniquebay watch` share), its state, closing it, and failing the ones nothing works on any more.
The work of a session is in its ledger (backend_worker.ledger)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import psycopg

from backend_worker import ledger, pipeline
from backend_worker.failures import one_line
from backend_worker.ledger import COUNT_NAMES

# NOTIFY channel: a session's id is announced here when it closes (`soniquebay scan --wait` listens).
CLOSED_CHANNEL = "soniquebay_session_closed"


# What started a session (scan_sessions.origin): someone, soniquebay-scan.timer, soniquebay watch.
ORIGINS = ("manual", "timer", "watch")
# Advisory lock held while checking for busy roots and creating a session.
START_LOCK = 0x53_42_53_54


def normalise_roots(paths) -> list[str]:
    """Absolute, sorted, without duplicates; a root inside another root would be walked twice."""
    roots = sorted({os.path.normpath(os.path.abspath(p)) for p in paths})
    return [r for r in roots if not any(r != o and is_within(r, o) for o in roots)]


def is_within(path: str, folder: str) -> bool:
    """path is folder or below it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def busy_roots(conn: psycopg.Connection, roots: list[str]) -> dict[str, str]:
    """Roots that a running session already scans (its roots hold them, or lie below them): root
    -> that session's id. Two sessions over the same folders at once would each remove what the
    other added after its walk had passed."""
    running = conn.execute("SELECT id, roots FROM scan_sessions WHERE status = 'running'").fetchall()
    busy = {}
    for root in roots:
        for session_id, session_roots in running:
            if any(is_within(root, other) or is_within(other, root) for other in session_roots):
                busy[root] = str(session_id)
                break
    return busy


def start_session(conn: psycopg.Connection, roots: list[str], origin: str) -> tuple[str, list[pipeline.Unit]]:
    """Create a session over roots and register one walk unit per root. Returns the session id and
    the walks to send once this transaction is committed (see send_walks)."""
    session_id = create_session(conn, roots, origin)
    walks = [pipeline.root_walk(session_id, i, root) for i, root in enumerate(roots)]
    return session_id, ledger.register_units(conn, session_id, walks)


def send_walks(session_id: str, walks: list[pipeline.Unit]) -> None:
    """Send a new session's walks; if the broker refuses, the session is failed (not left running)."""
    from backend_worker import db
    from backend_worker.app import app

    try:
        # By name: importing backend_worker.tasks (mutagen, every stage) would only slow the start.
        for unit in walks:
            app.send_task(unit.task, kwargs=unit.kwargs, task_id=unit.task_id)
    except Exception as exc:
        with db.connect() as conn:
            fail_session(conn, session_id, f"could not queue the scan: {one_line(exc)}")
        raise


@dataclass(frozen=True)
class Started:
    session_id: str | None  # None: every root was busy
    busy: dict[str, str]  # root -> the running session that already scans it
    stale: list[str]  # sessions found abandoned, failed first


def start(roots: list[str], origin: str, skip_busy: bool = False) -> Started:
    """What every start of a scan does: fail the sessions nothing works on any more, create a session
    over `roots` with one walk unit per root, commit, send the walks. With skip_busy, the roots a
    running session already scans are left out, under START_LOCK: two starters (a timer firing
    while a scan it started still runs, the watch) never both find them free."""
    from backend_worker import db

    with db.connect() as conn:
        stale = fail_stale_sessions(conn)
        busy: dict[str, str] = {}
        if skip_busy:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (START_LOCK,))
            busy = busy_roots(conn, roots)
            roots = [root for root in roots if root not in busy]
            if not roots:
                return Started(None, busy, stale)
        session_id, walks = start_session(conn, roots, origin)
    send_walks(session_id, walks)
    return Started(session_id, busy, stale)


def create_session(conn: psycopg.Connection, roots: list[str], origin: str = "manual") -> str:
    session_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO scan_sessions (id, roots, origin, over_empty_library) "
        "VALUES (%s, %s, %s, NOT EXISTS (SELECT FROM tracks))",
        (session_id, roots, origin),
    )
    return session_id


_OVER_EMPTY_LIBRARY: dict[str, bool] = {}


def over_empty_library(conn: psycopg.Connection, session_id: str) -> bool:
    """Whether the library held no track when the session started (it never changes: asked once
    per process)."""
    if session_id not in _OVER_EMPTY_LIBRARY:
        if len(_OVER_EMPTY_LIBRARY) > 1000:
            _OVER_EMPTY_LIBRARY.clear()
        row = conn.execute(
            "SELECT over_empty_library FROM scan_sessions WHERE id = %s", (session_id,)
        ).fetchone()
        _OVER_EMPTY_LIBRARY[session_id] = bool(row and row[0])
    return _OVER_EMPTY_LIBRARY[session_id]


def session_state(conn: psycopg.Connection, session_id: str) -> tuple[str, str] | None:
    """(status, phase), or None for an unknown session."""
    return conn.execute("SELECT status, phase FROM scan_sessions WHERE id = %s", (session_id,)).fetchone()


# A session as `soniquebay status` shows it (its counts are final once it is closed).
_SESSION_SELECT = (
    "SELECT id, roots, origin, status, phase, message, started_at, ended_at, "
    + ", ".join(COUNT_NAMES)
    + " FROM scan_sessions"
)


def session_row(conn: psycopg.Connection, session_id: str) -> tuple | None:
    """(id, roots, origin, status, phase, message, started_at, ended_at, *COUNT_NAMES)."""
    return conn.execute(_SESSION_SELECT + " WHERE id = %s", (session_id,)).fetchone()


def recent_session_rows(conn: psycopg.Connection, limit: int) -> list[tuple]:
    """The rows of session_row, latest session first."""
    return conn.execute(_SESSION_SELECT + " ORDER BY started_at DESC LIMIT %s", (limit,)).fetchall()


def scanned_roots(conn: psycopg.Connection) -> list[str]:
    """Every folder a session was started over, sorted."""
    return [root for (root,) in conn.execute("SELECT DISTINCT unnest(roots) FROM scan_sessions ORDER BY 1")]


def lock_session(conn: psycopg.Connection, session_id: str) -> tuple[str, str, list[str]] | None:
    """(status, phase, roots), the session's row locked until the transaction ends; None for an
    unknown session."""
    row = conn.execute(
        "SELECT status, phase, roots FROM scan_sessions WHERE id = %s FOR UPDATE", (session_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1], list(row[2]))


def set_phase(conn: psycopg.Connection, session_id: str, phase: str) -> None:
    conn.execute("UPDATE scan_sessions SET phase = %s WHERE id = %s", (phase, session_id))


def is_running(conn: psycopg.Connection, session_id: str) -> bool:
    state = session_state(conn, session_id)
    return state is not None and state[0] == "running"


def close_session(conn: psycopg.Connection, session_id: str, status: str, message: str | None = None) -> bool:
    """Write final counts and end the session; False if it had already ended."""
    counts = ledger.progress(conn, session_id)
    cur = conn.execute(
        "UPDATE scan_sessions SET status = %s, phase = 'closed', ended_at = now(), message = %s, "
        + ", ".join(f"{name} = %s" for name in COUNT_NAMES)
        + " WHERE id = %s AND status = 'running'",
        (status, message, *(counts[n] for n in COUNT_NAMES), session_id),
    )
    if cur.rowcount == 1:
        prune_session(conn, session_id)
        conn.execute("SELECT pg_notify(%s, %s)", (CLOSED_CHANNEL, session_id))  # sent on commit
    return cur.rowcount == 1


# Working state a session needs only while it runs. Its scan_units stay: they are its history
# (what each task did, with its counts), one row per task, and `soniquebay status` sums nothing
# from them once the session is closed.
SESSION_WORK_TABLES = ("session_dirs", "session_vanished", "cover_plans", "record_buffer")


def prune_session(conn: psycopg.Connection, session_id: str) -> dict[str, int]:
    """Delete a closed session's working rows (in the transaction that closes it). A task of the
    session delivered afterwards finds the session closed and does nothing, so nothing reads them."""
    return {
        table: conn.execute(f"DELETE FROM {table} WHERE session_id = %s", (session_id,)).rowcount
        for table in SESSION_WORK_TABLES
    }


def fail_session(conn: psycopg.Connection, session_id: str, message: str) -> bool:
    return close_session(conn, session_id, "failed", message)


def stall_limit_seconds() -> int:
    """How long a running session can go without a unit registered or finished while a worker may
    still be working on it: a dead worker's task comes back after the visibility timeout plus the
    broker's restore sweep (up to ~100 s), then runs up to its time limit; retries wait up to 2 min."""
    from backend_worker.config import queue_time_limits, settings

    return settings().visibility_timeout + max(queue_time_limits().values()) + 240


def fail_stale_sessions(conn: psycopg.Connection, roots: list[str] | None = None) -> list[str]:
    """Sessions still 'running' that no worker can be working on (the machine rebooted, the
    broker lost a message a dying worker host had just taken...): nothing happened for longer
    than stall_limit_seconds(). They are failed, so they never stay 'running'; a new scan of the
    same roots completes the library (unchanged files are skipped)."""
    rows = conn.execute(
        """
        SELECT s.id FROM scan_sessions s
        WHERE s.status = 'running'
          AND greatest(s.started_at, (SELECT max(greatest(u.created_at, u.done_at, u.sent_at))
                                      FROM scan_units u WHERE u.session_id = s.id))
              < now() - make_interval(secs => %s)
        """,
        (stall_limit_seconds(),),
    ).fetchall()
    failed = []
    for (session_id,) in rows:
        reason = "abandoned: no progress for longer than any task may take; scan again to complete it"
        if fail_session(conn, str(session_id), reason):
            failed.append(str(session_id))
    return failed
