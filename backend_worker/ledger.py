"""Scan sessions and their work ledger (see the scan_units table).

Every unit of work is registered pending before its message is sent and marked done exactly
once, with its counts. A session is finished when no unit is pending and no extracted record
waits in the buffer, which holds however often tasks are redelivered.
"""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

COUNT_NAMES = ("discovered", "unchanged", "extracted", "inserted", "errors", "removed")
# NOTIFY channel: a session's id is announced here when it closes (`soniquebay scan --wait` listens).
CLOSED_CHANNEL = "soniquebay_session_closed"
UPSTREAM_STAGES = ("walk", "extract", "collect")
# Stage of a unit -> the queue its task runs on.
STAGE_QUEUES = {
    "walk": "scan", "extract": "extract", "collect": "batch", "insert": "insert",
    "finalize": "deferred", "cover": "deferred",
}  # fmt: skip


def create_session(conn: psycopg.Connection, roots: list[str], origin: str = "manual") -> str:
    session_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO scan_sessions (id, roots, origin) VALUES (%s, %s, %s)", (session_id, roots, origin)
    )
    return session_id


def session_state(conn: psycopg.Connection, session_id: str) -> tuple[str, str] | None:
    """(status, phase), or None for an unknown session."""
    return conn.execute("SELECT status, phase FROM scan_sessions WHERE id = %s", (session_id,)).fetchone()


def is_running(conn: psycopg.Connection, session_id: str) -> bool:
    state = session_state(conn, session_id)
    return state is not None and state[0] == "running"


@dataclass(frozen=True)
class Unit:
    """A unit of work and the message that runs it: a task name and its keyword arguments (ids
    and paths, never records). Kept in the ledger, so a lost message can be sent again."""

    id: str
    stage: str
    task: str | None = None  # None: done where it is created, no message
    kwargs: dict | None = None
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def register_units(conn: psycopg.Connection, session_id: str, units: list[Unit]) -> list[Unit]:
    """Create pending units with their messages and task ids, before the messages are sent.
    Returns the units to send now: the pending ones with a message, under the task id the ledger
    holds (a unit registered before, by an earlier run of the same task, keeps its first id)."""
    if not units:
        return []
    rows = conn.execute(
        "INSERT INTO scan_units (session_id, unit_id, stage, task_id, message, sent_at) "
        "SELECT %s, u, s, t, m, now() FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[]) "
        "AS v(u, s, t, m) "
        "ON CONFLICT (session_id, unit_id) DO UPDATE SET "
        "task_id = coalesce(scan_units.task_id, EXCLUDED.task_id), "
        "message = coalesce(scan_units.message, EXCLUDED.message), "
        "sent_at = coalesce(scan_units.sent_at, EXCLUDED.sent_at) "
        "RETURNING unit_id, task_id, done_at IS NULL",
        (
            session_id,
            [u.id for u in units],
            [u.stage for u in units],
            [u.task_id if u.task else None for u in units],
            [Jsonb(_message(u)) if u.task else None for u in units],
        ),
    ).fetchall()
    recorded = {unit_id: task_id for unit_id, task_id, pending in rows if pending}
    return [
        Unit(u.id, u.stage, u.task, u.kwargs, recorded[u.id]) for u in units if u.task and recorded.get(u.id)
    ]


def _message(unit: Unit) -> dict:
    return {"task": unit.task, "kwargs": unit.kwargs or {}}


def unit_from_row(unit_id: str, stage: str, task_id: str, message: dict) -> Unit:
    return Unit(unit_id, stage, message["task"], message["kwargs"], task_id)


def mark_sent(conn: psycopg.Connection, session_id: str, unit_ids: list[str]) -> None:
    if unit_ids:
        conn.execute(
            "UPDATE scan_units SET sent = true WHERE session_id = %s AND unit_id = ANY(%s)",
            (session_id, unit_ids),
        )


def unsent_units(conn: psycopg.Connection, session_id: str, stage: str) -> list[Unit]:
    """Units of `stage` registered but never sent (their sender died in between)."""
    rows = conn.execute(
        "SELECT unit_id, stage, task_id, message FROM scan_units "
        "WHERE session_id = %s AND stage = %s AND NOT sent AND done_at IS NULL AND message IS NOT NULL",
        (session_id, stage),
    ).fetchall()
    return [unit_from_row(*row) for row in rows]


def finish_unit(conn: psycopg.Connection, session_id: str, unit_id: str, counts: dict[str, int]) -> bool:
    """Mark a unit done with its counts; False when it was already done (a redelivery)."""
    cur = conn.execute(
        "UPDATE scan_units SET done_at = now(), counts = %s "
        "WHERE session_id = %s AND unit_id = %s AND done_at IS NULL",
        (Jsonb({k: v for k, v in counts.items() if v}), session_id, unit_id),
    )
    return cur.rowcount == 1


def unit_done(conn: psycopg.Connection, session_id: str, unit_id: str) -> bool:
    row = conn.execute(
        "SELECT done_at IS NOT NULL FROM scan_units WHERE session_id = %s AND unit_id = %s",
        (session_id, unit_id),
    ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class Pending:
    upstream: int  # walk, extract and collect units not done
    unbatched: int  # buffered record chunks not yet in an insert batch
    inserts: int
    covers: int


def pending(conn: psycopg.Connection, session_id: str) -> Pending:
    row = conn.execute(
        """
        SELECT
          (SELECT count(*) FROM scan_units WHERE session_id = %(s)s AND done_at IS NULL
             AND stage = ANY(%(up)s)),
          (SELECT count(*) FROM record_buffer WHERE session_id = %(s)s AND batch_id IS NULL),
          (SELECT count(*) FROM scan_units WHERE session_id = %(s)s AND done_at IS NULL AND stage = 'insert'),
          (SELECT count(*) FROM scan_units WHERE session_id = %(s)s AND done_at IS NULL AND stage = 'cover')
        """,
        {"s": session_id, "up": list(UPSTREAM_STAGES)},
    ).fetchone()
    return Pending(*row)


def next_steps(conn: psycopg.Connection, session_id: str) -> tuple[str, str, Pending, bool] | None:
    """(status, phase, what is pending, whether insert units were cut but never sent) in one round trip; None
    for an unknown session. Every task asks this when it is done (see tasks.advance)."""
    row = conn.execute(
        """
        SELECT s.status, s.phase,
          (SELECT count(*) FROM scan_units WHERE session_id = s.id AND done_at IS NULL
             AND stage = ANY(%(up)s)),
          (SELECT count(*) FROM record_buffer WHERE session_id = s.id AND batch_id IS NULL),
          (SELECT count(*) FROM scan_units WHERE session_id = s.id AND done_at IS NULL AND stage = 'insert'),
          (SELECT count(*) FROM scan_units WHERE session_id = s.id AND done_at IS NULL AND stage = 'cover'),
          EXISTS(SELECT 1 FROM scan_units WHERE session_id = s.id AND stage = 'insert'
                  AND NOT sent AND done_at IS NULL)
        FROM scan_sessions s WHERE s.id = %(s)s
        """,
        {"s": session_id, "up": list(UPSTREAM_STAGES)},
    ).fetchone()
    if row is None:
        return None
    return row[0], row[1], Pending(*row[2:6]), row[6]


def progress(conn: psycopg.Connection, session_id: str) -> dict[str, int]:
    """Counts so far: the sum over the session's finished units."""
    rows = conn.execute(
        "SELECT key, sum(value::bigint) FROM scan_units, jsonb_each_text(counts) "
        "WHERE session_id = %s AND counts IS NOT NULL GROUP BY key",
        (session_id,),
    ).fetchall()
    totals = dict.fromkeys(COUNT_NAMES, 0)
    totals.update({k: int(v) for k, v in rows if k in totals})
    return totals


def resent_units(conn: psycopg.Connection, session_id: str) -> int:
    """How many messages of this session were sent again because they were lost: its units', and
    its next steps' (a flush, the final step)."""
    row = conn.execute(
        "SELECT coalesce(sum(resent), 0) + (SELECT nudges FROM scan_sessions WHERE id = %(s)s) "
        "FROM scan_units WHERE session_id = %(s)s",
        {"s": session_id},
    )
    return int(row.fetchone()[0] or 0)


def close_session(conn: psycopg.Connection, session_id: str, status: str, message: str | None = None) -> bool:
    """Write final counts and end the session; False if it had already ended."""
    counts = progress(conn, session_id)
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


# --- the record buffer between extract and insert -------------------------------------------------


def _encode(records: list[dict]) -> bytes:
    """A chunk of records as zlib-compressed JSON. Records with the same keys (all of extract's)
    are stored as {"keys": [...], "rows": [[...], ...]}: half the size, much faster to write and
    read back. zlib at level 1 costs the worker less than PostgreSQL's own (pglz) compression of
    the TOASTed value cost the server (which gives up at once on data that is compressed)."""
    keys = tuple(records[0]) if records else ()
    if all(tuple(r) == keys for r in records):
        text = json.dumps({"keys": keys, "rows": [list(r.values()) for r in records]})
    else:
        text = json.dumps(records)
    return zlib.compress(text.encode(), 1)


def _decode(payload: bytes) -> list[dict]:
    if payload[:1] not in (b"{", b"["):  # zlib; earlier versions stored plain JSON
        payload = zlib.decompress(payload)
    data = json.loads(payload)
    if isinstance(data, dict):
        keys = data["keys"]
        return [dict(zip(keys, row, strict=True)) for row in data["rows"]]
    return data  # a list of records (what earlier versions wrote)


def buffer_records(conn: psycopg.Connection, session_id: str, unit_id: str, records: list[dict]) -> bool:
    """Park an extract chunk's records; False if this chunk was buffered before (redelivery)."""
    sort_key = min((r["path"] for r in records), default="")
    cur = conn.execute(
        "INSERT INTO record_buffer (session_id, unit_id, sort_key, rows, payload) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (session_id, unit_id, sort_key, len(records), _encode(records)),
    )
    return cur.rowcount == 1


def cut_batches(conn: psycopg.Connection, session_id: str, target_rows: int, flush: bool) -> list[Unit]:
    """Group buffered chunks, in path order, into insert batches of about target_rows rows (at
    most 2.5x); with flush, the remainder too. Registers one insert unit per batch; returns them."""
    rows = conn.execute(
        "SELECT unit_id, rows FROM record_buffer WHERE session_id = %s AND batch_id IS NULL "
        "ORDER BY sort_key FOR UPDATE SKIP LOCKED",
        (session_id,),
    ).fetchall()
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for unit_id, n in rows:
        if current and size + n > 2.5 * target_rows:
            batches.append(current)
            current, size = [], 0
        current.append(unit_id)
        size += n
        if size >= target_rows:
            batches.append(current)
            current, size = [], 0
    if current and flush:
        batches.append(current)
    batch_ids = []
    for members in batches:
        batch_id = f"insert:{uuid.uuid4()}"
        conn.execute(
            "UPDATE record_buffer SET batch_id = %s WHERE session_id = %s AND unit_id = ANY(%s)",
            (batch_id, session_id, members),
        )
        batch_ids.append(batch_id)
    return register_units(
        conn,
        session_id,
        [Unit(b, "insert", "insert.records", {"session_id": session_id, "batch_id": b}) for b in batch_ids],
    )


def take_batch(conn: psycopg.Connection, session_id: str, batch_id: str) -> list[dict]:
    """The records of an insert batch, locked until the transaction ends; payloads are cleared."""
    rows = conn.execute(
        "SELECT payload FROM record_buffer WHERE session_id = %s AND batch_id = %s "
        "AND payload IS NOT NULL ORDER BY sort_key FOR UPDATE",
        (session_id, batch_id),
    ).fetchall()
    conn.execute(
        "UPDATE record_buffer SET payload = NULL WHERE session_id = %s AND batch_id = %s",
        (session_id, batch_id),
    )
    return [record for (payload,) in rows for record in _decode(payload)]
