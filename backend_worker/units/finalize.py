"""The finalize unit of a session: once nothing is pending, mark missing what vanished, purge what was
missing for longer than the retention, plan the covers (backend_worker.units.cover), and close
the session when they are saved."""

from __future__ import annotations

from backend_worker import db, ledger, library, pipeline, session_work, sessions
from backend_worker.config import settings
from backend_worker.pipeline import COVER, SendTask
from backend_worker.stages import walk
from backend_worker.units.handoff import send_unsent, skipped

COVER_CHUNK_ALBUMS = 200


def finalize_session(send: SendTask, session_id: str) -> dict:
    """Mark missing what vanished, purge the expired, plan the covers, and close the session once
    they are saved."""
    with db.transaction() as conn:
        state = sessions.lock_session(conn, session_id)
        if state is None or state[0] != "running":
            return skipped(session_id, "session ended")
        status, phase, roots = state
        missing = purged = 0
        if phase == "scanning":
            waiting = ledger.pending(conn, session_id)
            if waiting.upstream or waiting.unbatched or waiting.inserts:
                return skipped(session_id, "work still pending")
            missing = library.mark_missing(conn, session_id, roots)
            purged = len(library.purge_missing(conn, settings().missing_retention))
            chunks = walk.chunks(library.session_album_ids(conn, session_id), COVER_CHUNK_ALBUMS)
            covers = [pipeline.cover_chunk(session_id, i) for i in range(len(chunks))]
            ledger.register_units(conn, session_id, [pipeline.finalize(), *covers])
            ledger.finish_unit(
                conn, session_id, pipeline.FINALIZE_UNIT, {"missing": missing, "purged": purged}
            )
            session_work.plan_covers(
                conn, session_id, {u.id: chunk for u, chunk in zip(covers, chunks, strict=True)}
            )
            sessions.set_phase(conn, session_id, "finishing")
    cover_tasks = send_unsent(send, session_id, COVER.name)
    closed = close_if_done(session_id)
    return {
        "session": session_id,
        "missing": missing,
        "purged": purged,
        "cover_tasks": cover_tasks,
        "closed": closed,
    }


def close_if_done(session_id: str) -> bool:
    """Close the session, completed, once no cover unit is pending."""
    with db.transaction() as conn:
        if ledger.pending(conn, session_id).covers:
            return False
        return sessions.close_session(conn, session_id, "completed")
