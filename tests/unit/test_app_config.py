"""The Celery app: every setting is one Celery knows, queues and routes are explicit."""

from __future__ import annotations

import pytest
from celery.app.defaults import NAMESPACES, flatten

from backend_worker.config import ConfigError, Settings, queue_time_limits, url_without_credentials

LONGEST_TIME_LIMIT = max(queue_time_limits().values())


def test_every_setting_is_known_to_celery():
    from backend_worker.app import app

    known = {name for name, _ in flatten(NAMESPACES)}
    ours = set(app.conf.changes) - {"include", "deprecated_settings"}
    assert ours, "the app sets its configuration"
    assert ours <= known, f"Celery ignores unknown settings silently: {sorted(ours - known)}"


def test_queues_routes_and_reliability():
    from backend_worker import tasks
    from backend_worker.app import QUEUES, app

    assert [q.name for q in app.conf.task_queues] == list(QUEUES)
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.task_ignore_result
    assert app.conf.broker_connection_retry_on_startup and app.conf.broker_connection_retry
    # A worker whose broker is unreachable or refuses its password retries for ever, never exits.
    assert app.conf.broker_connection_max_retries is None
    assert app.conf.broker_transport_options["visibility_timeout"] > LONGEST_TIME_LIMIT
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert set(ours) == {
        "scan.walk", "extract.files", "batch.collect", "batch.flush", "insert.records",
        "deferred.finalize", "deferred.covers",
    }  # fmt: skip
    router = app.amqp.router
    for name, task in ours.items():
        queue = name.split(".")[0]
        assert router.route({}, name)["queue"].name == queue
        assert task.time_limit == queue_time_limits()[queue]
        assert task.soft_time_limit < task.time_limit
        assert task.retry_backoff and task.retry_jitter and task.max_retries
    assert tasks.PipelineTask.autoretry_for


def test_visibility_timeout_must_exceed_the_longest_task(monkeypatch):
    monkeypatch.setenv("SONIQUEBAY_VISIBILITY_TIMEOUT", str(LONGEST_TIME_LIMIT))
    with pytest.raises(ConfigError, match="SONIQUEBAY_VISIBILITY_TIMEOUT"):
        Settings.from_env()
    monkeypatch.setenv("SONIQUEBAY_VISIBILITY_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="not a whole number"):
        Settings.from_env()


# A visibility timeout not above a task's time limit: Redis would hand the running task to a second
# worker. Raising one time limit past the deployed visibility timeout (1800 s) is the easy mistake.
REFUSED = [
    (
        {"SONIQUEBAY_VISIBILITY_TIMEOUT": str(LONGEST_TIME_LIMIT)},
        f"SONIQUEBAY_VISIBILITY_TIMEOUT={LONGEST_TIME_LIMIT} must exceed the longest task time limit "
        f"({LONGEST_TIME_LIMIT} s), or running tasks get delivered twice",
    ),
    (
        {"SONIQUEBAY_VISIBILITY_TIMEOUT": "1800", "SONIQUEBAY_TIME_LIMIT_EXTRACT": "2400"},
        "SONIQUEBAY_VISIBILITY_TIMEOUT=1800 must exceed the longest task time limit (2400 s), "
        "or running tasks get delivered twice",
    ),
    (
        {"SONIQUEBAY_ARTIST_SEPARATORS": '[" feat. ", "  "]'},
        "SONIQUEBAY_ARTIST_SEPARATORS holds '  ': a separator of only spaces would split every name "
        "that has one",
    ),
    (
        {"SONIQUEBAY_ARTIST_NAMES_KEPT": "AC/DC"},
        "SONIQUEBAY_ARTIST_NAMES_KEPT='AC/DC' is not a JSON list of non-empty strings",
    ),
]


@pytest.mark.parametrize(("env", "message"), REFUSED)
def test_building_the_app_refuses_a_visibility_timeout_not_above_the_longest_time_limit(
    monkeypatch, env, message
):
    from backend_worker.app import build_app

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        build_app()
    assert str(refused.value) == message


def test_time_limits_are_configurable_per_queue(monkeypatch):
    monkeypatch.setenv("SONIQUEBAY_TIME_LIMIT_EXTRACT", "120")
    assert queue_time_limits()["extract"] == 120
    monkeypatch.setenv("SONIQUEBAY_TIME_LIMIT_DEFERRED", "5")
    with pytest.raises(ConfigError, match="SONIQUEBAY_TIME_LIMIT_DEFERRED=5 must be at least 40"):
        queue_time_limits()


def test_urls_are_shown_without_credentials():
    assert url_without_credentials("postgresql://soniquebay:s3cret@db.example:5432/soniquebay") == (
        "postgresql://db.example:5432/soniquebay"
    )
    assert url_without_credentials("redis://:s3cret@127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert url_without_credentials("postgresql:///soniquebay") == "postgresql://localhost/soniquebay"
    assert url_without_credentials("redis://:s3cret@host:notaport/0") == "redis://host/0"


def test_the_broker_login_comes_from_the_user_and_password_settings(monkeypatch):
    monkeypatch.setenv("SONIQUEBAY_BROKER_URL", "redis://10.0.0.10:6379/2")
    monkeypatch.delenv("SONIQUEBAY_BROKER_USER", raising=False)
    assert Settings.from_env().broker_url == "redis://10.0.0.10:6379/2"
    monkeypatch.setenv("SONIQUEBAY_BROKER_USER", "flower")
    monkeypatch.setenv("SONIQUEBAY_BROKER_PASSWORD", "p@ss:word/1")
    assert Settings.from_env().broker_url == "redis://flower:p%40ss%3Aword%2F1@10.0.0.10:6379/2"
    # A login in the URL gives way to the user's: Flower's env file overrides the workers' login.
    monkeypatch.setenv("SONIQUEBAY_BROKER_URL", "redis://workers:theirs@10.0.0.10:6379/2")
    assert Settings.from_env().broker_url == "redis://flower:p%40ss%3Aword%2F1@10.0.0.10:6379/2"
