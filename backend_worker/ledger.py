"""The work ledger of a scan session: its units (the scan_units table).

Every unit of work is registered pending before its message is sent and marked done exactly
once, with its counts. A session is finished when no unit is pending and no extracted record
waits in the buffer (backend_worker.record_buffer), which holds however often tasks are
redelivered. The sessions themselves: backend_worker.sessions.
"""

from __future__ import annotations

import json
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
            [Jsonb(_message(u), dumps=json_bytes) if u.task else None for u in units],
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
    trip; None for an unknown session. Every task asks this when it is done (see units.handoff.advance)."""
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


# orjson writes and reads a chunk's JSON in a fifth of the json module's time (~1.4 CPU s of the
# extract workers and ~0.7 of the insert workers per 200,000 files). It refuses a path that is not
# UTF-8 (its surrogate escapes), which json writes as \u escapes: such a chunk goes through json
# both ways. (orjson also refuses ints beyond 64 bits, and would read them back as floats: a record
# holds none, tags.py bounds tag numbers to PostgreSQL's integer.)
def json_bytes(data) -> bytes:
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return json.dumps(data).encode()
