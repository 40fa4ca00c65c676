"""The insert units: write an insert batch's records into the library in one transaction; when
the database refuses the batch because of its records, insert them one by one."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from celery.utils.log import get_task_logger

from backend_worker import db, ledger, library, record_buffer, sessions
from backend_worker.failures import ONE_RECORD_ERRORS, may_come_from_one_record, short_error
from backend_worker.pipeline import SendTask
from backend_worker.stages import insert
from backend_worker.units.handoff import advance, skipped

log = get_task_logger(__name__)


@contextmanager
def collector_paused() -> Iterator[None]:
    """A batch's records hold some 15 lists each (credits, genres) and the stage makes a few tuples
    more per record, all without cycles: the cyclic collector would walk the growing batch again
    and again, a third of the stage's Python time (57 against 40 us per record, measured). It
    runs again once the batch is written."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def insert_batch(send: SendTask, session_id: str, batch_id: str) -> dict:
    try:
        with collector_paused(), db.transaction() as conn:
            if ledger.unit_done(conn, session_id, batch_id) or not sessions.is_running(conn, session_id):
                return skipped(session_id, "already inserted")
            rows = record_buffer.take_batch(conn, session_id, batch_id)
            if ledger.unit_done(conn, session_id, batch_id):  # a twin finished while we waited for the lock
                return skipped(session_id, "already inserted")
            tally: dict[str, int] = {}
            written = insert.upsert_records(conn, rows, session_id, tally)
            ledger.finish_unit(conn, session_id, batch_id, {"inserted": written, **tally})
    except Exception as exc:
        if not may_come_from_one_record(exc):
            raise  # transient (retried with backoff) or a bug (fails the session)
        # One bad record must not sink its batch: insert one by one, record the ones that fail.
        log.warning("batch %s failed as a whole (%s); inserting record by record", batch_id, short_error(exc))
        written = insert_one_by_one(session_id, batch_id)
    advance(send, session_id)
    return {"session": session_id, "batch": batch_id, "inserted": written}


def insert_one_by_one(session_id: str, batch_id: str) -> int:
    """Insert a batch's records each in a subtransaction of its own; the refused ones become file
    error records. Returns how many were written (0 when the batch is done already)."""
    written, failed, tally = 0, [], {}
    with db.transaction() as conn:
        if ledger.unit_done(conn, session_id, batch_id):
            return 0
        for record in record_buffer.take_batch(conn, session_id, batch_id):
            try:
                with conn.transaction():
                    written += insert.upsert_records(conn, [record], session_id, tally)
            except ONE_RECORD_ERRORS as exc:
                failed.append(
                    {
                        "path": record["path"],
                        "error": f"cannot store: {short_error(exc)}",
                        "size": record.get("size"),
                        "mtime_ns": record.get("mtime_ns"),
                    }
                )
        library.save_file_errors(conn, session_id, "insert", failed)
        ledger.finish_unit(conn, session_id, batch_id, {"inserted": written, "errors": len(failed), **tally})
    return written
