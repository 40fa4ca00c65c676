"""The broker's users as the redis role ships them (testkit.services.redis_user_rules): each service
does its own work and nothing an admin alone may do. The whole suite's workers and command already
run as `workers`; here the refusals, and Flower and the exporter on their own users."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest
import redis

from testkit import audio_fixtures, services

pytestmark = pytest.mark.integration

ADMIN_ONLY = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "SET", "maxmemory", "1"),
    ("CONFIG", "GET", "requirepass"),
    ("SHUTDOWN", "NOSAVE"),
    ("DEBUG", "SLEEP", "0"),
    ("KEYS", "*"),
    ("MONITOR",),
    ("ACL", "LIST"),
    ("ACL", "SETUSER", "intruder", "on", ">intruder-password", "+@all"),
]
# What the read-only exporter must not do either: every kind of write.
WRITES = [("SET", "k", "v"), ("LPUSH", "extract", "x"), ("DEL", "scan"), ("PUBLISH", "celeryev", "x")]


def denied(admin: redis.Redis, user: str, *command: str) -> bool:
    """ACL DRYRUN: would Redis refuse `command` to `user` for want of permission? (DEBUG and
    MONITOR cannot be tried for real: Redis refuses DEBUG to everyone, MONITOR never returns.)"""
    try:
        answer = admin.execute_command("ACL", "DRYRUN", user, *command)
    except redis.ResponseError as exc:
        return "no permissions" in str(exc)
    return "no permissions" in str(answer)


@pytest.mark.parametrize("user", ["workers", "flower", "exporter"])
def test_no_service_user_runs_an_admin_command(broker, user):
    admin = redis.Redis.from_url(broker.admin_url)
    client = redis.Redis.from_url(broker.url_for(user))
    for command in ADMIN_ONLY:
        assert denied(admin, user, *command), f"{user} may run {command}"
    # Tried for real too, where trying cannot harm.
    for command in [("FLUSHALL",), ("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "GET", "*")]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    assert admin.config_get("maxmemory") == {"maxmemory": "0"}
    assert not denied(admin, "admin", "CONFIG", "GET", "maxmemory")


def test_the_exporter_writes_nothing_and_the_default_user_is_off(broker):
    admin = redis.Redis.from_url(broker.admin_url)
    exporter = redis.Redis.from_url(broker.url_for("exporter"))
    for command in WRITES:
        assert denied(admin, "exporter", *command), f"the exporter may run {command}"
    with pytest.raises(redis.exceptions.NoPermissionError):
        exporter.lpush("extract", "x")
    assert exporter.llen("extract") >= 0
    anonymous = redis.Redis(host="127.0.0.1", port=broker.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong = redis.Redis(host="127.0.0.1", port=broker.port, username="workers", password="wrong-pass-123")
        wrong.ping()


def get_json(url: str, timeout: float = 10):
    return json.loads(urllib.request.urlopen(url, timeout=timeout).read())


def test_flower_works_on_its_own_user(pipeline, library, broker, tmp_path):
    """Flower as deployed logs in as `flower`: the workers' list (remote control through the broker),
    the broker's queues, a task revoked, and the events of a scan's tasks."""
    audio_fixtures.build_library(library, artists=1, albums_per_artist=2, tracks_per_album=3)
    port = services.free_port()
    # The API without a login: loopback, this test only (deployed, Flower asks for its password).
    env = {**os.environ, **broker.login_env("flower"), "FLOWER_UNAUTHENTICATED_API": "true"}
    log = tmp_path / "flower.log"  # Flower runs as root here
    argv = [str(services.VENV_BIN / "celery"), "-A", "backend_worker", "flower", "--address=127.0.0.1",
            f"--port={port}", "--url_prefix=flower"]  # fmt: skip
    with (
        open(log, "wb") as out,
        services.process_listening(argv, port, env=env, stdout=out, stderr=subprocess.STDOUT),
    ):
        base = f"http://127.0.0.1:{port}/flower"
        expected = {f"{queue}-1@{socket.gethostname()}" for queue in services.QUEUES}
        deadline = time.monotonic() + 60
        while set(get_json(f"{base}/api/workers?refresh=1", timeout=30)) < expected:
            assert time.monotonic() < deadline, f"Flower lists {get_json(f'{base}/api/workers')}"
            time.sleep(1)
        queues = {q["name"]: q for q in get_json(f"{base}/api/queues/length")["active_queues"]}
        assert set(services.QUEUES) <= set(queues)
        nobody = "00000000-0000-0000-0000-000000000000"
        revoked = urllib.request.urlopen(
            urllib.request.Request(f"{base}/api/task/revoke/{nobody}", method="POST"), timeout=30
        )
        assert revoked.status == 200
        assert pipeline.scan(library)["status"] == "completed"
        deadline = time.monotonic() + 30
        while not get_json(f"{base}/api/tasks?limit=5"):
            assert time.monotonic() < deadline, "Flower saw no task events"
            time.sleep(1)
    text = log.read_text(errors="replace")
    assert "NOPERM" not in text and "WRONGPASS" not in text, text[-3000:]
