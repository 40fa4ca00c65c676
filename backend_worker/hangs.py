"""Task time limits for a worker whose pool runs tasks in threads.

Celery enforces `soft_time_limit` and `time_limit` only in the prefork pool, by signalling and then
killing the child process. A thread cannot be killed, so a thread-pool worker runs `HangGuard`:

- at the soft limit it raises SoftTimeLimitExceeded in the task's thread (an asynchronous
  exception, seen as soon as the thread runs Python code again) and cancels the query its thread's
  PostgreSQL connection is running: a task waiting for a lock or a slow statement wakes up at once.
  The task then fails through its normal path (`PipelineTask.on_failure` records it); this is
  where a task stuck on the database ends.
- at the hard limit, if the task still runs (stuck in C code no exception reaches, a hung network
  file system say), it does what prefork does on a hard timeout: what the thread holds is given
  back (its PostgreSQL session is terminated, as the killed child's would end: its transaction's
  locks and its CPU slot are freed; its process's parsing turn goes to the next thread), then, in a
  thread of its own so that the hang guard never waits, `Request.on_timeout`: the task is failed
  with TimeLimitExceeded, its failure hook records it, Flower gets `task-failed`, the message is
  acknowledged. The thread is beyond rescue: once it has
  stayed stuck for `stuck_grace` more seconds the worker shuts down warm (the other tasks finish,
  prefetched messages go back to the queue) and exits, and systemd starts a fresh one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_postrun, task_prerun

log = logging.getLogger("backend_worker.worker")

CHECK_SECONDS = 1.0


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Schedule `exc_type` in that thread (CPython's PyThreadState_SetAsyncExc)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
    return done == 1


@dataclass
class _Running:
    thread_id: int
    soft_sent: bool = False
    failed_at: float | None = None  # monotonic time of the hard-limit failure


class HangGuard:
    """Time limits of the tasks running in this process's threads (see the module docstring)."""

    def __init__(
        self,
        cancel_query: Callable[[int], None],
        abandon: Callable[[int], None],
        stuck_grace: float = 60.0,
        not_counted: Callable[[int], float] = lambda thread_id: 0.0,
        ended: Callable[[int], None] = lambda thread_id: None,
    ):
        self.cancel_query = cancel_query  # thread id -> cancel what its connection runs
        # thread id -> give back what the stuck thread holds (its server session, its locks)
        self.abandon = abandon
        # thread id -> seconds of its task's run that do not count against the limits (waiting
        # for what a prefork task would have waited for before it started)
        self.not_counted = not_counted
        self.task_ended = ended  # thread id -> called in that thread as its task ends
        self.stuck_grace = stuck_grace
        self.running: dict[str, _Running] = {}
        self.lock = threading.Lock()
        self.exiting_since: float | None = None

    # Signals sent in the thread that runs the task.
    def started(self, task_id=None, **_) -> None:
        with self.lock:
            self.running[task_id] = _Running(threading.get_ident())

    def ended(self, task_id=None, **_) -> None:
        with self.lock:
            self.running.pop(task_id, None)
        self.task_ended(threading.get_ident())

    def start(self) -> None:
        task_prerun.connect(self.started, weak=False)
        task_postrun.connect(self.ended, weak=False)
        threading.Thread(target=self.run, name="soniquebay-time-limits", daemon=True).start()

    def run(self) -> None:
        while True:
            time.sleep(CHECK_SECONDS)
            try:
                self.check()
            except Exception:  # the hang guard must outlive any single failure
                log.exception("hang guard")

    def check(self, now: float | None = None) -> None:
        from celery.worker import state

        now = time.monotonic() if now is None else now
        requests = {r.id: r for r in tuple(state.active_requests)}
        with self.lock:
            running = dict(self.running)
        for task_id, run in running.items():
            request = requests.get(task_id)
            if run.failed_at is not None:
                if now - run.failed_at >= self.stuck_grace:
                    self._replace_process(task_id, running)
                continue
            if request is None or not request.time_start:
                continue
            hard, soft = request.time_limits
            hard = hard or request.task.time_limit
            soft = soft or request.task.soft_time_limit
            elapsed = time.time() - request.time_start - self.not_counted(run.thread_id)
            if soft and elapsed >= soft and not run.soft_sent:
                run.soft_sent = True
                log.warning("Soft time limit (%ss) exceeded for %s[%s]", soft, request.name, task_id)
                raise_in_thread(run.thread_id, SoftTimeLimitExceeded)
                self.cancel_query(run.thread_id)
            if hard and elapsed >= hard:
                run.failed_at = now
                raise_in_thread(run.thread_id, TimeLimitExceeded)
                self.abandon(run.thread_id)
                # Recorded, acknowledged and shown in Flower as prefork does it; in a thread of its
                # own: recording needs the database, which may be what hangs.
                threading.Thread(
                    target=request.on_timeout, args=(False, hard), name="soniquebay-time-limit", daemon=True
                ).start()

    def _replace_process(self, task_id: str, running: dict[str, _Running]) -> None:
        """A thread stuck past its hard limit and the grace: shut down warm, then exit once only
        stuck threads are left (a warm shutdown waits for every thread, stuck ones too)."""
        from celery.worker import state

        now = time.monotonic()
        if self.exiting_since is None:
            self.exiting_since = now
            log.error(
                "task %s is stuck %d s past its hard time limit: this worker shuts down and systemd "
                "starts a fresh one", task_id, self.stuck_grace,
            )  # fmt: skip
            os.kill(os.getpid(), signal.SIGTERM)
            return
        stuck = {i for i, r in running.items() if r.failed_at is not None}
        others = {r.id for r in tuple(state.active_requests)} - stuck
        if not others or now - self.exiting_since >= self.stuck_grace:
            log.error("exiting with %d stuck task thread(s)", len(stuck))
            logging.shutdown()
            os._exit(1)
