"""Handing work on: sending registered units, and what a session needs next once a task is done."""

from __future__ import annotations

import uuid

from backend_worker import db, ledger
from backend_worker.pipeline import FINALIZE_TASK, FLUSH_TASK, INSERT, SendTask, Unit


def send_units(send: SendTask, units: list[Unit]) -> None:
    """Send the messages of units the ledger registered, under their recorded task ids."""
    for unit in units:
        send(unit.task, unit.kwargs, unit.task_id)


def send_unsent(send: SendTask, session_id: str, stage: str, unit_ids: list[str] | None = None) -> int:
    """Claim the units of `stage` not sent yet (of these ids, or all) and send them: of two tasks
    that would send a unit, the one that claimed it does. Returns how many were sent."""
    if unit_ids == []:
        return 0
    conn = db.thread_connection()
    units = ledger.claim_unsent(conn, session_id, stage, unit_ids)
    try:
        send_units(send, units)
    except BaseException:
        # The broker refused: unclaimed, the next task's `advance` or this task's retry sends them.
        ledger.release_claim(conn, session_id, [unit.id for unit in units])
        raise
    return len(units)


def advance(send: SendTask, session_id: str) -> None:
    """Send what the session needs next: insert batches cut but never sent (their sender
    died), a flush of the buffer once nothing upstream is left, or the final step."""
    state = ledger.next_steps(db.thread_connection(), session_id)  # one statement: no transaction needed
    if state is None or state[0] != "running" or state[1] != "scanning":
        return
    _, _, waiting, unsent = state
    if unsent:
        send_unsent(send, session_id, INSERT.name)
    if waiting.upstream:
        return
    if waiting.unbatched:
        send(FLUSH_TASK, {"session_id": session_id}, str(uuid.uuid4()))
    elif not waiting.inserts:
        send(FINALIZE_TASK, {"session_id": session_id}, str(uuid.uuid4()))


def skipped(session_id: str, why: str) -> dict:
    """What a task returns when the ledger says there is nothing (left) to do."""
    return {"session": session_id, "skipped": why}
