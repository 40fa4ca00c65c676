"""The pipeline's names, defined once: its stages, the Celery task and queue of each, the ids of
their units and the messages that run them.

These strings are stored (scan_units.stage, scan_units.unit_id, scan_units.message) and travel in
queued messages: a running deployment holds them, so their formats never change.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

QUEUES = ("scan", "extract", "batch", "insert", "deferred")


def queue_of(task: str) -> str:
    """Task names are "<queue>.<action>": the app routes each task to the queue its name starts with."""
    return task.split(".", 1)[0]


@dataclass(frozen=True)
class Stage:
    name: str  # scan_units.stage
    task: str  # the Celery task that runs its units
    upstream: bool = False  # its units can still add records to the buffer

    @property
    def queue(self) -> str:
        return queue_of(self.task)


WALK = Stage("walk", "scan.walk", upstream=True)
EXTRACT = Stage("extract", "extract.files", upstream=True)
COLLECT = Stage("collect", "batch.collect", upstream=True)
INSERT = Stage("insert", "insert.records")
FINALIZE = Stage("finalize", "deferred.finalize")
COVER = Stage("cover", "deferred.covers")
STAGES = (WALK, EXTRACT, COLLECT, INSERT, FINALIZE, COVER)

STAGE_QUEUES = {stage.name: stage.queue for stage in STAGES}
UPSTREAM_STAGES = tuple(stage.name for stage in STAGES if stage.upstream)
# A session's next steps are not units: they are sent whenever needed, each time under a new task id.
FLUSH_TASK = "batch.flush"
FINALIZE_TASK = FINALIZE.task
FINALIZE_UNIT = "finalize"

SendTask = Callable[[str, dict, str], None]  # sends a message: (task name, kwargs, task id)


@dataclass(frozen=True)
class Unit:
    """A unit of work and the message that runs it: a task name and its keyword arguments (ids
    and paths, never records). Kept in the ledger, so a lost message can be sent again."""

    id: str
    stage: str
    task: str | None = None  # None: done where it is created, no message
    kwargs: dict | None = None
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))


# The units of each stage: their ids and the keyword arguments of their task.


def _unit(stage: Stage, unit_id: str, session_id: str, **arguments) -> Unit:
    return Unit(unit_id, stage.name, stage.task, {"session_id": session_id, "unit_id": unit_id, **arguments})


def root_walk(session_id: str, index: int, root: str) -> Unit:
    return _unit(WALK, f"walk:{index}", session_id, dirs=[root], root=True)


def sub_walk(session_id: str, walk_id: str, index: int, dirs: list[str]) -> Unit:
    """A walk's remaining folders, handed to walks of their own."""
    return _unit(WALK, f"{walk_id}/w{index}", session_id, dirs=dirs)


def extract_chunk(session_id: str, walk_id: str, index: int, paths: list[str]) -> Unit:
    """Files at paths the library knows, changed."""
    return _unit(EXTRACT, f"{walk_id}/x{index}", session_id, paths=paths)


def extract_new_chunk(session_id: str, walk_id: str, index: int, paths: list[str]) -> Unit:
    """Files at paths the library does not know: each is first looked for among the tracks by its
    audio key (is_new_files). The unit id says so, not the message: a worker of the release before
    reads it as any chunk."""
    return _unit(EXTRACT, f"{walk_id}/n{index}", session_id, paths=paths)


def is_new_files(unit_id: str) -> bool:
    return unit_id.rpartition("/")[2].startswith("n")


def moves_found(stage: Stage, unit_id: str) -> Unit:
    """The tracks a walk or an extract unit found at new paths, counted once (done where it is
    created, in the transaction that moves them: a unit run again finds them moved already)."""
    return Unit(f"{unit_id}/moves", stage.name)


def collect(session_id: str, extract_id: str) -> Unit:
    """An extract chunk's records, waiting in the buffer for the batch stage."""
    return _unit(COLLECT, f"{extract_id}/c", session_id)


def insert_batch(session_id: str) -> Unit:
    """Records cut from the buffer (record_buffer.batch_id holds its id); its task takes a batch_id."""
    batch_id = f"insert:{uuid.uuid4()}"
    return Unit(batch_id, INSERT.name, INSERT.task, {"session_id": session_id, "batch_id": batch_id})


def finalize() -> Unit:
    """Done where it is created (by the final step), so that it runs once."""
    return Unit(FINALIZE_UNIT, FINALIZE.name)


def cover_chunk(session_id: str, index: int) -> Unit:
    return _unit(COVER, f"cover/{index}", session_id)
