"""Faults injected into scans on the deployed test host: nothing lost, nothing duplicated, every
session completed within three minutes of the fault, and nothing open that should not be.

The test host runs the shipped settings (task limits 300-900 s, Redis visibility timeout 1,800 s):
what a killed worker or a restarted broker leaves behind comes back through the ledger
(backend_worker.delivery), not after the visibility timeout.

Scans of a 2,000-file library take a few seconds here, too short to hit a stage by timing alone.
So each fault test holds the stage it targets: its units are stopped, the scan runs until that
stage's queue holds the work, then one unit starts, takes messages, and the fault strikes while it
holds them (its heartbeat names them).
"""

from __future__ import annotations

import random
import shlex
import subprocess
import time

import pytest

from backend_worker.config import DEFAULT_TIME_LIMITS
from testkit.deploy import chaos
from testkit.deploy.checks import FLOWER, LIBRARY, SECRETS, wait_all_active
from testkit.deploy.layout import LAYOUT, POOLS, WORKER_UNITS
from testkit.deploy.ops import (
    RECOVERY_LIMIT,
    BackgroundScan,
    assert_library_is_exactly,
    assert_recovered_in_time,
    hold_stage,
    put_library,
    redis,
    release_one_holding_messages,
    resume,
    units_of,
    wait_for,
)
from testkit.machine import REPO
from testkit.stack import http, psql, soniquebay_json

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def library(deployed, tmp_path_factory):
    return put_library(deployed, tmp_path_factory.mktemp("reliability") / "music", **chaos.LIBRARY_SHAPE)


def assert_scan_landed_everything(host, scan: BackgroundScan, library: list[dict]) -> dict:
    session = scan.result(timeout=600)
    assert session["status"] == "completed", session
    counts = session["counts"]
    assert counts["discovered"] == len(library) and counts["inserted"] == len(library), counts
    assert counts["errors"] == 0, counts
    assert_library_is_exactly(host, library)
    return session


def test_the_fault_tests_run_on_the_shipped_timeouts(deployed):
    env = dict(
        line.split("=", 1)
        for line in deployed.ssh("cat /etc/soniquebay/soniquebay.env").stdout.splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert env["SONIQUEBAY_VISIBILITY_TIMEOUT"] == "1800"
    for queue, limit in DEFAULT_TIME_LIMITS.items():
        assert env[f"SONIQUEBAY_TIME_LIMIT_{queue.upper()}"] == str(limit), queue


@pytest.mark.parametrize("queue", list(LAYOUT))
def test_kill_9_of_a_worker_holding_messages_loses_and_duplicates_nothing(deployed, library, queue):
    unit = units_of(queue)[0]
    scan = hold_stage(deployed, queue)
    frozen = []
    try:
        frozen = release_one_holding_messages(deployed, queue)
        # Read after the unit's `systemctl start` (in the line above): an explicit start resets it.
        restarts = int(deployed.ssh(f"systemctl show -P NRestarts {unit}").stdout)
        since = deployed.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        deployed.ssh(f"kill -9 {deployed.unit_main_pid(unit)}")
        fault_at = time.time()
    finally:
        # systemd kills the orphaned pool processes at once (KillMode=mixed, the main process is
        # gone), then restarts the unit; the other units of the queue start. A `systemctl start`
        # of the killed one would not count as a restart.
        resume(deployed, frozen)
        if units_of(queue)[1:]:
            deployed.ssh("systemctl start " + " ".join(units_of(queue)[1:]))
    session = assert_scan_landed_everything(deployed, scan, library)
    assert_recovered_in_time(session, fault_at)
    # What it held sat in Redis' unacked hash for the visibility timeout: the ledger sent it again.
    assert session["resent"] >= 1, session
    journal = deployed.ssh(f"journalctl --since '{since}' --no-pager -o cat -u 'soniquebay-worker-*'").stdout
    assert "re-sent " in journal or "nothing pending and nothing moved" in journal, journal[-3000:]
    wait_all_active(deployed)
    assert int(deployed.ssh(f"systemctl show -P NRestarts {unit}").stdout) > restarts, "systemd restarted it"


# The queue whose units run a prefork pool (the others run threads: nothing to kill but the worker).
PREFORK = next(queue for queue, pool in POOLS.items() if pool == "prefork")


def test_kill_9_of_a_pool_process_loses_and_duplicates_nothing(deployed, library):
    scan = hold_stage(deployed, PREFORK)
    frozen = release_one_holding_messages(deployed, PREFORK)
    assert frozen, f"{units_of(PREFORK)[0]} has pool processes"
    try:
        deployed.ssh(f"kill -9 {frozen[0]}")
        fault_at = time.time()
    finally:
        resume(deployed, frozen[1:])
        if units_of(PREFORK)[1:]:
            deployed.ssh("systemctl start " + " ".join(units_of(PREFORK)[1:]))
    session = assert_scan_landed_everything(deployed, scan, library)
    assert_recovered_in_time(session, fault_at)
    wait_all_active(deployed)


def assert_fault_while_held_loses_nothing(host, library: list[dict], queue: str, fault) -> None:
    """A scan held at `queue` (hold_stage), one of its units let go with the messages it took; then
    fault() strikes: the scan lands every file, once, within RECOVERY_LIMIT of the fault."""
    scan = hold_stage(host, queue)
    resume(host, release_one_holding_messages(host, queue))
    fault_at = time.time()
    fault()
    session = assert_scan_landed_everything(host, scan, library)
    assert_recovered_in_time(session, fault_at)


def test_restarting_the_workers_mid_scan_requeues_or_finishes_their_tasks(deployed, library):
    def restart_every_worker():
        # Warm shutdown: running tasks finish, prefetched ones go back to the queue.
        deployed.ssh("systemctl restart soniquebay-workers.target", timeout=600)

    assert_fault_while_held_loses_nothing(deployed, library, "extract", restart_every_worker)
    wait_all_active(deployed)


def test_stopping_and_starting_a_stage_mid_scan_loses_nothing(deployed, library):
    def stop_and_start_the_holding_unit():
        # Stopped while it holds batches: it finishes the running ones, hands the others back.
        deployed.ssh(f"systemctl stop {units_of('insert')[0]}", timeout=300)
        deployed.ssh("systemctl start " + " ".join(units_of("insert")))

    assert_fault_while_held_loses_nothing(deployed, library, "insert", stop_and_start_the_holding_unit)


def test_redis_restarted_while_workers_hold_messages_loses_and_duplicates_nothing(deployed, library):
    """The broker restarts (an unattended upgrade does this) while an insert worker holds batches:
    its attempt to hand them back fails with Redis down, so they sit in Redis' unacked hash for
    the visibility timeout. The queued ones survive in the append-only file."""
    scan = hold_stage(deployed, "insert")
    queued = int(redis(deployed, "llen", "insert"))
    frozen = release_one_holding_messages(deployed, "insert")
    try:
        fault_at = time.time()
        deployed.ssh("systemctl restart redis-server", timeout=120)
    finally:
        resume(deployed, frozen)
    assert queued > 0
    deployed.ssh("systemctl start " + " ".join(units_of("insert")))
    session = assert_scan_landed_everything(deployed, scan, library)
    assert_recovered_in_time(session, fault_at)
    wait_all_active(deployed)


def test_postgresql_stopped_for_20_s_mid_scan_loses_and_duplicates_nothing(deployed, library):
    """PostgreSQL stops while an extract worker holds chunks and the scan is in flight: every task
    that needs it retries with backoff, and the session completes once it is back."""
    scan = hold_stage(deployed, "extract")
    session_id = scan.session_id()
    frozen = release_one_holding_messages(deployed, "extract")
    since = deployed.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    pending = int(
        psql(
            deployed, f"SELECT count(*) FROM scan_units WHERE session_id = '{session_id}' AND done_at IS NULL"
        )[0][0]
    )
    assert pending > 0, "the scan is in flight"
    deployed.ssh("systemctl stop postgresql")
    fault_at = time.time()
    try:
        # Frozen pool processes (prefork) go on; a thread pool's tasks waited at a lock of the
        # test's PostgreSQL session, which went with the server.
        if frozen:
            resume(deployed, frozen)
        deployed.ssh("systemctl start " + " ".join(units_of("extract")[1:]))
        time.sleep(20)
    finally:
        deployed.ssh("systemctl start postgresql")
    session = assert_scan_landed_everything(deployed, scan, library)
    assert session["id"] == session_id
    assert_recovered_in_time(session, fault_at)
    journal = deployed.ssh(
        f"journalctl --since '{since}' --no-pager -o cat -u 'soniquebay-worker-extract-*'"
    ).stdout
    retried = [line for line in journal.splitlines() if "extract.files" in line and "retry: Retry in" in line]
    assert retried, journal[-3000:]
    wait_all_active(deployed)


def test_a_reboot_mid_scan_never_leaves_a_session_running_and_a_new_scan_completes(deployed, library):
    scan = hold_stage(deployed, "extract")
    interrupted = scan.session_id()
    deployed.reboot()
    scan.proc.kill()
    wait_all_active(deployed)

    def settled():
        rows = psql(deployed, f"SELECT status FROM scan_sessions WHERE id = '{interrupted}'")
        return rows[0][0] if rows and rows[0][0] != "running" else None

    # Its queued work survived in Redis (append-only file), so it normally completes; a session
    # that cannot is failed by the stale-session check. Either way it does not stay "running".
    status = wait_for(settled, timeout=300, interval=3, what="the interrupted session to end")
    assert status in ("completed", "failed"), status
    session = soniquebay_json(deployed, "scan", LIBRARY, "--wait", "--json")
    assert session["status"] == "completed", session
    assert_library_is_exactly(deployed, library)


def test_random_faults_during_repeated_scans_lose_and_duplicate_nothing(deployed, library):
    """A short run of `make chaos` (bench/chaos.py): four random faults of four different kinds
    (random order and moments; the seed is printed and in every failure message), on the library
    and four hard-linked copies of it: 10,000 files, so that a scan lasts long enough to be struck."""
    seed = time.time_ns() % 2**32
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    expected = chaos.add_copies(deployed, library, 4)
    try:
        rounds = chaos.run(deployed, expected, faults=4, rng=rng, kinds=rng.sample(chaos.FAULTS, 4))
    finally:
        chaos.remove_copies(deployed)
    figures = {**chaos.summary(rounds), "seed": seed}
    assert figures["faults"] >= 4, figures
    assert figures["completed"] == figures["sessions"], figures
    assert figures["lost"] == figures["duplicated"] == figures["errors"] == 0, figures
    assert figures["recovery_max"] <= RECOVERY_LIMIT, figures


# ---- bad configuration -----------------------------------------------------------------------------


def test_a_unit_with_a_wrong_broker_password_retries_instead_of_crash_looping(deployed):
    unit = "soniquebay-worker-batch-1.service"
    dropin = f"/run/systemd/system/{unit}.d"
    wrong = "/run/soniquebay-wrong.env"
    # /run is the machine's tmpfs: written over SSH. Read after the main env file, so it wins.
    deployed.ssh(f"cat > {wrong}", input="SONIQUEBAY_BROKER_PASSWORD=not-the-password\n")
    deployed.ssh(
        f"mkdir -p {dropin} && cat > {dropin}/wrong.conf", input=f"[Service]\nEnvironmentFile={wrong}\n"
    )
    deployed.ssh(f"systemctl daemon-reload && systemctl restart {unit}")
    try:
        restarts = int(deployed.ssh(f"systemctl show -P NRestarts {unit}").stdout)
        since = deployed.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        time.sleep(25)
        assert deployed.ssh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active"
        assert int(deployed.ssh(f"systemctl show -P NRestarts {unit}").stdout) == restarts
        journal = deployed.ssh(f"journalctl -u {unit} --since '{since}' --no-pager -o cat").stdout
        errors = [line for line in journal.splitlines() if "Cannot connect" in line or "ERROR" in line]
        assert errors and any("invalid" in line.lower() or "auth" in line.lower() for line in errors), journal
        assert "Traceback" not in journal
        assert deployed.credential("redis") not in journal
    finally:
        deployed.ssh(f"rm -rf {dropin} {wrong}; systemctl daemon-reload; systemctl restart {unit}")
    wait_all_active(deployed)


def test_the_cli_names_a_wrong_database_or_broker_in_one_line(deployed):
    # override -> (command, the line's start, a word of the cause, in lower case)
    cases = {
        "SONIQUEBAY_DATABASE_URL=postgresql://soniquebay:wrong-password@127.0.0.1:5432/soniquebay": (
            "status",
            "soniquebay: cannot use PostgreSQL at postgresql://127.0.0.1:5432/soniquebay: ",
            "password authentication failed",
        ),
        "SONIQUEBAY_DATABASE_URL=postgresql://soniquebay:wrong-password@127.0.0.1:5999/soniquebay": (
            "status",
            "soniquebay: cannot use PostgreSQL at postgresql://127.0.0.1:5999/soniquebay: ",
            "refused",
        ),
        "SONIQUEBAY_BROKER_PASSWORD=wrong-password": (
            "scan /srv/music",
            "soniquebay: cannot use the broker at redis://127.0.0.1:6379/0: ",
            "password",
        ),
        "SONIQUEBAY_BROKER_URL=redis://127.0.0.1:6999/0": (
            "scan /srv/music",
            "soniquebay: cannot use the broker at redis://127.0.0.1:6999/0: ",
            "refused",
        ),
    }
    for override, (command, start, cause) in cases.items():
        script = (
            "set -a; . /etc/soniquebay/soniquebay.env; " + override + "; set +a; "
            "exec /opt/soniquebay/venv/bin/soniquebay " + command
        )
        proc = deployed.ssh(f"runuser -u soniquebay -- sh -c {shlex.quote(script)}", check=False)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (override, proc.returncode, lines)
        assert lines[0].startswith(start) and cause in lines[0].lower(), (override, lines[0])
        assert "wrong-password" not in lines[0]


# ---- security --------------------------------------------------------------------------------------


def test_only_flower_is_served_and_only_with_the_password(deployed):
    for path in ("/", "/index.html", "/api/workers", "/metrics", "/flower-other/", "/static/"):
        assert http("https://127.0.0.1" + path)[0] == 404, path
    for path in ("", "api/workers", "api/queues/length", "api/tasks", "metrics", "workers", "tasks"):
        assert http(FLOWER + path)[0] == 401, path
        assert http(FLOWER + path, auth=("admin", "definitely-wrong"))[0] == 401, path
        assert http(FLOWER + path, auth=("root", deployed.credential("flower-admin")))[0] == 401, path


def test_services_run_unprivileged_and_no_secret_shows_in_logs_or_the_repository(deployed):
    users = deployed.ssh(
        "for u in " + " ".join([*WORKER_UNITS, "soniquebay-flower.service", "soniquebay-exporter.service"])
        + "; do for p in $(systemctl show -P MainPID $u) $(pgrep -P $(systemctl show -P MainPID $u)); do"
        " ps -o user= -p $p; done; done"
    ).stdout.split()  # fmt: skip
    assert users and set(users) == {"soniquebay"}, set(users)
    logs = deployed.ssh(
        "journalctl --no-pager -o cat; cat /var/log/nginx/*.log 2>/dev/null", timeout=120
    ).stdout
    for name in SECRETS:
        secret = deployed.credential(name)
        assert secret not in logs, f"the {name} password is in a log"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in SECRETS:
        secret = deployed.credential(name).encode()
        for path in tracked.split(b"\0"):
            if path and (REPO / path.decode()).is_file():
                assert secret not in (REPO / path.decode()).read_bytes(), (name, path)
    world = deployed.ssh(
        "find /etc/soniquebay /var/lib/soniquebay /etc/nginx /etc/redis -perm -o=r -type f "
        "\\( -name '*.env' -o -name '*htpasswd*' -o -name '*.conf' -path '*redis*' -o -name '*.acl' \\)"
    ).stdout.split()
    assert world == [], f"world-readable secrets: {world}"
