"""Scan sessions and their work ledger (see the scan_units table).

Every unit of work is registered pending before its message is sent and marked done exactly
once, with its counts. A session is finished when no unit is pending and no extracted record
waits in the buffer, which holds however often tasks are redelivered.
"""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass

import orjson
import psycopg
from psycopg.types.json import Jsonb

from backend_worker import pipeline
from backend_worker.pipeline import UPSTREAM_STAGES, Unit

# What a session did, summed over its units: files found, unchanged, read, written, in error; files
# recognised at a new path, tracks whose file came back, marked missing, purged after the retention.
COUNT_NAMES = (
    "discovered",
    "unchanged",
    "extracted",
    "inserted",
    "errors",
    "moved",
    "returned",
    "missing",
    "purged",
)
# NOTIFY channel: a session's id is announced here when it closes (`soniquebay scan --wait` listens).
CLOSED_CHANNEL = "soniquebay_session_closed"


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


def register_units(conn: psycopg.Connection, session_id: str, units: list[Unit]) -> list[Unit]:
    """Create pending units with their messages and task ids, before the messages are sent.
    Returns the units to send now: the pending ones with a message, under the task id the ledger
    holds (a unit registered before, by an earlier run of the same task, keeps its first id)."""
    if not units:
        return []
    rows = conn.execute(
        "INSERT INTO scan_units (session_id, unit_id, stage, task_id, message, sent_at) "
        "SELECT %s, u, s, t, m, now() FROM unnest(%b::text[], %b::text[], %b::text[], %b::jsonb[]) "
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
            # orjson: an extract unit's message holds 1,000 paths (~70 KB), and json took a tenth
            # of the walk workers' CPU writing them.
            [Jsonb(_message(u), dumps=_json_bytes) if u.task else None for u in units],
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


def claim_unsent(
    conn: psycopg.Connection, session_id: str, stage: str, unit_ids: list[str] | None = None
) -> list[Unit]:
    """Units of `stage` (of these ids, or all) registered and not sent yet, marked sent in the same
    statement: of two tasks that would send one (the task that cut an insert batch, another
    task's `advance`), one sends it. One that dies before sending leaves it to the reconciler
    (backend_worker.delivery)."""
    sql = (
        "UPDATE scan_units SET sent = true "
        "WHERE session_id = %s AND stage = %s AND NOT sent AND done_at IS NULL AND message IS NOT NULL "
    )
    parameters: tuple = (session_id, stage)
    if unit_ids is not None:
        sql += "AND unit_id = ANY(%b) "
        parameters += (unit_ids,)
    rows = conn.execute(sql + "RETURNING unit_id, stage, task_id, message", parameters).fetchall()
    return [unit_from_row(*row) for row in rows]


def release_claim(conn: psycopg.Connection, session_id: str, unit_ids: list[str]) -> None:
    """Units claimed by claim_unsent whose messages could not be sent: someone else may send them."""
    if unit_ids:
        conn.execute(
            "UPDATE scan_units SET sent = false WHERE session_id = %s AND unit_id = ANY(%b)",
            (session_id, unit_ids),
        )


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


# The four counts of Pending, for the session whose id is {session} in the enclosing statement.
_PENDING_COUNTS = """
  (SELECT count(*) FROM scan_units WHERE session_id = {session} AND done_at IS NULL AND stage = ANY(%(up)s)),
  (SELECT count(*) FROM record_buffer WHERE session_id = {session} AND batch_id IS NULL),
  (SELECT count(*) FROM scan_units WHERE session_id = {session} AND done_at IS NULL AND stage = %(insert)s),
  (SELECT count(*) FROM scan_units WHERE session_id = {session} AND done_at IS NULL AND stage = %(cover)s)
"""


def _pending_parameters(session_id: str) -> dict:
    return {
        "s": session_id,
        "up": list(UPSTREAM_STAGES),
        "insert": pipeline.INSERT.name,
        "cover": pipeline.COVER.name,
    }


def pending(conn: psycopg.Connection, session_id: str) -> Pending:
    sql = "SELECT " + _PENDING_COUNTS.format(session="%(s)s")
    return Pending(*conn.execute(sql, _pending_parameters(session_id)).fetchone())


def next_steps(conn: psycopg.Connection, session_id: str) -> tuple[str, str, Pending, bool] | None:
    """(status, phase, what is pending, whether insert units were cut but never sent) in one round
    trip; None for an unknown session. Every task asks this when it is done (see steps.advance)."""
    sql = (
        "SELECT s.status, s.phase, "
        + _PENDING_COUNTS.format(session="s.id")
        + ", EXISTS(SELECT 1 FROM scan_units WHERE session_id = s.id AND stage = %(insert)s "
        "AND NOT sent AND done_at IS NULL) FROM scan_sessions s WHERE s.id = %(s)s"
    )
    row = conn.execute(sql, _pending_parameters(session_id)).fetchone()
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
    """A chunk of records as JSON. Records with the same keys (all of extract's) are stored as
    {"keys": [...], "rows": [[...], ...]}: half the size, much faster to write and read back.
    PostgreSQL compresses it with lz4 (migration 0007), for ~0.4 CPU s per 200,000 files less
    than zlib in the workers cost, reading back included."""
    keys = tuple(records[0]) if records else ()
    if all(tuple(r) == keys for r in records):
        data = {"keys": keys, "rows": [list(r.values()) for r in records]}
    else:
        data = records
    return _json_bytes(data)


# orjson writes and reads a chunk's JSON in a fifth of the json module's time (~1.4 CPU s of the
# extract workers and ~0.7 of the insert workers per 200,000 files). It refuses a path that is not
# UTF-8 (its surrogate escapes), which json writes as \u escapes: such a chunk goes through json
# both ways. (orjson also refuses ints beyond 64 bits, and would read them back as floats: a record
# holds none, tags.py bounds tag numbers to PostgreSQL's integer.)
def _json_bytes(data) -> bytes:
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return json.dumps(data).encode()


def _decode(payload: bytes) -> list[dict]:
    if payload[:1] not in (b"{", b"["):  # zlib, as versions before 0007 wrote
        payload = zlib.decompress(payload)
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
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
    units = []
    for members in batches:
        unit = pipeline.insert_batch(session_id)
        conn.execute(
            "UPDATE record_buffer SET batch_id = %s WHERE session_id = %s AND unit_id = ANY(%b)",
            (unit.id, session_id, members),
        )
        units.append(unit)
    return register_units(conn, session_id, units)


def take_batch(conn: psycopg.Connection, session_id: str, batch_id: str) -> list[dict]:
    """The records of an insert batch, locked until the transaction ends; payloads are cleared."""
    rows = conn.execute(
        "SELECT payload FROM record_buffer WHERE session_id = %s AND batch_id = %s "
        "AND payload IS NOT NULL ORDER BY sort_key FOR UPDATE",
        (session_id, batch_id),
        binary=True,  # the bytes as they are, not twice their size in hex
    ).fetchall()
    conn.execute(
        "UPDATE record_buffer SET payload = NULL WHERE session_id = %s AND batch_id = %s",
        (session_id, batch_id),
    )
    return [record for (payload,) in rows for record in _decode(payload)]
