"""Wrong broker or database settings: the CLI says so in one line (exit 2); a worker started with
them keeps running and retrying, one log line per attempt, instead of exiting into a restart loop."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from testkit import services

pytestmark = pytest.mark.integration

PW_ROLE = "soniquebay_pw"
RIGHT_PASSWORD = "right-password-123"
WRONG_PASSWORD = "wrong-password-456"
HBA_LINE = f"host all {PW_ROLE} 127.0.0.1/32 scram-sha-256  # tests/integration/test_bad_config.py\n"
ALIVE_FOR = 20  # seconds a misconfigured worker must stay up


@pytest.fixture(scope="module")
def password_redis():
    """A private redis-server that requires a password (the suite's has none)."""
    workdir = services.shared_tempdir("soniquebay-pwredis-")
    port = services.free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
            "--appendonly", "no", "--requirepass", RIGHT_PASSWORD]  # fmt: skip
    try:
        with services.process_listening(argv, port, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT):
            yield port
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


@pytest.fixture(scope="module")
def password_role(postgres):
    """A role that must log in with a password (scram), on the suite's cluster (trust for others)."""
    hba = postgres.datadir / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {PW_ROLE}")
        conn.execute(f"CREATE ROLE {PW_ROLE} LOGIN PASSWORD '{RIGHT_PASSWORD}'")
        hba.write_text(HBA_LINE + original)  # first match wins: ahead of the trust lines
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield postgres.port
    finally:
        hba.write_text(original)
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP ROLE IF EXISTS {PW_ROLE}")


def _url(role_port: int, password: str) -> str:
    return f"postgresql://{PW_ROLE}:{password}@127.0.0.1:{role_port}/soniquebay"


def test_the_role_with_a_password_works_with_the_right_one(password_role):
    with psycopg.connect(_url(password_role, RIGHT_PASSWORD), connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (PW_ROLE,)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("db-wrong-password", f'password authentication failed for user "{PW_ROLE}"'),
        ("db-wrong-port", "Connection refused"),
        ("db-wrong-host", "failed"),
    ],
)
def test_cli_names_a_wrong_database_url_in_one_line(db_conn, password_role, case, expected):
    url = {
        "db-wrong-password": _url(password_role, WRONG_PASSWORD),
        "db-wrong-port": f"postgresql://{PW_ROLE}:{WRONG_PASSWORD}@127.0.0.1:1/soniquebay",
        "db-wrong-host": f"postgresql://{PW_ROLE}:{WRONG_PASSWORD}@no-such-host.invalid:5432/soniquebay",
    }[case]
    proc = _cli({"SONIQUEBAY_DATABASE_URL": url}, "status")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith(f"soniquebay: cannot use PostgreSQL at {url.split('@')[0][:13]}"), (
        proc.stderr
    )
    assert expected in proc.stderr
    assert WRONG_PASSWORD not in proc.stderr and PW_ROLE + ":" not in proc.stderr


@pytest.mark.parametrize("case", ["broker-wrong-password", "broker-no-password", "broker-wrong-port"])
def test_cli_names_a_wrong_broker_url_in_one_line(db_conn, password_redis, library, case):
    url, expected = {
        "broker-wrong-password": (
            f"redis://:{WRONG_PASSWORD}@127.0.0.1:{password_redis}/0",
            "invalid username-password pair",
        ),
        "broker-no-password": (f"redis://127.0.0.1:{password_redis}/0", "Authentication required"),
        "broker-wrong-port": (f"redis://:{WRONG_PASSWORD}@127.0.0.1:1/0", "Connection refused"),
    }[case]
    proc = _cli({"SONIQUEBAY_BROKER_URL": url}, "scan", str(library))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert f"soniquebay: cannot use the broker at redis://127.0.0.1:{port}/0: " in proc.stderr
    assert expected in proc.stderr
    assert WRONG_PASSWORD not in proc.stderr
    assert db_conn.execute("SELECT count(*) FROM scan_sessions").fetchone() == (0,)


# --- worker processes -----------------------------------------------------------------------------


def _start_worker(logfile: Path, name: str, queue: str, env: dict[str, str]) -> subprocess.Popen:
    with open(logfile, "ab") as log:
        return subprocess.Popen(
            ["setpriv", f"--reuid={services.WORKER_USER}", "--regid=nogroup", "--clear-groups",
             str(services.VENV_BIN / "celery"), "-A", "backend_worker", "worker", "-Q", queue, "-c", "2",
             "-n", f"{name}@%h", "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
            cwd="/", env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]
    return []


def test_workers_with_a_wrong_broker_or_database_keep_running_and_say_why(
    services_up, password_redis, password_role, tmp_path
):
    """Four workers at once, each with one wrong setting; after 20 s all still run, each log names
    the problem once per attempt, no traceback, no password. A task sent to the worker whose
    database password is wrong is retried with backoff, not lost or crashed on."""
    from backend_worker.app import app

    logdir = services.shared_tempdir("soniquebay-badcfg-")
    logdir.chmod(0o777)
    suite_broker = os.environ["SONIQUEBAY_BROKER_URL"]
    # The database cases use their own Redis database: their queues are not the suite's.
    isolated_broker = suite_broker.rsplit("/", 1)[0] + "/7"
    cases = {
        "broker-wrong-password": (
            {"SONIQUEBAY_BROKER_URL": f"redis://:{WRONG_PASSWORD}@127.0.0.1:{password_redis}/0"},
            rf"consumer: Cannot connect to redis://:\*\*@127\.0\.0\.1:{password_redis}/0: "
            r"invalid username-password pair",
        ),
        "broker-wrong-port": (
            {"SONIQUEBAY_BROKER_URL": f"redis://:{WRONG_PASSWORD}@127.0.0.1:1/0"},
            r"consumer: Cannot connect to redis://:\*\*@127\.0\.0\.1:1/0: .*Connection refused",
        ),
        "db-wrong-password": (
            {
                "SONIQUEBAY_BROKER_URL": isolated_broker,
                "SONIQUEBAY_DATABASE_URL": _url(password_role, WRONG_PASSWORD),
            },
            rf"cannot use PostgreSQL at postgresql://127\.0\.0\.1:{password_role}/soniquebay: .*"
            rf'password authentication failed for user "{PW_ROLE}"; trying again in \d+ s',
        ),
        "db-wrong-port": (
            {
                "SONIQUEBAY_BROKER_URL": isolated_broker,
                "SONIQUEBAY_DATABASE_URL": f"postgresql://{PW_ROLE}:{WRONG_PASSWORD}@127.0.0.1:1/soniquebay",
            },
            r"cannot use PostgreSQL at postgresql://127\.0\.0\.1:1/soniquebay: .*Connection refused.*; "
            r"trying again in \d+ s",
        ),
    }
    queues = {"db-wrong-password": "deferred", "db-wrong-port": "soniquebay-probe"}
    procs = {}
    try:
        for n, (case, (env, _)) in enumerate(cases.items()):
            procs[case] = _start_worker(
                logdir / f"{case}.log", f"badcfg{n}-{uuid.uuid4().hex[:6]}", queues.get(case, "scan"), env
            )
        # A task for the worker whose database password is wrong (on its isolated broker).
        session_id = str(uuid.uuid4())
        with app.connection_for_write(isolated_broker) as conn:
            conn.default_channel.queue_purge("deferred")
            app.send_task(
                "deferred.finalize", kwargs={"session_id": session_id}, queue="deferred", connection=conn
            )
        time.sleep(5)
        pools = {case: _children(proc.pid) for case, proc in procs.items()}
        time.sleep(ALIVE_FOR - 5)
        for case, proc in procs.items():
            assert proc.poll() is None, f"{case}: the worker exited\n{(logdir / f'{case}.log').read_text()}"
        logs = {case: (logdir / f"{case}.log").read_text(errors="replace") for case in cases}
        for case, (_, pattern) in cases.items():
            log = logs[case]
            problem_lines = [line for line in log.splitlines() if re.search(pattern, line)]
            # Backoff: 2, 4, 6, ... s for the broker (Celery), 2, 4, 8, ... s for the database.
            assert 3 <= len(problem_lines) <= 8, f"{case}: {len(problem_lines)} lines\n{log}"
            assert "Traceback" not in log, f"{case}:\n{log}"
            assert WRONG_PASSWORD not in log and RIGHT_PASSWORD not in log, f"{case}: password in the log"
            if case.startswith("broker"):
                assert "(1/None)" in log, f"{case}: the broker retries are bounded\n{log}"
        for case in ("db-wrong-password", "db-wrong-port"):
            assert _children(procs[case].pid) == pools[case], f"{case}: pool processes changed"
            assert "WorkerLostError" not in logs[case]
        # The task met the wrong password and was retried, not failed or lost.
        retries = re.findall(
            r"Task deferred\.finalize\[[0-9a-f-]+\] retry: Retry in \d+s", logs["db-wrong-password"]
        )
        assert retries, logs["db-wrong-password"]
        assert "password authentication failed" in logs["db-wrong-password"].split("retry: Retry in", 1)[1]
        assert "raised unexpected" not in logs["db-wrong-password"]
    finally:
        services.stop_process_groups(procs.values())
        with contextlib.suppress(Exception), app.connection_for_write(isolated_broker) as conn:
            conn.default_channel.queue_purge("deferred")
        subprocess.run(["rm", "-rf", str(logdir)], check=False)
