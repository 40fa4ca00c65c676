"""Starting scan sessions: what `soniquebay scan`, its timer and `soniquebay watch` share."""

from __future__ import annotations

import os

import psycopg

from backend_worker import ledger, pipeline
from backend_worker.errors import one_line

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


def start_session(conn: psycopg.Connection, roots: list[str], origin: str) -> tuple[str, list[ledger.Unit]]:
    """Create a session over roots and register one walk unit per root. Returns the session id and
    the walks to send once this transaction is committed (see send_walks)."""
    session_id = ledger.create_session(conn, roots, origin)
    walks = [pipeline.root_walk(session_id, i, root) for i, root in enumerate(roots)]
    return session_id, ledger.register_units(conn, session_id, walks)


def send_walks(session_id: str, walks: list[ledger.Unit]) -> None:
    """Send a new session's walks; if the broker refuses, the session is failed (not left running)."""
    from backend_worker import db
    from backend_worker.app import app

    try:
        # By name: importing backend_worker.tasks (mutagen, every stage) would only slow the start.
        for unit in walks:
            app.send_task(unit.task, kwargs=unit.kwargs, task_id=unit.task_id)
    except Exception as exc:
        with db.connect() as conn:
            ledger.fail_session(conn, session_id, f"could not queue the scan: {one_line(exc)}")
        raise
