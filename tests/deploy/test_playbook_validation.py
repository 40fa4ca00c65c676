"""A wrong inventory value fails the playbook in its validation tasks, naming the value, before
any task that could change a machine.

Each case runs the real `ansible-playbook` against a one-host inventory with connection local and
three guards, so nothing is ever provisioned here: check mode, no privilege escalation, and a
Python interpreter that does not exist on the host, so any module that would run on it (apt,
user, file...) fails at once. Validation (argument specs, assert) runs on the controller and is
not affected. A control case with good values shows the validation passes and the first real
task is stopped by the guard.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
HOST = "validation-only"
GUARD_INTERPRETER = "/nonexistent/soniquebay-validation-guard/python3"
GOOD_PASSWORD = "Good-Password.123456"

INVENTORY = f"""\
all:
  hosts:
    {HOST}:
      ansible_connection: local
      ansible_python_interpreter: {GUARD_INTERPRETER}
  children:
    broker: {{hosts: {{{HOST}: {{}}}}}}
    database: {{hosts: {{{HOST}: {{}}}}}}
    workers: {{hosts: {{{HOST}: {{}}}}}}
    monitoring: {{hosts: {{{HOST}: {{}}}}}}
"""


def pool(queue: str = "scan", **changes) -> dict:
    entry = {"queue": queue, "units": 1, "concurrency": 2, "prefetch_multiplier": 1}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


LIMITS = {"scan": 600, "extract": 600, "batch": 300, "insert": 600, "deferred": 900}
ARG_SPEC = "backend_worker : Validating arguments against arg spec 'main'"
POOLS = "backend_worker : Validate the worker pools"
LAYOUT = "backend_worker : Validate the worker layout as a whole"
TIMEOUTS = "backend_worker : Validate the timeouts"
ADDRESSES = "backend_worker : Validate the broker and database addresses"
PASSWORDS = "backend_worker : Validate the passwords"
WATCH = "backend_worker : Validate the library watch and the scheduled scans"
NAMES = "backend_worker : Validate the artist separators and the names kept whole"

# id: (playbook, extra vars, the task that must fail, words its message must hold)
CASES: dict[str, tuple[str, dict, str, str]] = {
    "unknown-queue": (
        "workers.yml",
        {"backend_worker_pools": [pool("scna")]},
        ARG_SPEC,
        "value of queue must be one of: scan, extract, batch, insert, deferred, got: scna "
        "found in backend_worker_pools",
    ),
    "unknown-pool": (
        "workers.yml",
        {"backend_worker_pools": [pool(pool="gevent")]},
        ARG_SPEC,
        "value of pool must be one of: prefork, threads, solo, got: gevent",
    ),
    "units-not-a-number": (
        "workers.yml",
        {"backend_worker_pools": [pool(units="two")]},
        ARG_SPEC,
        "argument 'units' is of type str found in 'backend_worker_pools'",
    ),
    "zero-concurrency": (
        "workers.yml",
        {"backend_worker_pools": [pool(concurrency=0)]},
        POOLS,
        "Bad entry in backend_worker_pools for queue scan: concurrency=0 must be at least 1.",
    ),
    "zero-units": (
        "workers.yml",
        {"backend_worker_pools": [pool("extract", units=0)]},
        POOLS,
        "Bad entry in backend_worker_pools for queue extract: units=0 must be at least 1.",
    ),
    "negative-units": (
        "workers.yml",
        {"backend_worker_pools": [pool(units=-2)]},
        POOLS,
        "Bad entry in backend_worker_pools for queue scan: units=-2 must be at least 1.",
    ),
    "zero-prefetch": (
        "workers.yml",
        {"backend_worker_pools": [pool("insert", prefetch_multiplier=0)]},
        POOLS,
        "Bad entry in backend_worker_pools for queue insert: prefetch_multiplier=0 must be at least 1.",
    ),
    "unknown-memory-max": (
        "workers.yml",
        {"backend_worker_pools": [pool(memory_max="2 GB")]},
        POOLS,
        "memory_max=2 GB must be a size such as 512M, 2G, 50% or infinity",
    ),
    "queue-without-time-limit": (
        "workers.yml",
        {
            "backend_worker_pools": [pool("batch")],
            "backend_worker_queue_time_limits": {k: v for k, v in LIMITS.items() if k != "batch"},
        },
        POOLS,
        "queue batch: the queue has no time limit in backend_worker_queue_time_limits",
    ),
    "blank-artist-separator": (
        "workers.yml",
        {"backend_worker_artist_separators": [" feat. ", "\t"]},
        NAMES,
        'backend_worker_artist_separators has ["\\t"]: each must hold a non-blank character',
    ),
    "artist-name-kept-with-a-quote": (
        "workers.yml",
        {"backend_worker_artist_names_kept": ["AC/DC", "Guns N' Roses / Slash"]},
        NAMES,
        'backend_worker_artist_names_kept has ["Guns N\' Roses / Slash"]: each must hold',
    ),
    "no-pools": ("workers.yml", {"backend_worker_pools": []}, LAYOUT, "backend_worker_pools must list"),
    "time-limit-below-40": (
        "workers.yml",
        {"backend_worker_queue_time_limits": {**LIMITS, "scan": 10}},
        TIMEOUTS,
        "backend_worker_queue_time_limits={'scan': 10, ",
    ),
    "visibility-timeout-equal-to-a-time-limit": (
        "workers.yml",
        {"backend_worker_visibility_timeout": 900},
        TIMEOUTS,
        "backend_worker_visibility_timeout=900 must exceed the longest task time limit (900 s)",
    ),
    "visibility-timeout-below-a-raised-time-limit": (
        "workers.yml",
        {"backend_worker_queue_time_limits": {**LIMITS, "deferred": 2400}},
        TIMEOUTS,
        "backend_worker_visibility_timeout=1800 must exceed the longest task time limit (2400 s)",
    ),
    "zero-db-port": (
        "workers.yml",
        {"backend_worker_db_port": 0},
        ADDRESSES,
        "backend_worker_db_port=0 must be a port (1-65535)",
    ),
    "empty-broker-password": (
        "workers.yml",
        {"soniquebay_redis_password": ""},
        PASSWORDS,
        "backend_worker_redis_password must be at least 12 characters of letters, digits and ._~- "
        "(it goes into a URL): it is empty or missing; set it with soniquebay_redis_password",
    ),
    "missing-database-password": (
        "workers.yml",
        {"soniquebay_postgresql_password": None},
        PASSWORDS,
        "backend_worker_db_password must be at least 12 characters",
    ),
    "password-that-breaks-the-url": (
        "workers.yml",
        {"soniquebay_postgresql_password": "pass@word:with/slashes"},
        PASSWORDS,
        "backend_worker_db_password must be at least 12 characters of letters, digits and ._~-",
    ),
    "short-owner-password": (
        "workers.yml",
        {"soniquebay_postgresql_owner_password": "short"},
        PASSWORDS,
        "backend_worker_db_owner_password must be at least 12 characters of letters, digits and ._~- "
        "(it goes into a URL); set it with soniquebay_postgresql_owner_password",
    ),
    "owner-password-that-breaks-the-url": (
        "database.yml",
        {"soniquebay_postgresql_owner_password": "pass@word:with/slashes"},
        "postgresql : Validate the PostgreSQL passwords",
        "postgresql_owner_password must be at least 12 characters of letters, digits and ._~-",
    ),
    "no-backup-kept": (
        "database.yml",
        {"postgresql_backup_keep": 0},
        "postgresql : Validate the backup settings",
        "postgresql_backup_keep=0 (how many dumps to keep, 1 or more)",
    ),
    "relative-backup-directory": (
        "database.yml",
        {"postgresql_backup_dir": "backups"},
        "postgresql : Validate the backup settings",
        'postgresql_backup_dir="backups" (an absolute path without spaces)',
    ),
    "zero-quiet-period": (
        "workers.yml",
        {"backend_worker_watch_quiet_seconds": 0},
        WATCH,
        "backend_worker_watch_quiet_seconds=0 must be a whole number of seconds, at least 1",
    ),
    "inotify-watches-neither-auto-nor-a-number": (
        "workers.yml",
        {"backend_worker_inotify_max_user_watches": "lots"},
        "backend_worker : Validate the inotify limits of the watch",
        "backend_worker_inotify_max_user_watches=lots must be auto or a whole number from 8192",
    ),
    "retention-without-a-unit-we-know": (
        "workers.yml",
        {"backend_worker_missing_retention": "30 days"},
        "backend_worker : Validate the missing tracks' retention",
        "backend_worker_missing_retention=30 days must be a whole number and s, m, h or d",
    ),
    "watch-host-not-a-worker": (
        "workers.yml",
        {"backend_worker_watch_host": "db1"},
        WATCH,
        f"backend_worker_watch_host=db1 must be a host of the workers group ({HOST})",
    ),
    "a-broker-user-named-default": (
        "broker.yml",
        {
            "redis_users": [
                {"name": "admin", "password": GOOD_PASSWORD, "rules": "~* +@all"},
                {"name": "workers", "password": GOOD_PASSWORD, "rules": "~* +@all -@dangerous"},
                {"name": "default", "password": GOOD_PASSWORD, "rules": "~* +@all"},
            ]
        },
        "redis : Validate the Redis users",
        "Bad redis_users (names admin, workers, default): each name once, lower case letters, digits, "
        "_ and -, not `default`",
    ),
    "short-flower-broker-password": (
        "monitoring.yml",
        {"soniquebay_redis_flower_password": "short"},
        "flower : Validate the Flower settings",
        "flower_redis_password must be at least 12 characters of letters, digits and ._~- "
        "(it is 5 characters)",
    ),
    # The whole site: the broker tier validates its password before installing Redis.
    "site-empty-broker-password": (
        "site.yml",
        {"soniquebay_redis_password": ""},
        "redis : Validate the Redis settings",
        "redis_password must be at least 12 characters",
    ),
}
# Good values: every validation passes; the first real task is stopped by the interpreter guard.
CONTROLS = {"workers.yml": "backend_worker : Install the host packages the app needs"}


def _run(playbook: str, extra: dict, workdir: Path) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "hosts.yml").write_text(INVENTORY)
    base = {
        # Never the repository's credentials/: nothing may be generated there by a test.
        "soniquebay_credentials_dir": str(workdir / "credentials"),
        "soniquebay_redis_password": GOOD_PASSWORD,
        "soniquebay_postgresql_password": GOOD_PASSWORD,
        "soniquebay_flower_admin_password": GOOD_PASSWORD,
        "ansible_become": False,
    }
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_GATHERING": "explicit",  # no fact gathering: it is a module run on the host
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
        "ANSIBLE_HOME": str(workdir / "home"),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(workdir / "hosts.yml"), f"playbooks/{playbook}",
            "--check", "-e", json.dumps(base), "-e", json.dumps(extra)]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case and control at once (each is a separate ansible-playbook of ~2 s)."""
    root = tmp_path_factory.mktemp("playbook-validation")
    jobs = {case: (playbook, extra) for case, (playbook, extra, _, _) in CASES.items()}
    jobs |= {f"control-{playbook}": (playbook, {}) for playbook in CONTROLS}
    with ThreadPoolExecutor(max_workers=max(2, 2 * (os.cpu_count() or 1))) as pool_:
        futures = {case: pool_.submit(_run, pb, extra, root / case) for case, (pb, extra) in jobs.items()}
        return {case: future.result() for case, future in futures.items()}


def _tasks(output: str) -> list[str]:
    return re.findall(r"^TASK \[(.+?)\] \*", output, flags=re.MULTILINE)


def _recap(output: str) -> dict[str, int]:
    line = re.search(rf"^{HOST}\s*:(.*)$", output, flags=re.MULTILINE)
    assert line, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def _nothing_changed(output: str) -> None:
    recap = _recap(output)
    assert recap["changed"] == 0 and recap["failed"] == 1, recap
    assert not re.search(r"^changed: ", output, flags=re.MULTILINE), output[-3000:]


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_value_fails_in_validation_naming_it(results, case):
    _, _, failing_task, words = CASES[case]
    proc = results[case]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]  # 2: a host failed
    tasks = _tasks(output)
    assert tasks and tasks[-1].startswith(failing_task), tasks
    # Only validation ran: argument specs and assert tasks (and, for site.yml, nothing else either).
    assert all("Validat" in task for task in tasks), tasks
    error = re.search(r"^\[ERROR\]: (.*?)^Origin", output, flags=re.MULTILINE | re.DOTALL)
    assert error, output[-3000:]
    assert words in " ".join(error.group(1).split()), error.group(1)
    assert GOOD_PASSWORD not in output
    _nothing_changed(output)


@pytest.mark.parametrize("playbook", list(CONTROLS))
def test_good_values_pass_validation_and_the_guard_stops_the_first_real_task(results, playbook):
    proc = results[f"control-{playbook}"]
    output = proc.stdout + proc.stderr
    tasks = _tasks(output)
    assert tasks[-1] == CONTROLS[playbook], tasks
    assert all("Validat" in task for task in tasks[:-1]), tasks
    assert f"The module interpreter '{GUARD_INTERPRETER}' was not found" in output, output[-3000:]
    _nothing_changed(output)
