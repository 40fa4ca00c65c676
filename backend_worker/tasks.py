"""Celery tasks: thin wrappers that take ids and paths, call the stage functions, record the
work in the ledger and hand off to the next stage.

Every task may run twice (acks_late, redelivery after a worker died): each one is written so a
second run changes nothing (see backend_worker.ledger).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import threading
import zlib

import kombu.exceptions
import psycopg
import redis.exceptions
from celery import Task
from celery.concurrency import get_implementation
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded
from celery.signals import task_revoked, worker_init, worker_ready
from celery.utils.log import get_task_logger

from backend_worker import db, delivery, hangs, ledger
from backend_worker.app import app
from backend_worker.config import queue_time_limits, settings, where
from backend_worker.scans import is_within, one_line
from backend_worker.stages import covers, insert, scan, warmup

log = get_task_logger(__name__)

QUEUE_TIME_LIMITS = queue_time_limits()  # read once: the task decorators below need them

# Extra walk tasks a walk hands its remaining folders to once it has seen enough entries.
WALK_FANOUT = 4
COVER_CHUNK_ALBUMS = 200
VANISHED_REASON = "file vanished"

TRANSIENT_ERRORS = (
    *db.TRANSIENT_DB_ERRORS,
    # An album or artist removed by a concurrent session's clean-up: the retry recreates it.
    psycopg.errors.ForeignKeyViolation,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
)


class PipelineTask(Task):
    """The one retry policy: transient database or broker errors retry with exponential
    backoff and jitter; anything else is permanent and recorded by `on_permanent_failure`."""

    abstract = True
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True
    max_retries = 12
    ignore_result = True

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        discard_busy_connection()
        try:
            self.on_permanent_failure(exc, **kwargs)
        except Exception:  # the database may be what failed; the session watchdog catches up
            log.exception("could not record the failure of %s[%s]", self.name, task_id)

    def on_permanent_failure(self, exc: BaseException, **kwargs) -> None:
        session_id = kwargs.get("session_id")
        if session_id:
            with transaction() as c:
                ledger.fail_session(c, session_id, f"{self.name} failed: {short_error(exc)}")


@task_revoked.connect
def _record_revoked(sender=None, request=None, terminated=False, expired=False, **_) -> None:
    """A task revoked by an operator (Flower, `celery control revoke`), with or without terminate,
    never runs its own failure hook: record it like a permanent failure, so its files become error
    records (`soniquebay retry-failed` re-queues them) and its session can still close."""
    if not isinstance(sender, PipelineTask) or request is None:
        return
    how = "expired" if expired else "revoked and terminated" if terminated else "revoked"
    try:
        sender.on_permanent_failure(TaskRevokedError(f"{how} by an operator"), **(request.kwargs or {}))
    except Exception:
        log.exception("could not record the revoked task %s[%s]", sender.name, request.id)


@worker_init.connect
def _warm_up(sender=None, **kwargs) -> None:
    """Parse a few samples in the main process, before the prefork pool forks its children, so
    they start with warm, specialised extract code (see backend_worker.stages.warmup). A thread
    pool (the queues that wait on I/O) parses nothing: it skips this and never loads mutagen."""
    if issubclass(get_implementation(sender.pool_cls), ThreadPool):  # a name until the worker resolves it
        return
    warmup.warm_up()
    # What the main process holds now is shared with the prefork children: keep the collector's
    # bookkeeping off those pages so they stay shared (copy-on-write) instead of being copied into
    # every child by its first collection.
    gc.freeze()


def _extract():
    """The extract stage, imported on first use: mutagen costs a thread-pool worker memory for nothing."""
    from backend_worker.stages import extract

    return extract


# The worker's own messages (not about one task): go to the worker's log like Celery's.
worker_log = logging.getLogger("backend_worker.worker")
DB_CHECK_FIRST_WAIT = 2  # seconds before the second attempt; doubled each time
DB_CHECK_MAX_WAIT = 300


def check_database(first_wait: float = DB_CHECK_FIRST_WAIT, max_wait: float = DB_CHECK_MAX_WAIT) -> None:
    """Try the database until it answers, one log line per failed attempt (where, and why; never
    the password). The worker itself keeps running whatever happens here: with a wrong URL or
    password the tasks it takes retry with backoff, and the log says why in one line."""
    wait = first_wait
    while True:
        url = None
        try:
            url = settings().database_url
            with db.connect(url) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # any failure here is logged, never raised into the worker
            shown = where(url) if url else "(unknown URL)"
            worker_log.error(
                "cannot use PostgreSQL at %s: %s; trying again in %d s", shown, one_line(exc), wait
            )
            threading.Event().wait(wait)
            wait = min(wait * 2, max_wait)
            continue
        if wait != first_wait:
            worker_log.warning("PostgreSQL at %s answers again", where(url))
        return


@worker_ready.connect
def _watch_database(sender=None, **kwargs) -> None:
    """Once the worker is up (its pool forked), check the database in the background, and start
    the heartbeat and the recovery of lost units (backend_worker.delivery)."""
    threading.Thread(target=check_database, name="soniquebay-db-check", daemon=True).start()
    delivery.start_watch(sender.hostname, _held_task_ids, _send)
    if isinstance(sender.pool, ThreadPool):  # prefork enforces the time limits itself
        hangs.Watchdog(_cancel_query, _end_session).start()


def _held_task_ids() -> tuple[str, ...]:
    """Ids of the tasks this worker holds: waiting for a pool process, running, or waiting for a
    retry's countdown. Celery's `requests` is keyed by task id, and a retry keeps the id: the old
    request's end removes the retry's entry there, so the request sets are read too."""
    from celery.worker import state

    for _ in range(10):
        try:
            held = set(state.requests)
            for requests in (state.reserved_requests, state.active_requests, state.scheduled_requests):
                held.update(request.id for request in tuple(requests))
            return tuple(held)
        except RuntimeError:  # changed by the consumer while being read: read again
            continue
    return tuple(state.requests)


def _send(task: str, kwargs: dict, task_id: str) -> None:
    app.send_task(task, kwargs=kwargs, task_id=task_id, kwargsrepr=_summary(kwargs))


def send_units(units: list[ledger.Unit]) -> None:
    """Send the messages of units the ledger just registered, under their recorded task ids."""
    for unit in units:
        _send(unit.task, unit.kwargs, unit.task_id)


def _summary(kwargs: dict) -> str:
    """What Flower shows of a task's arguments: ids, and a list of paths as a count and a folder."""
    shown = {}
    for key, value in kwargs.items():
        if isinstance(value, list) and len(value) > 3:
            value = f"{len(value)} {'files' if key == 'paths' else key} from {os.path.dirname(value[0])!r}"
        shown[key] = value
    return repr(shown)


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# One connection per thread that runs tasks (a prefork child has one; a thread pool one per
# thread: a psycopg connection must not run two transactions at once), reused across tasks and
# replaced when it breaks. Keyed by thread id so the time-limit watchdog can cancel a thread's query.
_connections: dict[int, psycopg.Connection] = {}


def connection() -> psycopg.Connection:
    me = threading.get_ident()
    conn = _connections.get(me)
    if conn is None or conn.closed or conn.broken:
        conn = _connections[me] = db.connect(autocommit=True)
    return conn


def discard_busy_connection() -> None:
    """A task stopped mid-query (its soft time limit interrupts whatever runs, even a wait for a
    lock) leaves the connection busy or in a failed transaction: the next one starts afresh."""
    conn = _connections.get(threading.get_ident())
    idle = psycopg.pq.TransactionStatus.IDLE
    if conn is not None and not conn.closed and conn.info.transaction_status != idle:
        conn.close()  # the server ends the query and frees the session's locks
        _connections.pop(threading.get_ident(), None)


def _cancel_query(thread_id: int) -> None:
    """Cancel what that thread's connection runs (from another thread: the time-limit watchdog)."""
    conn = _connections.get(thread_id)
    if conn is not None and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            conn.cancel_safe(timeout=10)


def _end_session(thread_id: int) -> None:
    """Terminate that thread's server session, from this thread's own connection: its transaction
    ends and its locks are freed, as when a prefork child is killed. (Closing the connection here
    would race the stuck thread inside libpq.)"""
    conn = _connections.get(thread_id)
    if conn is not None and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            connection().execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


class transaction:
    """`with transaction() as c:` one transaction on this process's connection."""

    def __enter__(self) -> psycopg.Connection:
        self._conn = connection()
        self._tx = self._conn.transaction()
        self._tx.__enter__()
        return self._conn

    def __exit__(self, *exc_info):
        return self._tx.__exit__(*exc_info)


def pipeline_task(name: str, base: type[PipelineTask] = PipelineTask):
    queue = name.split(".", 1)[0]
    limit = QUEUE_TIME_LIMITS[queue]
    return app.task(name=name, base=base, bind=True, time_limit=limit, soft_time_limit=limit - 30)


# --- scan ------------------------------------------------------------------------------------------


def _load_known(c: psycopg.Connection, dirs: list[str]) -> tuple[dict, dict]:
    """(path -> (mtime_ns, size), path -> dir) for tracks and failed files in these folders."""
    known, known_dirs = {}, {}
    rows = c.execute(
        "SELECT path, dir, mtime_ns, size FROM tracks WHERE dir = ANY(%(d)s) "
        "UNION ALL SELECT path, dir, mtime_ns, size FROM file_errors "
        "WHERE stage <> 'scan' AND dir = ANY(%(d)s)",
        {"d": dirs},
    ).fetchall()
    for path, folder, mtime_ns, size in rows:
        known[path] = (mtime_ns, size)  # an error row comes last: it is the newer fact
        known_dirs[path] = folder
    return known, known_dirs


def _root_problem(c: psycopg.Connection, root: str) -> str | None:
    if not os.path.isdir(root):
        return f"library root {root} does not exist or is not a folder"
    # An empty folder below a library root was emptied; an empty library root may be unmounted.
    root = next((r for r in settings().library_roots if is_within(root, r)), root)
    try:
        empty = not any(True for _ in os.scandir(root))
    except OSError as exc:
        return f"library root {root} cannot be listed: {exc.strerror or exc}"
    if empty:
        held = c.execute(
            "SELECT count(*) FROM tracks WHERE dir = %s OR starts_with(dir, %s)", (root, root + "/")
        ).fetchone()[0]
        if held:
            return f"library root {root} is empty but the library holds {held} tracks there: is it mounted?"
    return None


@pipeline_task("scan.walk")
def walk(self, session_id: str, unit_id: str, dirs: list[str], root: bool = False) -> dict:
    conf = settings()
    with transaction() as c:
        if not ledger.is_running(c, session_id) or ledger.unit_done(c, session_id, unit_id):
            return {"session": session_id, "skipped": "session ended or unit done"}
        problem = _root_problem(c, dirs[0]) if root else None
        if problem:
            ledger.fail_session(c, session_id, problem)
            return {"session": session_id, "failed": problem}
    found = scan.walk(dirs, conf.walk_unit_entries)
    with transaction() as c:
        known, known_dirs = _load_known(c, found.listed_dirs)
    plan = scan.compare(found.files, found.listed_dirs, known, known_dirs)
    extract_chunks = scan.chunks([f.path for f in plan.changed], conf.extract_chunk_files)
    walk_groups = scan.split_dirs(found.pending_dirs, WALK_FANOUT)
    extract_units = [f"{unit_id}/x{i}" for i in range(len(extract_chunks))]
    walk_units = [f"{unit_id}/w{i}" for i in range(len(walk_groups))]
    problems = [(path, folder, reason) for path, folder, reason in found.problems]
    problems += [(folder, os.path.dirname(folder), reason) for folder, reason in found.failed_dirs]
    children = [
        ledger.Unit(u, "extract", "extract.files", {"session_id": session_id, "unit_id": u, "paths": paths})
        for u, paths in zip(extract_units, extract_chunks, strict=True)
    ] + [
        ledger.Unit(u, "walk", "scan.walk", {"session_id": session_id, "unit_id": u, "dirs": group})
        for u, group in zip(walk_units, walk_groups, strict=True)
    ]
    with transaction() as c:
        to_send = ledger.register_units(c, session_id, children)
        c.execute(
            "INSERT INTO session_dirs (session_id, dir, listed) SELECT %s, d, l "
            "FROM unnest(%s::text[], %s::boolean[]) AS t(d, l) ON CONFLICT DO NOTHING",
            (
                session_id,
                found.listed_dirs + [d for d, _ in found.failed_dirs],
                [True] * len(found.listed_dirs) + [False] * len(found.failed_dirs),
            ),
        )
        c.execute(
            "INSERT INTO session_vanished (session_id, path) SELECT %s, unnest(%s::text[]) "
            "ON CONFLICT DO NOTHING",
            (session_id, plan.vanished),
        )
        # Problems found while listing are refreshed on every scan of their folder.
        c.execute("DELETE FROM file_errors WHERE stage = 'scan' AND dir = ANY(%s)", (found.listed_dirs,))
        record_errors(c, session_id, "scan", [{"path": p, "dir": d, "error": r} for p, d, r in problems])
    send_units(to_send)
    counts = {"discovered": len(found.files), "unchanged": plan.unchanged, "errors": len(problems)}
    with transaction() as c:
        ledger.finish_unit(c, session_id, unit_id, counts)
    advance(session_id)
    return {"session": session_id, **counts, "to_extract": len(plan.changed), "subtrees": len(walk_units)}


def record_errors(c: psycopg.Connection, session_id: str, stage: str, errors: list[dict]) -> None:
    if not errors:
        return
    c.execute(
        "INSERT INTO file_errors (path, dir, size, mtime_ns, reason, stage, session_id) "
        "SELECT *, %s, %s FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[]) "
        "ON CONFLICT (path) DO UPDATE SET dir = EXCLUDED.dir, size = EXCLUDED.size, "
        "mtime_ns = EXCLUDED.mtime_ns, stage = EXCLUDED.stage, reason = EXCLUDED.reason, "
        "session_id = EXCLUDED.session_id, at = now()",
        (
            stage,
            session_id,
            [e["path"] for e in errors],
            [e.get("dir") or os.path.dirname(e["path"]) for e in errors],
            [e.get("size") for e in errors],
            [e.get("mtime_ns") for e in errors],
            [e["error"] for e in errors],
        ),
    )


# --- extract ---------------------------------------------------------------------------------------


class ExtractTask(PipelineTask):
    abstract = True

    def on_permanent_failure(self, exc: BaseException, **kwargs) -> None:
        # A chunk that failed as a whole (time limit, a crash in a reader): its files become
        # error records and the session goes on.
        session_id, unit_id, paths = kwargs["session_id"], kwargs["unit_id"], kwargs["paths"]
        if isinstance(exc, TimeLimitExceeded | SoftTimeLimitExceeded):
            reason = f"not read: its extract task ran past the {self.time_limit} s time limit"
        else:
            reason = f"extract task failed: {short_error(exc)}"
        with transaction() as c:
            record_errors(c, session_id, "extract", [{"path": p, "error": reason} for p in paths])
            ledger.finish_unit(c, session_id, unit_id, {"errors": len(paths)})
        advance(session_id)


# Advisory lock class of the extract CPU slots of this host (the object id is the slot number).
_SLOT_LOCK_CLASS = zlib.crc32(f"soniquebay-extract:{socket.gethostname()}".encode()) - 2**31


@contextlib.contextmanager
def cpu_slot(slots: int):
    """Hold one of this host's `slots` extract slots (none with 0): mutagen's parsing is CPU-bound,
    so more extracts at once than cores only adds context switches and cache misses (measured:
    16 extract processes on 2 cores spent 1.75x the CPU time of 2). A PostgreSQL session-level
    advisory lock, so a worker that dies frees its slot. Waits in the server, FIFO, without CPU."""
    if slots <= 0:
        yield
        return
    c = connection()
    free = c.execute(
        "SELECT s FROM generate_series(0, %s - 1) AS s WHERE pg_try_advisory_lock(%s, s) LIMIT 1",
        (slots, _SLOT_LOCK_CLASS),
    ).fetchone()
    if free:
        slot = free[0]
    else:
        slot = os.getpid() % slots
        c.execute("SELECT pg_advisory_lock(%s, %s)", (_SLOT_LOCK_CLASS, slot))
    try:
        yield
    finally:
        if not c.closed and not c.broken:
            c.execute("SELECT pg_advisory_unlock(%s, %s)", (_SLOT_LOCK_CLASS, slot))


@pipeline_task("extract.files", base=ExtractTask)
def files(self, session_id: str, unit_id: str, paths: list[str]) -> dict:
    if not ledger.is_running(connection(), session_id) or ledger.unit_done(connection(), session_id, unit_id):
        return {"session": session_id, "skipped": "session ended or unit done"}
    with cpu_slot(settings().extract_slots):
        records, errors = _extract().extract_paths(paths)
    vanished = [e["path"] for e in errors if e["error"] == VANISHED_REASON]
    errors = [e for e in errors if e["error"] != VANISHED_REASON]
    collect_unit = f"{unit_id}/c"
    to_send = []
    with transaction() as c:
        if records:
            # The records go straight into the buffer; the batch stage gets only the unit's id
            # (a 250-record chunk is ~250 KB of JSON: through Redis it cost more than reading it).
            collect_message = {"session_id": session_id, "unit_id": collect_unit}
            to_send = ledger.register_units(
                c, session_id, [ledger.Unit(collect_unit, "collect", "batch.collect", collect_message)]
            )
            ledger.buffer_records(c, session_id, collect_unit, records)
        record_errors(c, session_id, "extract", errors)
        if vanished:
            c.execute(
                "INSERT INTO session_vanished (session_id, path) SELECT %s, unnest(%s::text[]) "
                "ON CONFLICT DO NOTHING",
                (session_id, vanished),
            )
        ledger.finish_unit(c, session_id, unit_id, {"extracted": len(records), "errors": len(errors)})
    # Sent after the commit: the collect unit stays pending (and the session open) until its task ran.
    send_units(to_send)
    advance(session_id)
    return {
        "session": session_id,
        "extracted": len(records),
        "errors": len(errors),
        "vanished": len(vanished),
    }


# --- batch -----------------------------------------------------------------------------------------


@pipeline_task("batch.collect")
def collect(self, session_id: str, unit_id: str, records: list[dict] | None = None) -> dict:
    """An extract chunk's records are in the buffer: cut the insert batches that are full."""
    with transaction() as c:
        if not ledger.is_running(c, session_id) or ledger.unit_done(c, session_id, unit_id):
            return {"session": session_id, "skipped": "session ended or unit done"}
        if records is not None:  # a message from an earlier version still carries them
            ledger.buffer_records(c, session_id, unit_id, records)
        ledger.finish_unit(c, session_id, unit_id, {})
        batches = ledger.cut_batches(c, session_id, settings().insert_batch_rows, flush=False)
    send_inserts(session_id, batches)
    advance(session_id)
    return {"session": session_id, "batches": len(batches)}


@pipeline_task("batch.flush")
def flush(self, session_id: str) -> dict:
    batches = cut(session_id, flush=True)
    advance(session_id)
    return {"session": session_id, "batches": batches}


def cut(session_id: str, flush: bool) -> int:
    """Turn buffered records into insert batches and send them. A partial batch is only cut
    when nothing upstream can add to the buffer any more."""
    with transaction() as c:
        if not ledger.is_running(c, session_id):
            return 0
        flush = flush and ledger.pending(c, session_id).upstream == 0
        batches = ledger.cut_batches(c, session_id, settings().insert_batch_rows, flush)
    send_inserts(session_id, batches)
    return len(batches)


def send_inserts(session_id: str, batches: list[ledger.Unit]) -> None:
    send_units(batches)
    if batches:
        with transaction() as c:
            ledger.mark_sent(c, session_id, [b.id for b in batches])


# --- insert ----------------------------------------------------------------------------------------


# Errors one record can cause, whatever the others: a value the database refuses (DataError), a
# constraint, or a limit such as an index entry above 2,704 bytes (a 20,000-character artist tag).
# ProgramLimitExceeded is an OperationalError to psycopg, which would otherwise count as transient
# and retry the batch for a quarter of an hour before failing the session.
RECORD_ERRORS = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.ProgrammingError,
    psycopg.errors.ProgramLimitExceeded,
)


def _record_error(exc: BaseException) -> bool:
    """Whether a batch's failure may come from one of its records (not an outage to wait out)."""
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
        return True
    return isinstance(exc, RECORD_ERRORS) and not isinstance(exc, TRANSIENT_ERRORS)


@pipeline_task("insert.records")
def records(self, session_id: str, batch_id: str) -> dict:
    try:
        with transaction() as c:
            if ledger.unit_done(c, session_id, batch_id) or not ledger.is_running(c, session_id):
                return {"session": session_id, "skipped": "already inserted"}
            rows = ledger.take_batch(c, session_id, batch_id)
            if ledger.unit_done(c, session_id, batch_id):  # a twin finished while we waited for the lock
                return {"session": session_id, "skipped": "already inserted"}
            written = insert.upsert_records(c, rows, session_id)
            ledger.finish_unit(c, session_id, batch_id, {"inserted": written})
    except Exception as exc:
        if not _record_error(exc):
            raise  # transient (retried with backoff) or a bug (fails the session)
        # One bad record must not sink its batch: insert one by one, record the ones that fail.
        log.warning("batch %s failed as a whole (%s); inserting record by record", batch_id, short_error(exc))
        written = _insert_one_by_one(session_id, batch_id)
    advance(session_id)
    return {"session": session_id, "batch": batch_id, "inserted": written}


def _insert_one_by_one(session_id: str, batch_id: str) -> int:
    written, failed = 0, []
    with transaction() as c:
        if ledger.unit_done(c, session_id, batch_id):
            return 0
        rows = ledger.take_batch(c, session_id, batch_id)
        for record in rows:
            try:
                with c.transaction():
                    written += insert.upsert_records(c, [record], session_id)
            except RECORD_ERRORS as exc:
                failed.append(
                    {
                        "path": record["path"],
                        "error": f"cannot store: {short_error(exc)}",
                        "size": record.get("size"),
                        "mtime_ns": record.get("mtime_ns"),
                    }
                )
        record_errors(c, session_id, "insert", failed)
        ledger.finish_unit(c, session_id, batch_id, {"inserted": written, "errors": len(failed)})
    return written


# --- deferred --------------------------------------------------------------------------------------


def advance(session_id: str) -> None:
    """Send what the session needs next: insert batches cut but never sent (their sender
    died), a flush of the buffer once nothing upstream is left, or the final step."""
    state = ledger.next_steps(connection(), session_id)  # one statement: no transaction needed
    if state is None or state[0] != "running" or state[1] != "scanning":
        return
    _, _, waiting, unsent = state
    if unsent:
        send_inserts(session_id, ledger.unsent_units(connection(), session_id, "insert"))
    if waiting.upstream:
        return
    if waiting.unbatched:
        flush.apply_async(kwargs={"session_id": session_id})
    elif not waiting.inserts:
        finalize.apply_async(kwargs={"session_id": session_id})


# Folders under the session's roots that hold rows of `table` but were not reached by the session.
# A set difference (hashed or sorted), not an anti-join: the planner cannot know how many folders
# the running session listed (its rows are newer than the statistics), guessed one, and picked a
# nested loop that compared every track with every listed folder (3.8 s for 20,000 tracks).
_UNREACHED_DIRS = (
    "SELECT k.dir FROM (SELECT DISTINCT dir FROM {table}) AS k, unnest(%(roots)s::text[]) AS root "
    " WHERE k.dir = root OR starts_with(k.dir, root || '/') "
    "EXCEPT SELECT dir FROM session_dirs WHERE session_id = %(s)s"
)
# ... and not below a folder that could not be listed (its contents are unknown, so kept).
_NOT_BELOW_UNLISTED = (
    "NOT EXISTS (SELECT 1 FROM session_dirs d WHERE d.session_id = %(s)s AND NOT d.listed "
    "            AND starts_with({alias}.dir, d.dir || '/'))"
)


# A track written after this session started was written by another session that saw the file
# later than this one did (a watched folder scanned while a full scan ran): it stays.
_STARTED = "SELECT started_at FROM scan_sessions WHERE id = %(s)s"


def _remove_vanished(c: psycopg.Connection, session_id: str, roots: list[str]) -> int:
    gone = [
        r[0]
        for r in c.execute(
            "SELECT path FROM session_vanished v WHERE session_id = %(s)s AND NOT EXISTS "
            f"  (SELECT 1 FROM tracks n WHERE n.path = v.path AND n.updated_at > ({_STARTED})) "
            "UNION SELECT t.path FROM tracks t "
            f"JOIN ({_UNREACHED_DIRS.format(table='tracks')}) AS g ON g.dir = t.dir "
            f"WHERE {_NOT_BELOW_UNLISTED.format(alias='t')} AND t.updated_at < ({_STARTED})",
            {"s": session_id, "roots": roots},
        ).fetchall()
    ]
    removed = insert.remove_tracks(c, gone)
    # Error records of folders that are gone.
    c.execute(
        f"DELETE FROM file_errors e USING ({_UNREACHED_DIRS.format(table='file_errors')}) AS g "
        f"WHERE e.dir = g.dir AND {_NOT_BELOW_UNLISTED.format(alias='e')}",
        {"s": session_id, "roots": roots},
    )
    insert.remove_orphans(c)
    return removed


@pipeline_task("deferred.finalize")
def finalize(self, session_id: str) -> dict:
    """Remove what vanished, plan the covers, and close the session once they are saved."""
    with transaction() as c:
        row = c.execute(
            "SELECT status, phase, roots FROM scan_sessions WHERE id = %s FOR UPDATE", (session_id,)
        ).fetchone()
        if row is None or row[0] != "running":
            return {"session": session_id, "skipped": "session ended"}
        removed = 0
        if row[1] == "scanning":
            waiting = ledger.pending(c, session_id)
            if waiting.upstream or waiting.unbatched or waiting.inserts:
                return {"session": session_id, "skipped": "work still pending"}
            removed = _remove_vanished(c, session_id, list(row[2]))
            album_ids = [
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT album_id FROM tracks WHERE session_id = %s ORDER BY 1", (session_id,)
                ).fetchall()
            ]
            chunks = scan.chunks(album_ids, COVER_CHUNK_ALBUMS)
            ledger.register_units(
                c,
                session_id,
                [ledger.Unit("finalize", "finalize")]
                + [
                    ledger.Unit(
                        f"cover/{i}",
                        "cover",
                        "deferred.covers",
                        {"session_id": session_id, "unit_id": f"cover/{i}"},
                    )
                    for i in range(len(chunks))
                ],
            )
            ledger.finish_unit(c, session_id, "finalize", {"removed": removed})
            if chunks:
                c.execute(
                    "INSERT INTO cover_plans (session_id, unit_id, album_ids) "
                    "SELECT %s, 'cover/' || (ord - 1), ids "
                    "FROM unnest(%s::text[]) WITH ORDINALITY AS t(ids, ord) "
                    "ON CONFLICT DO NOTHING",
                    (session_id, [",".join(map(str, chunk)) for chunk in chunks]),
                )
            c.execute("UPDATE scan_sessions SET phase = 'finishing' WHERE id = %s", (session_id,))
        unsent = ledger.unsent_units(c, session_id, "cover")
    send_units(unsent)
    if unsent:
        with transaction() as c:
            ledger.mark_sent(c, session_id, [u.id for u in unsent])
    closed = _close_if_done(session_id)
    return {"session": session_id, "removed": removed, "cover_tasks": len(unsent), "closed": closed}


def _close_if_done(session_id: str) -> bool:
    with transaction() as c:
        if ledger.pending(c, session_id).covers:
            return False
        return ledger.close_session(c, session_id, "completed")


class CoverTask(PipelineTask):
    abstract = True

    def on_permanent_failure(self, exc: BaseException, **kwargs) -> None:
        # Covers are a nicety: a failure is logged and the session still closes.
        with transaction() as c:
            ledger.finish_unit(c, kwargs["session_id"], kwargs["unit_id"], {})
        _close_if_done(kwargs["session_id"])


@pipeline_task("deferred.covers", base=CoverTask)
def cover(self, session_id: str, unit_id: str) -> dict:
    conf = settings()
    with transaction() as c:
        if ledger.unit_done(c, session_id, unit_id):
            return {"session": session_id, "skipped": "unit done"}
        plan = c.execute(
            "SELECT album_ids FROM cover_plans WHERE session_id = %s AND unit_id = %s", (session_id, unit_id)
        ).fetchone()
        album_ids = [int(a) for a in plan[0].split(",")] if plan else []
        albums = c.execute(
            "SELECT album_id, min(dir), min(path) FILTER (WHERE has_cover) FROM tracks "
            "WHERE album_id = ANY(%s) GROUP BY album_id ORDER BY album_id",
            (album_ids,),
        ).fetchall()
    found = {}
    for album_id, folder, embedded_in in albums:
        name = None
        image = covers.find_folder_image(folder)
        if image:
            try:
                with open(image, "rb") as fh:
                    name = covers.store_cover(fh.read(), conf.covers_dir)
            except OSError as exc:
                log.warning("cannot read %s: %s", image, exc)
        if name is None and embedded_in:
            art = _extract().embedded_cover(embedded_in)
            if art:
                name = covers.store_cover(art[0], conf.covers_dir, art[1])
        found[album_id] = name
    with transaction() as c:
        c.execute(
            "UPDATE albums a SET cover_hash = v.name FROM unnest(%s::bigint[], %s::text[]) AS v(id, name) "
            "WHERE a.id = v.id AND a.cover_hash IS DISTINCT FROM v.name",
            (list(found), list(found.values())),
        )
        ledger.finish_unit(c, session_id, unit_id, {})
    _close_if_done(session_id)
    return {"session": session_id, "albums": len(found), "with_cover": sum(1 for v in found.values() if v)}
