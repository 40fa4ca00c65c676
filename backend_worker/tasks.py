"""Celery tasks: thin wrappers that take ids (and paths) and call the stage's plain function in
backend_worker.units, which records the work in the ledger and hands off to the next stage.

Every task may run twice (acks_late, redelivery after a worker died): each one is written so a
second run changes nothing (see backend_worker.ledger). Here live what only Celery knows: the one
retry policy, the failure hooks, time limits and queues, and how a message is sent.
"""

from __future__ import annotations

import os

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.utils.log import get_task_logger

from backend_worker import db, pipeline, sessions
from backend_worker.app import app
from backend_worker.config import queue_time_limits
from backend_worker.failures import TRANSIENT_ERRORS, short_error
from backend_worker.units import collect, cover, extract, finalize, insert, walk

log = get_task_logger(__name__)

QUEUE_TIME_LIMITS = queue_time_limits()  # read once: the task decorators below need them


def send(task: str, kwargs: dict, task_id: str) -> None:
    """Send a task's message (how the steps and the reconciler hand work on)."""
    app.send_task(task, kwargs=kwargs, task_id=task_id, kwargsrepr=_summary(kwargs))


def _summary(kwargs: dict) -> str:
    """What Flower shows of a task's arguments: ids, and a list of paths as a count and a folder."""
    shown = {}
    for key, value in kwargs.items():
        if isinstance(value, list) and len(value) > 3:
            value = f"{len(value)} {'files' if key == 'paths' else key} from {os.path.dirname(value[0])!r}"
        shown[key] = value
    return repr(shown)


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
        db.discard_busy_connection()
        try:
            self.on_permanent_failure(exc, **kwargs)
        except Exception:  # the database may be what failed; the stale-session check catches up
            log.exception("could not record the failure of %s[%s]", self.name, task_id)

    def on_permanent_failure(self, exc: BaseException, **kwargs) -> None:
        session_id = kwargs.get("session_id")
        if session_id:
            with db.transaction() as conn:
                sessions.fail_session(conn, session_id, f"{self.name} failed: {short_error(exc)}")


class ExtractTask(PipelineTask):
    abstract = True

    def on_permanent_failure(self, exc: BaseException, **kwargs) -> None:
        # A chunk that failed as a whole: its files become error records and the session goes on.
        if isinstance(exc, TimeLimitExceeded | SoftTimeLimitExceeded):
            reason = f"not read: its extract task ran past the {self.time_limit} s time limit"
        else:
            reason = f"extract task failed: {short_error(exc)}"
        extract.fail_extract_unit(send, kwargs["session_id"], kwargs["unit_id"], kwargs["paths"], reason)


class CoverTask(PipelineTask):
    abstract = True

    def on_permanent_failure(self, exc: BaseException, **kwargs) -> None:
        # Covers are a nicety: a failure is logged and the session still closes.
        cover.give_up_cover_unit(kwargs["session_id"], kwargs["unit_id"])


def pipeline_task(name: str, base: type[PipelineTask] = PipelineTask):
    """A task of the pipeline, registered as `name` ("<queue>.<action>") with its queue's time limits."""
    limit = QUEUE_TIME_LIMITS[pipeline.queue_of(name)]
    return app.task(name=name, base=base, bind=True, time_limit=limit, soft_time_limit=limit - 30)


@pipeline_task(pipeline.WALK.task)
def walk_folders(self, session_id: str, unit_id: str, dirs: list[str], root: bool = False) -> dict:
    return walk.walk_unit(send, session_id, unit_id, dirs, root)


@pipeline_task(pipeline.EXTRACT.task, base=ExtractTask)
def extract_files(self, session_id: str, unit_id: str, paths: list[str]) -> dict:
    return extract.extract_unit(send, session_id, unit_id, paths)


@pipeline_task(pipeline.COLLECT.task)
def collect_records(self, session_id: str, unit_id: str, records: list[dict] | None = None) -> dict:
    return collect.collect_unit(send, session_id, unit_id, records)


@pipeline_task(pipeline.FLUSH_TASK)
def flush_buffer(self, session_id: str) -> dict:
    return collect.flush_buffer(send, session_id)


@pipeline_task(pipeline.INSERT.task)
def insert_records(self, session_id: str, batch_id: str) -> dict:
    return insert.insert_batch(send, session_id, batch_id)


@pipeline_task(pipeline.FINALIZE.task)
def finalize_session(self, session_id: str) -> dict:
    return finalize.finalize_session(send, session_id)


@pipeline_task(pipeline.COVER.task, base=CoverTask)
def save_covers(self, session_id: str, unit_id: str) -> dict:
    return cover.cover_unit(session_id, unit_id)
