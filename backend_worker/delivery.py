"""At-least-once delivery owned by the ledger, not by Redis' visibility timeout.

Redis (through kombu) can lose a message or sit on it for the whole visibility timeout (30 min by
default): a worker killed with `kill -9` leaves what it held in the `unacked` hash until then, a
broker restart makes the workers' restore of their messages fail, and a host that dies just after
popping a message loses it for good. The ledger knows better: every unit is registered with its
message and task id before the message is sent (`ledger.register_units`), and marked done once.

So every worker process runs a reconciler thread (`start_reconciler`) that
- every HEARTBEAT_SECONDS records in `worker_heartbeats` that it lives and which task ids it holds
  (waiting for a pool process, running, or waiting for a retry's countdown), and
- every PASS_SECONDS, in whichever worker takes the lock first, runs `reconcile`: a pending unit of
  a running session whose task is held by no live worker and waits in no queue is suspect; still
  so CONFIRM_SECONDS later (a message between a queue and a worker's next heartbeat is seen by
  then), it is sent again under a new task id. A running session with nothing pending in which
  nothing moved for NUDGE_SECONDS is sent its next step again (a flush or the final step).

Every worker runs the thread, so no single process's death stops recovery. Tasks are idempotent
and skip a unit that is done, so a re-sent unit that was not lost after all, or the old message
Redis restores half an hour later, changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
import redis

from backend_worker import db, ledger
from backend_worker.pipeline import FINALIZE_TASK, FLUSH_TASK, STAGE_QUEUES, SendTask

log = logging.getLogger("backend_worker.delivery")

HEARTBEAT_SECONDS = 2
LIVE_SECONDS = 10  # a worker not heard of for this long is dead: what it held is lost
GRACE_SECONDS = 15  # a unit's message is not looked for until it is this old
CONFIRM_SECONDS = 15  # a unit found nowhere is re-sent when still found nowhere this much later
PASS_SECONDS = 5
NUDGE_SECONDS = 30
# A unit lost this often is left alone (a message that kills whoever takes it is no reason to
# kill workers forever); its session is then failed as abandoned after the stall limit.
MAX_RESENDS = 5

_RECONCILE_LOCK = 0x53_42_52_43  # advisory lock: one reconciliation pass at a time


def beat(conn: psycopg.Connection, instance: str, worker: str, held: Iterable[str]) -> None:
    """Record that this worker process lives and holds these task ids."""
    conn.execute(
        "INSERT INTO worker_heartbeats (instance, worker, pid, held) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (instance) DO UPDATE SET seen_at = now(), held = EXCLUDED.held",
        (instance, worker, os.getpid(), list(held)),
    )


def queued_task_ids(broker: redis.Redis, queues: Iterable[str], page: int = 500) -> set[str]:
    """Ids of the tasks whose messages wait in these queues (kombu keeps a queue as a Redis list
    of JSON messages; the task id is in the headers)."""
    found = set()
    for queue in queues:
        start = 0
        while True:
            # Read from the head, where new messages are pushed: a push moves what was read one
            # place on (read twice, harmless); workers pop from the tail, so nothing is skipped.
            chunk = broker.lrange(queue, start, start + page - 1)
            for raw in chunk:
                try:
                    found.add(json.loads(raw)["headers"]["id"])
                except (ValueError, KeyError, TypeError):
                    continue
            if len(chunk) < page:
                break
            start += page
    return found


@dataclass(frozen=True)
class Resent:
    session_id: str
    unit_id: str
    stage: str
    task_id: str
    reason: str


@dataclass
class PassReport:
    suspects: int = 0
    resent: list[Resent] | None = None
    nudged: list[tuple[str, str]] | None = None  # (session, task sent)


def reconcile(
    conn: psycopg.Connection,
    broker: redis.Redis,
    send: SendTask,
    *,
    grace: float = GRACE_SECONDS,
    confirm: float = CONFIRM_SECONDS,
    live: float = LIVE_SECONDS,
    nudge: float = NUDGE_SECONDS,
    every: float = PASS_SECONDS,
) -> PassReport | None:
    """One reconciliation pass (see the module's docstring); None when another worker holds the
    lock or ran a pass less than `every` seconds ago. `conn` must be in autocommit mode."""
    with conn.transaction():
        if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_RECONCILE_LOCK,)).fetchone()[0]:
            return None
        due = conn.execute(
            "UPDATE delivery_passes SET last_pass = now() "
            "WHERE id = 1 AND last_pass < now() - make_interval(secs => %s) RETURNING 1",
            (max(every - 0.5, 0),),
        ).fetchone()
        if not due:
            return None
        report = PassReport(resent=[], nudged=[])
        _resend_lost_units(conn, broker, send, report, grace=grace, confirm=confirm, live=live)
        _nudge_idle_sessions(conn, send, report, nudge=nudge)
        conn.execute("DELETE FROM worker_heartbeats WHERE seen_at < now() - interval '1 day'")
    for unit in report.resent:
        log.warning(
            "re-sent %s unit %s of session %s as task %s: %s",
            unit.stage, unit.unit_id, unit.session_id, unit.task_id, unit.reason,
        )  # fmt: skip
    for session_id, task in report.nudged:
        log.warning(
            "session %s: nothing pending and nothing moved for %d s; sent %s", session_id, nudge, task
        )
    return report


# Pending units of running sessions, sent more than `grace` seconds ago, whose task no live worker holds.
_UNHELD = """
SELECT u.session_id::text, u.unit_id, u.stage, u.task_id, u.message, u.resent,
       u.suspect_since IS NOT NULL AND u.suspect_since < now() - make_interval(secs => %(confirm)s)
FROM scan_units u JOIN scan_sessions s ON s.id = u.session_id AND s.status = 'running'
WHERE u.done_at IS NULL AND u.task_id IS NOT NULL AND u.message IS NOT NULL
  AND u.sent_at < now() - make_interval(secs => %(grace)s)
  AND NOT EXISTS (SELECT 1 FROM worker_heartbeats w
                  WHERE w.seen_at > now() - make_interval(secs => %(live)s) AND u.task_id = ANY(w.held))
"""


def _resend_lost_units(conn, broker, send: SendTask, report: PassReport, *, grace, confirm, live) -> None:
    unheld = conn.execute(_UNHELD, {"grace": grace, "confirm": confirm, "live": live}).fetchall()
    queues = {STAGE_QUEUES.get(stage, "deferred") for _, _, stage, *_ in unheld}
    queued = queued_task_ids(broker, sorted(queues)) if unheld else set()
    lost = [row for row in unheld if row[3] not in queued]
    report.suspects = len(lost)
    keys = ([row[0] for row in lost], [row[1] for row in lost])
    # Found again (queued, held, done) since they were suspected: no longer suspect.
    conn.execute(
        "UPDATE scan_units SET suspect_since = NULL WHERE suspect_since IS NOT NULL "
        "AND (session_id, unit_id) NOT IN (SELECT * FROM unnest(%s::uuid[], %s::text[]))",
        keys,
    )
    conn.execute(
        "UPDATE scan_units u SET suspect_since = now() FROM unnest(%s::uuid[], %s::text[]) AS v(s, id) "
        "WHERE u.session_id = v.s AND u.unit_id = v.id AND u.suspect_since IS NULL",
        keys,
    )
    confirmed = [row for row in lost if row[6] and row[5] < MAX_RESENDS]
    holders = _last_holders(conn, [row[3] for row in confirmed], live)
    for session_id, unit_id, stage, task_id, message, _, _ in confirmed:
        unit = ledger.unit_from_row(unit_id, stage, str(uuid.uuid4()), message)
        conn.execute(
            "UPDATE scan_units SET task_id = %s, sent_at = now(), suspect_since = NULL, resent = resent + 1 "
            "WHERE session_id = %s AND unit_id = %s",
            (unit.task_id, session_id, unit_id),
        )
        send(unit.task, unit.kwargs, unit.task_id)
        holder = holders.get(task_id)
        if holder:
            reason = f"its worker {holder[0]} (pid {holder[1]}) stopped: no heartbeat for {holder[2]:.0f} s"
        else:
            reason = "its message is in no queue and no live worker holds it (lost by the broker)"
        report.resent.append(Resent(session_id, unit_id, stage, unit.task_id, reason))


def _last_holders(conn, task_ids: list[str], live: float) -> dict[str, tuple[str, int, float]]:
    """task id -> (worker, pid, seconds since its last heartbeat) for tasks a dead worker held."""
    if not task_ids:
        return {}
    rows = conn.execute(
        "SELECT t, w.worker, w.pid, extract(epoch FROM now() - w.seen_at)::float8 "
        "FROM worker_heartbeats w, unnest(w.held) AS t "
        "WHERE t = ANY(%s) AND w.seen_at <= now() - make_interval(secs => %s) ORDER BY w.seen_at",
        (task_ids, live),
    ).fetchall()
    return {task_id: (worker, pid, age) for task_id, worker, pid, age in rows}


_IDLE_SESSIONS = """
SELECT s.id::text, s.phase,
       EXISTS (SELECT 1 FROM record_buffer b WHERE b.session_id = s.id AND b.batch_id IS NULL)
FROM scan_sessions s
WHERE s.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM scan_units u WHERE u.session_id = s.id AND u.done_at IS NULL)
  AND greatest(s.started_at, s.nudged_at,
               (SELECT max(greatest(u.created_at, u.done_at, u.sent_at)) FROM scan_units u
                WHERE u.session_id = s.id))
      < now() - make_interval(secs => %s)
"""


def _nudge_idle_sessions(conn, send: SendTask, report: PassReport, *, nudge) -> None:
    """A session with nothing pending that did not close: the message of its next step (a flush
    or the final step, which are not units) was lost. Both are idempotent: send it again."""
    for session_id, phase, unbatched in conn.execute(_IDLE_SESSIONS, (nudge,)).fetchall():
        task = FLUSH_TASK if unbatched and phase == "scanning" else FINALIZE_TASK
        conn.execute(
            "UPDATE scan_sessions SET nudged_at = now(), nudges = nudges + 1 WHERE id = %s", (session_id,)
        )
        send(task, {"session_id": session_id}, str(uuid.uuid4()))
        report.nudged.append((session_id, task))


# What resent_counts calls the next steps sent again (flush, final step): they are not units.
NEXT_STEP = "next_step"


def resent_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Messages sent again so far, by stage, and NEXT_STEP (every session, closed ones included)."""
    rows = conn.execute(
        "SELECT stage, sum(resent) FROM scan_units WHERE resent > 0 GROUP BY stage "
        "UNION ALL SELECT %s, sum(nudges) FROM scan_sessions WHERE nudges > 0",
        (NEXT_STEP,),
    ).fetchall()
    return {stage: int(n) for stage, n in rows if n}


# --- the reconciler thread in every worker -------------------------------------------------------------


class Reconciler:
    """Heartbeats and reconciliation passes of one worker process (a daemon thread)."""

    def __init__(self, worker: str, held: Callable[[], Iterable[str]], send: SendTask):
        self.worker = worker
        self.held = held
        self.send = send
        self.instance = f"{worker}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.stopped = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._broker: redis.Redis | None = None

    def run(self) -> None:
        next_pass = time.monotonic() + PASS_SECONDS
        beating_since = None
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                conn = self._connection()
                beat(conn, self.instance, self.worker, self.held())
                beating_since = beating_since or time.monotonic()
                # After a database outage (or this worker's start) every live worker's heartbeat is
                # old until it could write again: judge who holds what only once all had the time.
                settled = time.monotonic() - beating_since >= LIVE_SECONDS + HEARTBEAT_SECONDS
                if settled and time.monotonic() >= next_pass:
                    next_pass = time.monotonic() + PASS_SECONDS
                    reconcile(conn, self._redis(), self.send)
            except Exception as exc:  # an outage: the next beat tries again (the workers log outages)
                log.debug("reconciler: %s", exc)
                beating_since = None
                self._drop()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = db.connect(autocommit=True)
        return self._conn

    def _redis(self) -> redis.Redis:
        if self._broker is None:
            from backend_worker.config import broker_client, settings

            self._broker = broker_client(settings(), socket_timeout=10, socket_connect_timeout=5)
        return self._broker

    def _drop(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


def start_reconciler(worker: str, held: Callable[[], Iterable[str]], send: SendTask) -> Reconciler:
    reconciler = Reconciler(worker, held, send)
    threading.Thread(target=reconciler.run, name="soniquebay-delivery", daemon=True).start()
    return reconciler
