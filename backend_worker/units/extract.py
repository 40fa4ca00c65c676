"""The extract units: read a chunk's files (one CPU slot of this host at a time), park their
records in the buffer for the collect units, record the files that could not be read."""

from __future__ import annotations

import os

from backend_worker import cpu, db, ledger, library, pipeline, record_buffer, session_work, sessions
from backend_worker.config import settings
from backend_worker.pipeline import SendTask
from backend_worker.units.handoff import advance, send_units, skipped

VANISHED_REASON = "file vanished"


def _extract():
    """The extract stage's work, imported on first use: mutagen would cost a thread-pool worker
    memory for nothing."""
    from backend_worker.stages import extract

    return extract


def extract_unit(send: SendTask, session_id: str, unit_id: str, paths: list[str]) -> dict:
    conn = db.thread_connection()
    if not sessions.is_running(conn, session_id) or ledger.unit_done(conn, session_id, unit_id):
        return skipped(session_id, "session ended or unit done")
    audio_keys: dict[str, str] = {}
    moved: list = []
    with cpu.cpu_slot(settings().extract_slots):
        if pipeline.is_new_files(unit_id) and not sessions.over_empty_library(conn, session_id):
            audio_keys, moved = _recognise(session_id, unit_id, paths)
        unchanged = {m.path for m in moved if m.same_file}  # the file the track was read from
        records, errors = _extract().extract_paths([p for p in paths if p not in unchanged], audio_keys)
    vanished = [e["path"] for e in errors if e["error"] == VANISHED_REASON]
    errors = [e for e in errors if e["error"] != VANISHED_REASON]
    to_send = []
    with db.transaction() as conn:
        if records:
            # The records go straight into the buffer; the collect unit gets only its id
            # (a 250-record chunk is ~250 KB of JSON: through Redis it cost more than reading it).
            collect = pipeline.collect(session_id, unit_id)
            to_send = ledger.register_units(conn, session_id, [collect])
            record_buffer.buffer_records(conn, session_id, collect.id, records)
        library.save_file_errors(conn, session_id, "extract", errors)
        session_work.add_vanished(conn, session_id, vanished)
        counts = {"extracted": len(records), "errors": len(errors), "unchanged": len(unchanged)}
        ledger.finish_unit(conn, session_id, unit_id, counts)
    # Sent after the commit: the collect unit stays pending (and the session open) until its task ran.
    send_units(send, to_send)
    advance(send, session_id)
    return {"session": session_id, **counts, "moved": len(moved), "vanished": len(vanished)}


def _recognise(session_id: str, unit_id: str, paths: list[str]) -> tuple[dict[str, str], list]:
    """Files at new paths that are a gone track's audio (copied to another disk and deleted,
    retagged and moved): their audio keys (path -> key), and the moves made, in one transaction
    with their count. A moved file that is the same file (size and time) is not read again; one
    that changed is read, and its record updates the track at its new path."""
    from backend_worker.stages import moves

    audio_keys = moves.audio_keys(paths)
    with db.transaction() as conn:
        candidates = library.tracks_by_audio_key(conn, session_id, list(audio_keys.values()))
    found = moves.by_audio_key(audio_keys, candidates)
    evidence = []
    for path in paths:
        if path in found:
            try:
                st = os.stat(path)
            except OSError:
                continue
            evidence.append((path, *moves.file_identity(st), st.st_size, st.st_mtime_ns))
    made = moves.match(evidence, found) if evidence else []
    if made:
        with db.transaction() as conn:
            made = library.move_tracks(conn, made)
            tally = pipeline.moves_found(pipeline.EXTRACT, unit_id)
            ledger.register_units(conn, session_id, [tally])
            counts = {"moved": len(made), "returned": sum(m.track.missing for m in made)}
            ledger.finish_unit(conn, session_id, tally.id, counts)
    return audio_keys, made


def fail_extract_unit(send: SendTask, session_id: str, unit_id: str, paths: list[str], reason: str) -> None:
    """A chunk that failed as a whole (time limit, a crash in a reader): its files become error
    records and the session goes on."""
    with db.transaction() as conn:
        # A task can die after its unit was done (killed while handing on): its files were read
        # and stored, so they get no error record.
        if ledger.finish_unit(conn, session_id, unit_id, {"errors": len(paths)}):
            unread = [{"path": path, "error": reason} for path in paths]
            library.save_file_errors(conn, session_id, "extract", unread)
    advance(send, session_id)
