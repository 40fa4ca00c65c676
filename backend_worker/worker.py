"""The worker process's own hooks and threads, apart from any task: warming up the extract code
before the pool forks, checking the database, the heartbeat and recovery of lost units
(backend_worker.delivery), time limits in a thread pool (backend_worker.hangs), and recording
tasks an operator revoked. The app includes this module, so every worker connects them."""

from __future__ import annotations

import gc
import logging
import threading

from celery.concurrency import get_implementation
from celery.concurrency.base import apply_target
from celery.concurrency.thread import ApplyResult
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.exceptions import TaskRevokedError
from celery.signals import task_revoked, worker_init, worker_ready

from backend_worker import cpu, db, delivery, hangs, warmup
from backend_worker.config import settings, url_without_credentials
from backend_worker.failures import one_line
from backend_worker.tasks import PipelineTask, send

# The worker's own messages (not about one task): go to the worker's log like Celery's.
log = logging.getLogger("backend_worker.worker")
DB_CHECK_FIRST_WAIT = 2  # seconds before the second attempt; doubled each time
DB_CHECK_MAX_WAIT = 300


class RevocableThreadPool(ThreadPool):
    """Celery's thread pool, except that a task revoked while it waits for a free thread is dropped
    when its turn comes, as a prefork worker drops one still waiting for a free process. Celery
    looks for a revoke when it hands a task to the pool, and a thread pool takes every task it
    receives at once: without this, a task an operator revoked in Flower after the worker took it
    would run anyway. `Request.revoked` announces it as Celery does (Flower shows REVOKED, the
    message is acknowledged, `_record_revoked` records its files)."""

    def on_apply(self, target, args=None, kwargs=None, callback=None, accept_callback=None, **_):
        request = getattr(accept_callback, "__self__", None)  # Request.on_accepted: its request
        future = self.executor.submit(
            _apply_unless_revoked, request, target, args, kwargs, callback, accept_callback
        )
        return ApplyResult(future)


def _apply_unless_revoked(request, target, args, kwargs, callback, accept_callback) -> None:
    if request is not None and request.revoked():
        return
    apply_target(target, args, kwargs, callback, accept_callback)


@worker_init.connect
def _use_revocable_thread_pool(sender=None, **kwargs) -> None:
    """A unit run with `--pool threads` gets RevocableThreadPool (before the worker resolves the name)."""
    if get_implementation(sender.pool_cls) is ThreadPool:
        sender.pool_cls = RevocableThreadPool


@worker_init.connect
def _warm_up(sender=None, **kwargs) -> None:
    """Parse a few samples in the main process, before the prefork pool forks its children, so
    they start with warm, specialised extract code (see backend_worker.warmup). A thread
    pool forks nothing, and its extract threads warm up on their first files."""
    if not issubclass(get_implementation(sender.pool_cls), ThreadPool):  # a name until resolved
        warmup.warm_up()
    # What the process holds now (Celery, kombu, psycopg, the app: ~100,000 objects) lives as long
    # as the worker: out of the collector's sight, no full collection walks it again. In a prefork
    # worker it is also shared with the children: their first collection does not copy those
    # pages into each one.
    gc.freeze()


@worker_ready.connect
def _watch_database(sender=None, **kwargs) -> None:
    """Once the worker is up (its pool forked), check the database in the background, and start
    the heartbeat and the recovery of lost units (backend_worker.delivery)."""
    threading.Thread(target=check_database, name="soniquebay-db-check", daemon=True).start()
    delivery.start_reconciler(sender.hostname, held_task_ids, send)
    if isinstance(sender.pool, ThreadPool):  # prefork enforces the time limits itself
        hangs.HangGuard(
            db.cancel_query,
            _abandon_thread,
            not_counted=cpu.parsing_turn.waited,
            ended=cpu.parsing_turn.task_ended,
        ).start()


def _abandon_thread(thread_id: int) -> None:
    """What a thread stuck past its hard time limit holds goes back, as a killed prefork child's
    would: its PostgreSQL session (locks, CPU slot) and its process's parsing turn."""
    db.end_session(thread_id)
    cpu.parsing_turn.give_up(thread_id)


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
            shown = url_without_credentials(url) if url else "(unknown URL)"
            log.error("cannot use PostgreSQL at %s: %s; trying again in %d s", shown, one_line(exc), wait)
            threading.Event().wait(wait)
            wait = min(wait * 2, max_wait)
            continue
        if wait != first_wait:
            log.warning("PostgreSQL at %s answers again", url_without_credentials(url))
        return


def held_task_ids() -> tuple[str, ...]:
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
