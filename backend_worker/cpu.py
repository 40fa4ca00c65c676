"""Turns for CPU-bound work: one parse at a time per process (the extract and cover units), and a
bounded number of extract parses per host (its CPU slots, `SONIQUEBAY_EXTRACT_SLOTS`). The worker's
hang guard (backend_worker.hangs) reads and hands on the per-process turn."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import zlib

from backend_worker import db


def slot_lock_class(hostname: str) -> int:
    """The advisory lock class of a host's extract CPU slots. Never changes between releases: the
    old and the new workers of a rolling upgrade share the host's slots."""
    return zlib.crc32(f"soniquebay-extract:{hostname}".encode()) - 2**31


# Advisory lock class of the extract CPU slots of this host (the object id is the slot number).
CPU_SLOT_LOCK_CLASS = slot_lock_class(socket.gethostname())


class _ParsingTurn:
    """One chunk parses at a time in a process: threads parsing side by side would only share its
    GIL (the extract pool is a thread pool; a host gets parallel parsing from its extract units).
    The cover units take the same turn (units.cover), for the same reason.

    A thread-pool task waiting for the turn is what a prefork task waiting for a free pool process
    is: not yet running. So the hang guard does not count that wait (`waited`), and a
    task queued behind a stuck one is not failed with it. Waited for in short steps, so a time
    limit's exception still reaches a waiting thread. The hang guard hands the turn on (`give_up`)
    when the thread holding it is stuck in C code past its hard limit, and a task's end gives it
    back in any case (an asynchronous exception can land between taking and using it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._guard = threading.Lock()  # give_up may come from the hang guard and the holder at once
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
