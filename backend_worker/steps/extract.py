"""The extract stage: read a chunk's files (one CPU slot of this host at a time), park their
records in the buffer for the batch stage, record the files that could not be read."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import zlib

from backend_worker import db, ledger, library, pipeline, session_work
from backend_worker.config import settings
from backend_worker.pipeline import SendTask
from backend_worker.steps.handoff import advance, send_units, skipped

VANISHED_REASON = "file vanished"

# Advisory lock class of the extract CPU slots of this host (the object id is the slot number).
CPU_SLOT_LOCK_CLASS = zlib.crc32(f"soniquebay-extract:{socket.gethostname()}".encode()) - 2**31


def _extract():
    """The extract stage, imported on first use: mutagen costs a thread-pool worker memory for nothing."""
    from backend_worker.stages import extract

    return extract


class _ParsingTurn:
    """One chunk parses at a time in a process: threads parsing side by side would only share its
    GIL (the extract pool is a thread pool; a host gets parallel parsing from its extract units).
    The deferred stage's cover units take the same turn (steps.covers), for the same reason.

    A thread-pool task waiting for the turn is what a prefork task waiting for a free pool process
    is: not yet running. So the time-limit watchdog does not count that wait (`waited`), and a
    task queued behind a stuck one is not failed with it. Waited for in short steps, so a time
    limit's exception still reaches a waiting thread. The watchdog hands the turn on (`give_up`)
    when the thread holding it is stuck in C code past its hard limit, and a task's end gives it
    back in any case (an asynchronous exception can land between taking and using it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._guard = threading.Lock()  # give_up may come from the watchdog and the holder at once
        self._holder: int | None = None
        self._waited: dict[int, float] = {}  # thread id -> seconds waited during its current task

    @contextlib.contextmanager
    def held(self):
        me = threading.get_ident()
        started = time.monotonic()
        try:
            while not self._lock.acquire(timeout=0.5):
                self._waited[me] = self._waited.get(me, 0.0) + (time.monotonic() - started)
                started = time.monotonic()
            self._holder = me
        finally:
            self._waited[me] = self._waited.get(me, 0.0) + (time.monotonic() - started)
        try:
            yield
        finally:
            self.give_up(me)

    def give_up(self, thread_id: int) -> None:
        with self._guard:
            if self._holder == thread_id:
                self._holder = None
                self._lock.release()

    def waited(self, thread_id: int) -> float:
        return self._waited.get(thread_id, 0.0)

    def task_ended(self, thread_id: int) -> None:
        self._waited.pop(thread_id, None)
        self.give_up(thread_id)


parsing_turn = _ParsingTurn()


@contextlib.contextmanager
def cpu_slot(slots: int):
    """This process's parsing turn, then one of this host's `slots` extract slots (none with 0):
    mutagen's parsing is CPU-bound, so more extracts at once than cores only adds context
    switches and cache misses (measured: 16 extract processes on 2 cores spent 1.75x the CPU time
    of 2). A PostgreSQL session-level advisory lock, so a worker that dies frees its slot. Waits
    in the server, FIFO, without CPU."""
    with parsing_turn.held():
        if slots <= 0:
            yield
            return
        conn = db.thread_connection()
        free = conn.execute(
            "SELECT s FROM generate_series(0, %s - 1) AS s WHERE pg_try_advisory_lock(%s, s) LIMIT 1",
            (slots, CPU_SLOT_LOCK_CLASS),
        ).fetchone()
        if free:
            slot = free[0]
        else:
            slot = os.getpid() % slots
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (CPU_SLOT_LOCK_CLASS, slot))
        try:
            yield
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (CPU_SLOT_LOCK_CLASS, slot))


def extract_unit(send: SendTask, session_id: str, unit_id: str, paths: list[str]) -> dict:
    conn = db.thread_connection()
    if not ledger.is_running(conn, session_id) or ledger.unit_done(conn, session_id, unit_id):
        return skipped(session_id, "session ended or unit done")
    audio_keys: dict[str, str] = {}
    moved: list = []
    with cpu_slot(settings().extract_slots):
        if pipeline.is_new_files(unit_id) and not ledger.over_empty_library(conn, session_id):
            audio_keys, moved = _recognise(session_id, unit_id, paths)
        unchanged = {m.path for m in moved if m.same_file}  # the file the track was read from
        records, errors = _extract().extract_paths([p for p in paths if p not in unchanged], audio_keys)
    vanished = [e["path"] for e in errors if e["error"] == VANISHED_REASON]
    errors = [e for e in errors if e["error"] != VANISHED_REASON]
    to_send = []
    with db.transaction() as conn:
        if records:
            # The records go straight into the buffer; the batch stage gets only the unit's id
            # (a 250-record chunk is ~250 KB of JSON: through Redis it cost more than reading it).
            collect = pipeline.collect(session_id, unit_id)
            to_send = ledger.register_units(conn, session_id, [collect])
            ledger.buffer_records(conn, session_id, collect.id, records)
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
