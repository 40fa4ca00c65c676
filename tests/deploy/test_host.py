"""playbooks/site.yml on a freshly booted Debian 12 (systemd-nspawn), checked from outside like an operator.

The tests share one machine (tests/deploy/conftest.py) and run in file order: state checks first,
then a second converge, a layout change, restarts, a killed worker and a reboot.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from testkit import audio_fixtures
from testkit.deploy.checks import (
    FLOWER,
    LIBRARY,
    SECRETS,
    celery_inspect,
    flower_auth,
    flower_workers,
    reachable_from_another_address,
    wait_all_active,
)
from testkit.deploy.layout import SONIQUEBAY_UNITS, WORKER_UNITS, expected_layout
from testkit.deploy.ops import pool_children, redis
from testkit.machine import REPO
from testkit.stack import http, psql, soniquebay_json
from testkit.testhost import TestHost
from testkit.upgrade import assert_upgraded_during_scan

pytestmark = pytest.mark.deploy

COVERS = "/var/lib/soniquebay/covers"


def main_pids(host: TestHost, units: list[str]) -> dict[str, int]:
    out = host.ssh("for u in " + " ".join(units) + "; do systemctl show -P MainPID $u; done").stdout.split()
    return dict(zip(units, map(int, out), strict=True))


# ---- the upgrade in place (the session's first converge) -------------------------------------------


def test_the_first_converge_upgraded_the_release_before_in_place_during_a_20000_file_scan(upgrade):
    """The release before ran a scan; this release's site.yml migrated the schema and restarted every
    worker while the session ran, and the session still completed with every file a track, once."""
    assert upgrade is not None, "the upgrade runs on a fresh test host (not with SONIQUEBAY_TESTHOST)"
    host = next(iter(upgrade.builds))
    assert_upgraded_during_scan(upgrade, {host: set(WORKER_UNITS)})


# ---- the converged host ---------------------------------------------------------------------------


def test_first_converge_succeeds_and_every_unit_is_active(deployed, first_converge):
    assert first_converge.recap["failed"] == 0 and first_converge.recap["unreachable"] == 0
    assert first_converge.changed > 0
    wait_all_active(deployed)
    enabled = deployed.ssh("systemctl is-enabled " + " ".join(SONIQUEBAY_UNITS), check=False).stdout.split()
    assert enabled == ["enabled"] * len(SONIQUEBAY_UNITS)
    failed = deployed.ssh("systemctl --failed --no-legend --plain", check=False).stdout.strip()
    assert failed == "", failed


def test_worker_and_flower_units_are_hardened_and_verify_cleanly(deployed):
    services = [u for u in SONIQUEBAY_UNITS if u.endswith(".service")]
    verify = deployed.ssh(
        "cd /etc/systemd/system && systemd-analyze verify " + " ".join(SONIQUEBAY_UNITS), check=False
    )
    assert verify.stderr == "" and verify.returncode == 0, verify.stderr
    for unit in services:
        out = deployed.ssh(f"systemd-analyze security --no-pager {unit}").stdout
        exposure = float(out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
        assert exposure <= 2.0, f"{unit}: {exposure}\n{out}"
    props = deployed.ssh(
        "systemctl show -p User -p KillMode -p Type -p Restart -p TimeoutStopUSec -p NoNewPrivileges "
        "-p ProtectSystem -p PrivateTmp -p MemoryMax soniquebay-worker-deferred-1.service"
    ).stdout
    wanted = ["User=soniquebay", "KillMode=mixed", "Type=exec", "Restart=always", "TimeoutStopUSec=16min",
              "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"]  # fmt: skip
    # TimeoutStopSec: the deferred queue's shipped hard time limit (900 s) + the 60 s stop grace.
    for expected in wanted:
        assert expected in props, props
    assert "MemoryMax=infinity" not in props


def scheduling_policies(host: TestHost, unit: str) -> set[int]:
    """The CPU scheduling policies (0 other, 3 batch) of every thread of a unit's main process and
    of its pool children, from /proc/PID/task/TID/stat (the 41st field)."""
    tasks = " ".join(f"/proc/{pid}/task/*" for pid in [host.unit_main_pid(unit), *pool_children(host, unit)])
    out = host.ssh(f"for t in {tasks}; do cut -d')' -f2- $t/stat | awk '{{print $39}}'; done").stdout.split()
    assert out, f"{unit} has no processes"
    return set(map(int, out))


def test_workers_run_as_batch_jobs_and_flower_does_not(deployed):
    # The prefork pool (batch) has children and every pool has threads: all of them inherit it.
    for unit in WORKER_UNITS:
        assert scheduling_policies(deployed, unit) == {3}, unit
    assert scheduling_policies(deployed, "soniquebay-flower.service") == {0}


def test_celery_inspect_shows_eight_workers_with_their_queue_concurrency_and_prefetch(deployed):
    stats = celery_inspect(deployed, "stats", expect=set(expected_layout()))
    queues = celery_inspect(deployed, "active_queues", expect=set(expected_layout()))
    hostname = deployed.name
    expected = expected_layout()
    assert sorted(stats) == sorted(f"{name}@{hostname}" for name in expected)
    for name, (queue, concurrency, prefetch) in expected.items():
        worker = f"{name}@{hostname}"
        assert stats[worker]["pool"]["max-concurrency"] == concurrency, worker
        assert stats[worker]["prefetch_count"] == prefetch, worker
        assert [q["name"] for q in queues[worker]] == [queue], worker


def test_flower_requires_its_login_and_its_api_works_through_nginx(deployed):
    auth = flower_auth(deployed)
    status, headers, _ = http(FLOWER)
    assert status == 401 and "Basic" in headers.get("WWW-Authenticate", "")
    assert http(FLOWER, auth=("admin", "not-the-password"))[0] == 401
    status, _, body = http(FLOWER, auth=auth)
    assert status == 200 and b"Flower" in body
    # The prefix is not stripped: Flower's assets resolve under /flower/.
    assert b"/flower/static/" in body
    status, headers, _ = http("https://127.0.0.1/flower")
    assert status == 301 and headers["Location"] == "/flower/"
    workers = flower_workers(deployed)
    expected = expected_layout()
    assert sorted(workers) == sorted(f"{name}@{deployed.name}" for name in expected)
    for name, (queue, concurrency, prefetch) in expected.items():
        info = workers[f"{name}@{deployed.name}"]
        assert [q["name"] for q in info["active_queues"]] == [queue]
        assert info["stats"]["pool"]["max-concurrency"] == concurrency
        assert info["stats"]["prefetch_count"] == prefetch


def test_flower_redis_and_postgresql_listen_on_loopback_only(deployed):
    listeners = deployed.ssh("ss -Hltn").stdout.splitlines()
    for port in (5555, 6379, 5432):
        local = [line.split()[3] for line in listeners if line.split()[3].rsplit(":", 1)[1] == str(port)]
        assert local, f"nothing listens on {port}"
        for address in local:
            assert address.rsplit(":", 1)[0] in ("127.0.0.1", "[::1]"), f"port {port} listens on {address}"
    assert reachable_from_another_address([5555, 6379, 5432]) == []


def test_secrets_are_generated_private_and_never_on_a_command_line(deployed):
    for name in SECRETS:
        path = deployed.credentials_dir / name
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert len(deployed.credential(name)) >= 20
    modes = deployed.ssh(
        "stat -c '%a %U %G %n' /etc/soniquebay/soniquebay.env /etc/soniquebay/flower.env "
        "/etc/soniquebay/exporter.env /etc/redis/soniquebay-users.acl"
    ).stdout
    assert modes.splitlines() == [
        "640 root soniquebay /etc/soniquebay/soniquebay.env",
        "640 root soniquebay /etc/soniquebay/flower.env",
        "600 root root /etc/soniquebay/exporter.env",
        "640 redis redis /etc/redis/soniquebay-users.acl",
    ]
    public = deployed.ssh(
        "cat /etc/systemd/system/soniquebay-*.service /etc/nginx/sites-enabled/* /etc/redis/*; ps -eo args"
    ).stdout  # fmt: skip
    for name in SECRETS:
        assert deployed.credential(name) not in public, (
            f"the {name} password shows in a unit, a file of Redis or ps"
        )
    # Redis refuses clients without a user, and its users file holds hashes only.
    noauth = deployed.ssh("redis-cli ping", check=False)
    assert "NOAUTH" in noauth.stdout + noauth.stderr
    settings = [redis(deployed, "config get", key).split() for key in ("appendonly", "maxmemory-policy")]
    assert settings == [["appendonly", "yes"], ["maxmemory-policy", "noeviction"]]
    # PostgreSQL stores a SCRAM verifier.
    assert psql(deployed, "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'soniquebay'") == [
        ["SCRAM-SHA-256$"]
    ]


def test_each_service_has_its_own_broker_user_without_admin_commands(deployed):
    """The users as deployed (the integration test runs Flower and the exporter on theirs): each
    env file names its service's user, and no service user runs an admin command or the exporter
    a write; the `default` user is off."""
    logins = deployed.ssh(
        "grep -h '^SONIQUEBAY_BROKER_USER=' /etc/soniquebay/soniquebay.env /etc/soniquebay/flower.env "
        "/etc/soniquebay/exporter.env"
    ).stdout.split()
    assert logins == [f"SONIQUEBAY_BROKER_USER={user}" for user in ("workers", "flower", "exporter")]
    users = redis(deployed, "acl list")
    assert "user default off" in users and users.count("user ") == 5, users
    refusals = {
        "workers": ["flushall", "config set maxmemory 1", "shutdown nosave", "acl setuser intruder on"],
        "flower": ["flushall", "flushdb", "config get maxmemory", "shutdown nosave"],
        "exporter": [
            "set soniquebay-probe 1",
            "lpush extract x",
            "del scan",
            "flushall",
            "config get maxmemory",
        ],
    }
    for user, commands in refusals.items():
        for command in commands:
            answer = redis(deployed, command, user=user)
            assert answer.startswith("NOPERM"), (user, command, answer)
    assert redis(deployed, "llen extract", user="exporter").isdigit()
    assert redis(deployed, "config get maxmemory").split() == ["maxmemory", "0"]


def test_postgresql_probes_idle_clients_so_a_dead_hosts_connections_close_within_minutes(deployed):
    # The multi-host test checks the effect (a powered-off worker host's connections are gone).
    # From the configuration files: on psql's Unix socket these settings read as 0.
    keepalives = "SELECT name, setting FROM pg_file_settings WHERE name LIKE 'tcp_%' AND applied ORDER BY 1"
    assert psql(deployed, keepalives) == [
        ["tcp_keepalives_count", "6"],
        ["tcp_keepalives_idle", "60s"],
        ["tcp_keepalives_interval", "10s"],
        ["tcp_user_timeout", "60s"],
    ]


def test_a_scan_of_a_fixture_library_lands_the_right_rows(deployed, tmp_path):
    staging = tmp_path / "music"
    expected = audio_fixtures.build_library(staging, artists=3, albums_per_artist=2, tracks_per_album=4)
    target = deployed.root / LIBRARY.lstrip("/")
    if target.exists():
        subprocess.run(["rm", "-rf", str(target)], check=True)
    subprocess.run(["cp", "-a", str(staging), str(target)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    session = soniquebay_json(deployed, "scan", LIBRARY, "--wait", "--json")
    assert session["status"] == "completed", session
    n = len(expected)
    assert session["counts"]["discovered"] == n and session["counts"]["inserted"] == n, session
    assert session["counts"]["errors"] == 0, session

    status = soniquebay_json(deployed, "status", "--json")
    assert status["library"]["tracks"] == n
    # The library that was there before is missing (kept for its ids); the operator purges it.
    deployed.ssh("soniquebay purge")
    status = soniquebay_json(deployed, "status", "--json")
    assert status["library"]["tracks"] == n and status["library"]["missing"] == 0
    album_keys = {(e["albumartist"] or e["artist"], e["album"], e["mb_albumid"]) for e in expected}
    assert status["library"]["albums"] == len(album_keys)
    assert status["library"]["errors"] == 0
    rows = psql(
        deployed, "SELECT path, coalesce(title, ''), coalesce(artist, '') FROM present_tracks ORDER BY path"
    )
    want = sorted(
        [LIBRARY + "/" + str(Path(e["path"]).relative_to(staging)), e["title"] or "", e["artist"] or ""]
        for e in expected
    )
    assert rows == want
    # Covers went to the covers directory, written by the (unprivileged, sandboxed) workers.
    hashes = [h for (h,) in psql(deployed, "SELECT cover_hash FROM albums WHERE cover_hash IS NOT NULL")]
    assert len(hashes) == len(album_keys)
    for digest in hashes:
        deployed.ssh(f"test -s {COVERS}/{digest[:2]}/{digest}")


# Reads every process's argv on the host every 20 ms until /run/argv-sampler.stop exists; the
# secrets come on stdin (never on its own command line). Prints how many samples it took, which
# processes showed a secret (their name only) and whether it saw the migration runner.
ARGV_SAMPLER = """
import json, os, sys, time
secrets = [line.strip() for line in sys.stdin if line.strip()]
samples, hits, saw_migration = 0, set(), False
while not os.path.exists("/run/argv-sampler.stop"):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().replace(b"\\0", b" ").decode(errors="replace")
        except OSError:
            continue
        saw_migration = saw_migration or "db_upgrade.py" in argv
        hits.update(argv.split()[0] for secret in secrets if secret in argv)
    samples += 1
    time.sleep(0.02)
print(json.dumps({"samples": samples, "hits": sorted(hits), "saw_migration": saw_migration}))
"""


def test_a_second_converge_changes_nothing_and_shows_no_password_in_ps(deployed):
    """The whole play over a deployed host changes nothing; while it runs (the broker's checks as
    its admin and the migration as the owner role included) no process on the host carries a
    password in its argv, what `ps` shows every user."""
    deployed.ssh("rm -f /run/argv-sampler.stop; cat > /run/argv-sampler.py", input=ARGV_SAMPLER)
    deployed.ssh(
        "umask 077; cat > /run/argv-sampler.secrets; setsid /usr/bin/python3 /run/argv-sampler.py "
        "< /run/argv-sampler.secrets > /run/argv-sampler.json 2>&1 &",
        input="\n".join(deployed.credential(name) for name in SECRETS),
    )
    try:
        result = deployed.converge()
    finally:
        deployed.ssh("touch /run/argv-sampler.stop")
    assert result.ok, result.tail(120)
    assert result.changed == 0, f"changed tasks on the second run: {result.changed_tasks()}"
    deadline = time.monotonic() + 30
    while not (report := deployed.ssh("cat /run/argv-sampler.json", check=False).stdout.strip()):
        assert time.monotonic() < deadline, "the argv sampler did not report"
        time.sleep(0.5)
    deployed.ssh("rm -f /run/argv-sampler.*")
    sampled = json.loads(report)
    assert sampled["saw_migration"] and sampled["samples"] > 100, sampled
    assert sampled["hits"] == [], f"processes with a password in their argv: {sampled['hits']}"


# The roles the redis role names (meta dependencies, include_role), and nothing else.
REDIS_ROLE_CLOSURE = ("redis", "soniquebay", "host_firewall", "pki")


def test_a_role_copied_alone_applies_from_a_playbook_outside_the_repository(deployed, tmp_path):
    """The redis role and the roles it names, copied into another folder's roles/ (no ansible.cfg,
    no templates/ or plugins beside them), applied by a playbook there: it finds its templates,
    filters and credential lookup, and over the deployed host changes nothing."""
    tree = tmp_path / "elsewhere"
    for role in REDIS_ROLE_CLOSURE:
        shutil.copytree(REPO / "roles" / role, tree / "roles" / role)
    (tree / "broker.yml").write_text(
        "---\n- name: Redis from another playbook\n  hosts: broker\n  become: true\n"
        "  roles:\n    - role: redis\n"
    )
    assert sorted(p.name for p in tree.iterdir()) == ["broker.yml", "roles"]
    result = deployed.converge("broker.yml", release=tree)
    assert result.ok, result.tail(120)
    assert "TASK [redis : " in result.output, result.tail(60)
    assert result.changed == 0, f"changed tasks: {result.changed_tasks()}"


def test_changing_one_pool_restarts_only_its_units(deployed):
    """A pool's setting changes: only that pool's units restart, then the original layout comes back."""
    before = main_pids(deployed, [*WORKER_UNITS, "soniquebay-flower.service"])
    pools = yaml.safe_load((REPO / "roles/backend_worker/defaults/main.yml").read_text())[
        "backend_worker_pools"
    ]
    changed = [dict(p, prefetch_multiplier=3) if p["queue"] == "deferred" else p for p in pools]
    result = deployed.converge("playbooks/workers.yml", "-e", json.dumps({"backend_worker_pools": changed}))
    assert result.ok, result.tail(120)
    wait_all_active(deployed, SONIQUEBAY_UNITS)
    after = main_pids(deployed, [*WORKER_UNITS, "soniquebay-flower.service"])
    restarted = sorted(unit for unit in before if before[unit] != after[unit])
    assert restarted == ["soniquebay-worker-deferred-1.service"]
    stats = celery_inspect(deployed, "stats", expect=set(expected_layout()))
    assert stats[f"deferred-1@{deployed.name}"]["prefetch_count"] == 6 * 3
    # Back to the inventory's layout.
    result = deployed.converge("playbooks/workers.yml")
    assert result.ok, result.tail(120)
    wait_all_active(deployed, SONIQUEBAY_UNITS)


def test_restarting_the_target_restarts_everything(deployed):
    before = main_pids(deployed, [u for u in SONIQUEBAY_UNITS if u.endswith(".service")])
    deployed.ssh("systemctl restart soniquebay.target", timeout=600)
    wait_all_active(deployed)
    after = main_pids(deployed, list(before))
    assert all(after[unit] != before[unit] and after[unit] > 0 for unit in before), (before, after)
    assert len(flower_workers(deployed)) == len(WORKER_UNITS)
    # Stopping the target stops every unit (they are PartOf= it); workers finish a warm shutdown.
    deployed.ssh("systemctl stop soniquebay.target", timeout=600)
    deadline = time.monotonic() + 180
    while True:
        states = deployed.ssh("systemctl is-active " + " ".join(SONIQUEBAY_UNITS), check=False).stdout.split()
        if set(states) == {"inactive"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(states) == {"inactive"}, states
    deployed.ssh("systemctl start soniquebay.target", timeout=300)
    wait_all_active(deployed)


def test_a_worker_killed_with_sigkill_is_restarted_by_systemd(deployed):
    unit = "soniquebay-worker-scan-1.service"
    pid = deployed.unit_main_pid(unit)
    assert pid > 0
    deployed.ssh(f"kill -9 {pid}")
    deadline = time.monotonic() + 60
    new_pid = pid
    while time.monotonic() < deadline:
        state = deployed.ssh(f"systemctl is-active {unit}", check=False).stdout.strip()
        new_pid = deployed.unit_main_pid(unit)
        if state == "active" and new_pid not in (0, pid):
            break
        time.sleep(1)
    assert new_pid not in (0, pid), f"{unit} was not restarted"
    restarts = int(deployed.ssh(f"systemctl show -P NRestarts {unit}").stdout.strip())
    assert restarts >= 1
    # Active as soon as Celery is exec'd (Type=exec); it answers once it has connected to Redis.
    assert f"scan-1@{deployed.name}" in celery_inspect(deployed, "ping", expect={"scan-1"})


def test_everything_comes_back_after_a_reboot(deployed):
    tracks_before = soniquebay_json(deployed, "status", "--json")["library"]["tracks"]
    deployed.reboot()
    wait_all_active(deployed)
    assert len(flower_workers(deployed)) == len(WORKER_UNITS)
    assert http(FLOWER)[0] == 401
    assert soniquebay_json(deployed, "status", "--json")["library"]["tracks"] == tracks_before
    # Flower saved its state at the clean stop and loaded it again (persistent mode).
    deployed.ssh("ls /var/lib/soniquebay-flower/flower.db*")


def test_the_workers_database_role_owns_nothing_and_cannot_change_the_schema(deployed):
    """The owner role owns the database and every table and sequence; the env file's role (the
    workers') is refused schema changes; the owner's password is in no file under /etc/soniquebay."""
    assert psql(deployed, "SELECT datdba::regrole FROM pg_database WHERE datname = current_database()") == [
        ["soniquebay_owner"]
    ]
    owners = psql(
        deployed,
        "SELECT DISTINCT c.relowner::regrole FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v', 'i')",
    )
    assert owners == [["soniquebay_owner"]]
    assert psql(
        deployed, "SELECT count(*) FROM pg_shdepend WHERE deptype = 'o' AND refobjid = 'soniquebay'::regrole"
    ) == [["0"]]
    # As the service user, with the env file's URL (the workers' role): rows yes, schema no.
    script = (
        "import os, psycopg\n"
        "with psycopg.connect(os.environ['SONIQUEBAY_DATABASE_URL'], autocommit=True) as c:\n"
        "    print('user', c.execute('SELECT current_user').fetchone()[0])\n"
        "    print('tracks', c.execute('SELECT count(*) FROM tracks').fetchone()[0])\n"
        "    for sql in ('CREATE TABLE intruder (id integer)', 'DROP TABLE tracks', 'TRUNCATE tracks'):\n"
        "        try:\n"
        "            c.execute(sql)\n"
        "            print('allowed', sql)\n"
        "        except psycopg.errors.InsufficientPrivilege as e:\n"
        "            print('refused', sql, '|', str(e).splitlines()[0])\n"
    )
    out = deployed.ssh(
        "set -a; . /etc/soniquebay/soniquebay.env; set +a; "
        f"runuser -u soniquebay -- /opt/soniquebay/venv/bin/python -c {shlex.quote(script)}"
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "user soniquebay", out
    assert lines[1].startswith("tracks "), out
    refused = [line for line in lines if line.startswith("refused ")]
    assert len(refused) == 3 and not any(line.startswith("allowed ") for line in lines), out
    assert all("permission denied" in line or "must be owner" in line for line in refused), out
    # The owner's password: in the migration's environment only, in no file of the host's settings.
    owner_password = deployed.credential("postgresql-owner")
    found = deployed.ssh(f"grep -rlF -- {shlex.quote(owner_password)} /etc/soniquebay", check=False)
    assert found.returncode == 1 and found.stdout == "", found.stdout
