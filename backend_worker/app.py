"""Builds the Celery app: queues, routes, reliability settings. No task logic lives here."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from backend_worker.config import broker_tls, settings
from backend_worker.pipeline import QUEUES

# The app's settings that depend on nothing, grouped by why they are set.

# Pipeline state lives in PostgreSQL; results would only pile up in Redis.
NO_RESULTS = {"task_ignore_result": True, "result_backend": None}
# A task is acknowledged only once it finished, and re-queued if its worker dies mid-task: every
# stage is idempotent, so a second run changes nothing.
AT_LEAST_ONCE = {"task_acks_late": True, "task_reject_on_worker_lost": True, "worker_prefetch_multiplier": 4}
# A worker whose broker is down or refuses its password keeps retrying (one log line per attempt,
# at most 30 s apart) instead of exiting after 100 attempts into a restart loop.
RETRY_THE_BROKER_FOREVER = {
    "broker_connection_retry_on_startup": True,
    "broker_connection_retry": True,
    "broker_connection_max_retries": None,
}
# What Flower shows (tasks from these events) and lets an operator do (restart a pool).
FLOWER = {
    "worker_send_task_events": True,
    "task_send_sent_event": True,
    "task_track_started": True,
    "worker_pool_restarts": True,
}
# The worker keeps the logging the units configure; a prefork child is replaced every 2,000 tasks;
# a task keeps running through a broker outage (acks_late redelivers it at worst).
WORKER = {
    "worker_hijack_root_logger": False,
    "worker_max_tasks_per_child": 2000,
    "worker_cancel_long_running_tasks_on_connection_loss": False,
}


def build_app() -> Celery:
    conf = settings()
    # The tasks, and the worker's own hooks and threads: a worker imports both before it starts.
    app = Celery(
        "backend_worker", broker=conf.broker_url, include=["backend_worker.tasks", "backend_worker.worker"]
    )
    exchange = Exchange("soniquebay", type="direct")
    app.conf.update(
        task_queues=[Queue(name, exchange, routing_key=name) for name in QUEUES],
        task_default_queue="deferred",
        task_default_exchange="soniquebay",
        task_default_routing_key="deferred",
        # Task names are "<queue>.<action>": the queue is the first part of the name. A message goes
        # straight to its queue's list (Redis' default exchange), so a send declares nothing: a
        # declaration retried over a reconnection left kombu publishing on the closed channel, an
        # AttributeError that failed the task and its session (tests/integration/test_broker_cuts.py).
        task_routes=[{f"{name}.*": {"queue": name, "routing_key": name, "declare": []} for name in QUEUES}],
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": conf.visibility_timeout},
        # rediss:// between hosts: the broker's certificate and name verified (Flower uses it too).
        broker_use_ssl=broker_tls(conf) or False,
        timezone="UTC",
        **NO_RESULTS,
        **AT_LEAST_ONCE,
        **RETRY_THE_BROKER_FOREVER,
        **FLOWER,
        **WORKER,
    )
    return app


app = build_app()
