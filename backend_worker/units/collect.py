"""The collect units (queue batch): cut the buffered records into insert batches of about
SONIQUEBAY_INSERT_BATCH_ROWS rows, and send them."""

from __future__ import annotations

from backend_worker import db, ledger, record_buffer, sessions
from backend_worker.config import settings
from backend_worker.pipeline import INSERT, SendTask
from backend_worker.units.handoff import advance, send_unsent, skipped


def collect_unit(send: SendTask, session_id: str, unit_id: str, records: list[dict] | None = None) -> dict:
    """An extract chunk's records are in the buffer: cut the insert batches that are full."""
    with db.transaction() as conn:
        if not sessions.is_running(conn, session_id) or ledger.unit_done(conn, session_id, unit_id):
            return skipped(session_id, "session ended or unit done")
        if records is not None:  # a message from an earlier version still carries them
            record_buffer.buffer_records(conn, session_id, unit_id, records)
        ledger.finish_unit(conn, session_id, unit_id, {})
        batches = record_buffer.cut_batches(conn, session_id, settings().insert_batch_rows, flush=False)
    send_unsent(send, session_id, INSERT.name, [b.id for b in batches])
    advance(send, session_id)
    return {"session": session_id, "batches": len(batches)}


def flush_buffer(send: SendTask, session_id: str) -> dict:
    """Cut the rest of the buffer too, a partial batch included, once nothing upstream can add to it."""
    with db.transaction() as conn:
        batches = []
        if sessions.is_running(conn, session_id):
            flush = ledger.pending(conn, session_id).upstream == 0
            batches = record_buffer.cut_batches(conn, session_id, settings().insert_batch_rows, flush)
    send_unsent(send, session_id, INSERT.name, [b.id for b in batches])
    advance(send, session_id)
    return {"session": session_id, "batches": len(batches)}
