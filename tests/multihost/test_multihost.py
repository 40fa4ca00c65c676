"""inventory/example on three booted machines: db1 (Redis, PostgreSQL, Flower, nginx) and two worker
hosts, each in its own network namespace, plus an outsider on the same network.

The tests share the machines (tests/multihost/conftest.py) and run in file order: a missing library
fails early; the stack without worker2, then worker2 added, both by the release before
(testkit.releases); this release upgrading it in place during a scan, one worker host at a time;
placement, Flower, listen addresses and the firewall; a scan across both hosts; a scan during which
worker2 dies; removing worker2.
"""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from testkit import audio_fixtures, multihost, releases, stack, wire
from testkit import upgrade as upgrading
from testkit.deploy.ops import every_cpu_slot, hold_lock, release_lock
from testkit.stack import expected_rows, soniquebay_json
from testkit.testnet import NetHost, TestNet

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(1800)]

DB = multihost.DB_HOST
W1, W2 = multihost.WORKER_HOSTS
ENV = "set -a; . /etc/soniquebay/soniquebay.env; set +a; "
VENV_PY = "/opt/soniquebay/venv/bin/python"
# The broker and database servers of db1 (Debian 12's PostgreSQL cluster unit).
DB_SERVICES = ["redis-server.service", "postgresql@15-main.service"]
# The library scanned during the upgrade: 20,000 files (200 artists x 10 albums x 10 tracks).
UPGRADE_FOLDER = f"{multihost.LIBRARY}/upgrade"
UPGRADE_SHAPE = {"artists": 200, "albums_per_artist": 10, "tracks_per_album": 10, "seconds": 0.5, "seed": 30}


def worker_units(host: str) -> set[str]:
    return {f"soniquebay-worker-{name}.service" for name in multihost.PLACEMENT[host]}


def flower_url(net: TestNet) -> str:
    return f"https://{net.hosts[DB].address}/flower/"


def admin(net: TestNet) -> tuple[str, str]:
    return ("admin", net.credential("flower-admin"))


def flower(net: TestNet, path: str, auth: bool = True, timeout: float = 30) -> tuple[int, bytes]:
    status, _, body = stack.http(flower_url(net) + path, auth=admin(net) if auth else None, timeout=timeout)
    return status, body


def flower_workers(net: TestNet, expect: set[str], timeout: float = 120) -> dict:
    return stack.wait_flower_workers(flower_url(net), admin(net), expect, timeout)


def flower_tasks(net: TestNet, name: str) -> list[dict]:
    status, body = flower(net, f"api/tasks?taskname={name}&limit=100000")
    assert status == 200, body[:300]
    return list(json.loads(body).values())


def psql(net: TestNet, sql: str) -> list[list[str]]:
    return stack.psql(net.hosts[DB], sql)


def tcp_refused(net: TestNet, port: int) -> str:
    """Connect from the outsider's namespace to db1: 'refused', 'timeout' or 'open'."""
    code = (
        "import socket\n"
        f"s = socket.socket(); s.settimeout(5)\n"
        "try:\n"
        f"    s.connect(({net.hosts[DB].address!r}, {port})); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError as e: print('timeout' if isinstance(e, TimeoutError) else repr(e))\n"
    )
    return net.in_netns("outsider", ["python3", "-c", code]).stdout.strip()


def client_check(host: NetHost) -> str:
    """From a worker host, with the deployed settings: Redis PING and a PostgreSQL query."""
    code = (
        "import os, psycopg\n"
        "from backend_worker import config\n"
        "print(config.broker_client(config.settings(), socket_timeout=5).ping())\n"
        "with psycopg.connect(os.environ['SONIQUEBAY_DATABASE_URL'], connect_timeout=5) as c:\n"
        "    print(c.execute('select 1').fetchone()[0])\n"
    )
    return host.ssh(ENV + f"{VENV_PY} -c {shlex.quote(code)}", check=False, timeout=30).stdout.split()


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release_before(net):
    """The release before (testkit.releases), exported: phases a and b deploy it, and this release
    upgrades it in place. None on machines kept up (SONIQUEBAY_MULTIHOST_KEEP attached to them): they
    run this release already."""
    if net.kept:
        return None
    commit = releases.previous_release()
    return commit, releases.export_tree(commit, net.workdir / "release-before")


@pytest.fixture(scope="module")
def phase_a(net, inventories, release_before):
    """The stack before worker2 joins, as the release before deploys it: db1 and worker1 (every
    queue) converged in one run."""
    tree = release_before[1] if release_before else None
    result = net.converge(inventories["without_worker2"], release=tree)
    assert result.ok, f"site.yml without worker2 failed:\n{result.tail(120)}"
    stack.trust(net.credentials_dir / f"flower-certificate-{DB}.pem")
    states = net.hosts[W1].units()
    assert states == dict.fromkeys(sorted(worker_units(W1)), "active"), states
    return {
        W1: net.hosts[W1].main_pids(sorted(worker_units(W1))),
        DB: net.hosts[DB].main_pids(DB_SERVICES),
    }


@pytest.fixture(scope="module")
def worker2_added(net, inventories, phase_a, release_before):
    """worker2 added to the inventory and site.yml (of the same release) run again on all three hosts."""
    tree = release_before[1] if release_before else None
    result = net.converge(inventories["full"], release=tree)
    assert result.ok, f"site.yml with worker2 added failed:\n{result.tail(120)}"
    pids_after = {
        W1: net.hosts[W1].main_pids(sorted(worker_units(W1))),
        DB: net.hosts[DB].main_pids(DB_SERVICES),
    }
    return {"pids_before": phase_a, "pids_after": pids_after, "converge": result}


@pytest.fixture(scope="module")
def upgrade(net, inventories, worker2_added, release_before, music) -> upgrading.Upgrade | None:
    """This release's site.yml over the release before on all three hosts (the worker hosts one at
    a time), while a 20,000-file scan of the release before is in flight (testkit.upgrade). What
    the test of the upgrade checks is read here; then the library goes and its tracks are purged."""
    if release_before is None:
        return None
    commit, _ = release_before
    staging = net.workdir / "upgrade-staging"
    shutil.rmtree(staging, ignore_errors=True)
    expected = audio_fixtures.build_library(staging, **UPGRADE_SHAPE)
    subprocess.run(["chmod", "-R", "a+rX", str(staging)], check=True)
    folder = Path(music) / "upgrade"
    staging.rename(folder)  # at once: the watch on worker1 sees one folder arrive
    result = upgrading.upgrade_during_scan(
        lambda: net.converge(inventories["full"]),
        commit,
        net.hosts[DB],
        [net.hosts[W1], net.hosts[W2]],
        UPGRADE_FOLDER,
        expected_rows(expected, staging, UPGRADE_FOLDER),
    )
    assert result.run.converge.ok, (
        f"site.yml over the release before failed:\n{result.run.converge.tail(120)}"
    )
    # The folder moved out at once and left empty (a scan refuses an empty root that holds tracks,
    # not an emptied folder below it), scanned: its tracks missing, then purged as an operator does.
    staging.mkdir()
    folder.rename(staging / "upgrade")
    folder.mkdir(mode=0o755)
    session = soniquebay_json(net.hosts[W1], "scan", UPGRADE_FOLDER, "--wait", "--json")
    assert session["status"] == "completed" and session["counts"]["missing"] == len(expected), session
    net.hosts[W1].ssh("soniquebay purge")
    shutil.rmtree(staging)
    return result


@pytest.fixture(scope="module")
def deployed(net, inventories, worker2_added, upgrade):
    """Every host on this release: upgraded in place, or (machines kept up) converged again."""
    if upgrade is None:
        result = net.converge(inventories["full"])
        assert result.ok, f"site.yml failed:\n{result.tail(120)}"
    return worker2_added


# ---- tests ----------------------------------------------------------------------------------------


def test_a_library_missing_on_a_worker_host_fails_early_naming_host_and_path(net, inventories):
    result = net.converge(
        inventories["without_worker2"],
        "playbooks/workers.yml",
        "-e",
        json.dumps({"backend_worker_library_roots": [multihost.LIBRARY, "/srv/elsewhere"]}),
    )
    output = " ".join(result.output.split())
    assert not result.ok
    assert (
        "The library root /srv/elsewhere is missing or not readable by the user soniquebay on worker1"
        in output
    )
    assert "/srv/music is missing" not in output
    # Before anything was installed or started.
    assert "TASK [backend_worker : Install the app and its pinned dependencies" not in result.output
    assert "TASK [backend_worker : Enable and start the worker units" not in result.output


def test_adding_a_worker_host_starts_its_units_without_restarting_the_others(net, worker2_added):
    """Of the release the machines ran then: the release before, which this release upgrades below."""
    assert net.hosts[W2].units() == dict.fromkeys(sorted(worker_units(W2)), "active")
    before, after = worker2_added["pids_before"], worker2_added["pids_after"]
    assert after[W1] == before[W1], "worker1's units were restarted when worker2 was added"
    # db1 lets the new host in (pg_hba.conf, the Redis firewall) with a reload, not a restart.
    assert after[DB] == before[DB]
    converge = worker2_added["converge"]
    assert "RUNNING HANDLER [postgresql : Reload PostgreSQL]" in converge.output
    assert converge.recaps[W1]["changed"] == 0, converge.changed_tasks()
    restarts = [t for t in converge.changed_tasks() if "Restart" in t]
    assert restarts == [], restarts


def test_an_upgrade_in_place_host_by_host_during_a_20000_file_scan_loses_nothing(upgrade):
    """This release's site.yml over the release before: the schema migrated, then worker1's units
    restarted while worker2 still ran the release before, then worker2's, all during one session of
    the release before; it completes with every file a track, once."""
    assert upgrade is not None, "the upgrade runs on machines of this run (not on kept ones)"
    upgrading.assert_upgraded_during_scan(upgrade, {host: worker_units(host) for host in (W1, W2)})
    # One host at a time (serial: 1): worker2's restart began once worker1's units were back.
    run = upgrade.run
    assert max(s.at for s in run.after[W1].values()) < run.restart_began[W2], run.restart_began


def test_the_units_are_spread_as_the_inventory_says(net, deployed):
    for host in multihost.WORKER_HOSTS:
        units = net.hosts[host].units()
        assert units == dict.fromkeys(sorted(worker_units(host)), "active"), (host, units)
        for name in multihost.PLACEMENT[host]:
            queue = name.split("-")[0]
            exec_start = (
                net.hosts[host].ssh(f"systemctl show -P ExecStart soniquebay-worker-{name}.service").stdout
            )
            assert f"-Q {queue} -c {multihost.CONCURRENCY[queue]} " in exec_start, exec_start
            assert f"-n {name}@%h" in exec_start, exec_start
    assert net.hosts[DB].units() == {}, "db1 runs no workers"
    assert sum(len(names) for names in multihost.PLACEMENT.values()) == 8


def test_the_library_watch_on_worker1_imports_an_album_copied_in(net, deployed, music, tmp_path):
    """The watch and the timer run on the host the inventory names (backend_worker_watch_host), and
    nowhere else; a change in the shared library reaches the database by itself."""
    units = "soniquebay-watch.service soniquebay-scan.timer"
    for host in multihost.WORKER_HOSTS:
        states = net.hosts[host].ssh(f"systemctl is-active {units}", check=False).stdout.split()
        assert states == (["active", "active"] if host == W1 else ["inactive", "inactive"]), (host, states)
    # The watch host keeps inotify's limits at boot: a library this small needs no more than the
    # kernel's values (raising them is the filter's, tests/unit/test_filter_plugins.py).
    limits = net.hosts[W1].ssh("cat /etc/sysctl.d/60-soniquebay-inotify.conf").stdout.split()
    live = (
        net.hosts[W1]
        .ssh("sysctl -n fs.inotify.max_user_watches fs.inotify.max_user_instances")
        .stdout.split()
    )
    assert limits == [f"fs.inotify.max_user_watches={live[0]}", f"fs.inotify.max_user_instances={live[1]}"]
    assert net.hosts[W2].ssh("test -e /etc/sysctl.d/60-soniquebay-inotify.conf", check=False).returncode == 1
    audio_fixtures.build_library(tmp_path / "album", artists=1, albums_per_artist=1, tracks_per_album=3)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path / "album")], check=True)
    # In a folder of its own, so its removal is walked from there (not from the root, which would
    # scan the whole library before the exact-rows test below does).
    target = Path(music) / "watched" / "album"
    shutil.copytree(tmp_path / "album", target)
    folder = f"{multihost.LIBRARY}/watched"
    stack.wait_tracks_under(net.hosts[DB], folder, 3)
    shutil.rmtree(target)
    stack.wait_tracks_under(net.hosts[DB], folder, 0)
    origins = psql(
        net, f"SELECT DISTINCT origin, status FROM scan_sessions WHERE starts_with(roots[1], '{folder}')"
    )
    assert origins == [["watch", "completed"]], origins


def test_flower_on_db1_lists_the_eight_workers_of_both_hosts(net, deployed):
    status, _ = flower(net, "api/workers", auth=False)
    assert status == 401
    expect = {f"{name}@{host}" for host, names in multihost.PLACEMENT.items() for name in names}
    workers = flower_workers(net, expect)
    online = {name for name, info in workers.items() if info.get("stats")}
    assert online == expect, sorted(workers)
    for name in expect:
        queue = name.split("-")[0]
        assert workers[name]["stats"]["pool"]["max-concurrency"] == multihost.CONCURRENCY[queue], name
        assert [q["name"] for q in workers[name]["active_queues"]] == [queue], name


def test_redis_and_postgresql_listen_on_loopback_and_the_private_address_only(net, deployed):
    listening = net.hosts[DB].ssh("ss -Hltn '( sport = :6379 or sport = :5432 )'").stdout.split("\n")
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening if line.strip()}
    assert addresses == {"127.0.0.1", "[::1]", net.hosts[DB].address}, listening
    block = "/BEGIN SoniqueBay worker hosts/,/END SoniqueBay worker hosts/p"
    hba = net.hosts[DB].ssh(f"sed -n '{block}' /etc/postgresql/*/main/pg_hba.conf").stdout.splitlines()[1:-1]
    roles = "soniquebay,soniquebay_owner"  # the workers' and the owner (migrations run on worker1)
    assert [line.split() for line in hba] == [
        ["hostssl", "soniquebay", roles, f"{net.hosts[h].address}/32", "scram-sha-256"]
        for h in multihost.WORKER_HOSTS
    ]


def test_redis_and_postgresql_refuse_a_machine_outside_the_inventory(net, deployed):
    assert tcp_refused(net, 6379) == "refused"
    assert tcp_refused(net, 5432) == "refused"
    # The worker hosts get in, with the passwords.
    for host in multihost.WORKER_HOSTS:
        assert client_check(net.hosts[host]) == ["True", "1"], host
    rules = net.hosts[DB].ssh("nft list table inet soniquebay_redis").stdout
    assert all(net.hosts[h].address in rules for h in multihost.WORKER_HOSTS)


def test_a_scan_fans_out_across_both_worker_hosts_and_lands_the_exact_rows(net, deployed, music):
    for old in Path(music).iterdir():  # left by an earlier run on kept machines
        shutil.rmtree(old)
    staging = Path(music) / "first"
    expected = audio_fixtures.build_library(
        staging, artists=4, albums_per_artist=5, tracks_per_album=12, seconds=0.5, seed=1
    )
    subprocess.run(["chmod", "-R", "a+rX", music], check=True)
    session = soniquebay_json(net.hosts[W1], "scan", multihost.LIBRARY, "--wait", "--json")
    assert session["status"] == "completed", session
    n = len(expected)
    assert session["counts"]["discovered"] == n and session["counts"]["inserted"] == n, session
    assert session["counts"]["errors"] == 0, session
    rows = psql(
        net, "SELECT path, coalesce(title, ''), coalesce(artist, '') FROM present_tracks ORDER BY path"
    )
    assert rows == expected_rows(expected, staging, f"{multihost.LIBRARY}/first")
    # Both worker hosts read files: extract tasks ran on extract-1@worker1 and extract-1@worker2.
    extract_workers = {t["worker"] for t in flower_tasks(net, "extract.files") if t.get("state") == "SUCCESS"}
    assert extract_workers == {f"extract-1@{W1}", f"extract-1@{W2}"}, extract_workers


def scan_new_folder(net: TestNet, music: str, name: str, seed: int, during=None) -> tuple[list, dict]:
    """A new folder of 60 tracks under the library, scanned from worker1 (`during()` runs while the
    scan does): the expected records and the session."""
    staging = Path(music) / name
    expected = audio_fixtures.build_library(
        staging, artists=1, albums_per_artist=5, tracks_per_album=12, seconds=0.5, seed=seed
    )
    subprocess.run(["chmod", "-R", "a+rX", music], check=True)
    command = f"soniquebay scan {multihost.LIBRARY}/{name} --wait --json"
    scan = subprocess.Popen(
        [*net.hosts[W1].ssh_argv(), command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    try:
        if during:
            during()
        out, _ = scan.communicate(timeout=600)
    finally:
        if scan.poll() is None:
            scan.kill()
    session = json.loads(out.strip().splitlines()[-1])
    rows = psql(
        net,
        "SELECT path, coalesce(title, ''), coalesce(artist, '') FROM present_tracks "
        f"WHERE path LIKE '{multihost.LIBRARY}/{name}/%' ORDER BY path",
    )
    assert session["status"] == "completed" and session["counts"]["errors"] == 0, session
    assert rows == expected_rows(expected, staging, f"{multihost.LIBRARY}/{name}")
    return expected, session


def test_nothing_crosses_the_network_in_clear_during_a_scan(net, deployed, music, tmp_path):
    """Everything between the worker hosts and db1 (Redis 6379, PostgreSQL 5432) during a scan,
    captured on the machines' link: TLS records, and none of the passwords, the scanned files'
    paths or the rows' text, as is or base64 (kombu's message bodies)."""
    name = "wire-" + tmp_path.name[-6:].lower()
    pcap = tmp_path / "scan.pcap"
    with wire.capture(net.bridge, net.hosts[DB].address, (6379, 5432), pcap):
        expected, session = scan_new_folder(net, music, name, seed=41)
    assert session["counts"]["inserted"] == len(expected), session
    assert pcap.stat().st_size > 100_000 and wire.tls_records(pcap) > 100, "nothing captured"
    paths = {
        f"path {i}": f"{name}/{Path(e['path']).relative_to(Path(music) / name)}"
        for i, e in enumerate(expected)
    }
    titles = {f"title {i}": e["title"] for i, e in enumerate(expected) if e["title"] and len(e["title"]) >= 8}
    secrets = {
        f"password {n}": net.credential(n) for n in ("redis", "redis-flower", "redis-exporter", "postgresql")
    }
    assert titles, "no title long enough to look for"
    assert wire.found_in(pcap, {"folder": name, **paths, **titles, **secrets}) == []


def test_a_worker_host_with_a_wrong_ca_is_refused_and_says_why(net, deployed, tmp_path):
    """worker2's CA certificate replaced by another CA's: its units cannot verify db1 and say so in
    their journal (the broker's and PostgreSQL's), and the command names the cause."""
    worker2 = net.hosts[W2]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "2", "-keyout", str(tmp_path / "other.key"), "-out", str(tmp_path / "other.crt"),
         "-subj", "/CN=Another CA"],
        check=True, capture_output=True,
    )  # fmt: skip
    unit = "soniquebay-worker-extract-1.service"
    since = worker2.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    worker2.ssh("cp /etc/soniquebay/tls/ca.crt /root/ca.crt.good && cat > /etc/soniquebay/tls/ca.crt",
                input=(tmp_path / "other.crt").read_text())  # fmt: skip
    try:
        worker2.ssh(f"systemctl restart {unit}")
        deadline = time.monotonic() + 60
        while "certificate verify failed" not in (
            journal := worker2.ssh(f"journalctl -u {unit} --since '{since}' --no-pager -o cat").stdout
        ):
            assert time.monotonic() < deadline, journal[-3000:]
            time.sleep(2)
        assert worker2.ssh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active"
        status = worker2.ssh("soniquebay status", check=False)
        assert status.returncode == 2, status.stdout + status.stderr
        assert "certificate verify failed" in status.stderr, status.stderr
    finally:
        worker2.ssh(f"cp /root/ca.crt.good /etc/soniquebay/tls/ca.crt && systemctl restart {unit}")
    assert client_check(worker2) == ["True", "1"]


def test_a_plain_connection_from_another_host_is_refused_and_logged(net, deployed):
    """From worker2 (let through by the firewall): Redis without TLS, PostgreSQL without TLS. Both
    refused; db1's logs name why."""
    worker2, db1 = net.hosts[W2], net.hosts[DB]
    since = db1.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    ping = f"import redis; print(redis.Redis(host={db1.address!r}, port=6379, socket_timeout=5).ping())"
    plain_redis = worker2.ssh(f"{VENV_PY} -c {shlex.quote(ping)}", check=False, timeout=30)
    assert plain_redis.returncode != 0 and "ConnectionError" in plain_redis.stderr, plain_redis
    code = (
        "import os, psycopg\n"
        "try:\n"
        "    psycopg.connect(os.environ['SONIQUEBAY_DATABASE_URL'], sslmode='disable', connect_timeout=5)\n"
        "except psycopg.OperationalError as exc: print(exc)\n"
    )
    plain_pg = worker2.ssh(ENV + f"{VENV_PY} -c {shlex.quote(code)}", check=False, timeout=30).stdout
    assert "no pg_hba.conf entry" in plain_pg and "no encryption" in plain_pg, plain_pg
    deadline = time.monotonic() + 30
    while "wrong version number" not in (
        redis_log := db1.ssh("cat /var/log/redis/redis-server.log").stdout[-20000:]
    ):
        assert time.monotonic() < deadline, redis_log[-2000:]
        time.sleep(1)
    postgres_log = db1.ssh(
        f"journalctl --since '{since}' --no-pager -o cat; cat /var/log/postgresql/*.log"
    ).stdout
    assert (
        f'no pg_hba.conf entry for host "{worker2.address}"' in postgres_log
        and "no encryption" in postgres_log
    )


def test_a_redis_restart_during_a_scan_over_tls_loses_nothing(net, deployed, music):
    """issue 11's Redis restart, on the TLS layout: db1's Redis restarts while a scan runs; the
    workers of both hosts reconnect over TLS and the scan lands the exact rows."""
    db1 = net.hosts[DB]

    def restart_redis_once_tracks_arrive() -> None:
        # The session of this folder, whatever its status: a poll over ssh may miss a short
        # "running" window (seen once), and the rows are checked exactly either way.
        deadline = time.monotonic() + 120
        started = (
            "SELECT count(*) FROM scan_sessions WHERE array_to_string(roots, ' ') LIKE '%/redis-restart'"
        )
        while psql(net, started) == [["0"]]:
            assert time.monotonic() < deadline, "the scan never started"
            time.sleep(0.3)
        db1.ssh("systemctl restart redis-server.service", timeout=120)

    expected, session = scan_new_folder(
        net, music, "redis-restart", seed=42, during=restart_redis_once_tracks_arrive
    )
    assert session["counts"]["inserted"] == len(expected), session
    for host in multihost.WORKER_HOSTS:
        assert client_check(net.hosts[host]) == ["True", "1"], host


def test_rerunning_the_play_near_the_end_of_a_certificate_renews_it(net, deployed, inventories):
    """db1's certificate on the controller replaced by one of the CA's valid for 20 days, within
    the renewal window (pki_renew_before, 30 days): site.yml renews it (once: Redis and PostgreSQL
    serve the same new one, valid a year), and the workers go on over TLS."""

    def served(port: int, starttls: str = "") -> str:
        """The certificate db1 serves on `port`, as worker1 (let through by the firewall) sees it."""
        command = (
            f"openssl s_client -connect {net.hosts[DB].address}:{port} {starttls} </dev/null 2>/dev/null"
            " | openssl x509 -noout -serial -enddate"
        )
        return net.hosts[W1].ssh(command, check=False, timeout=60).stdout

    before = (served(6379), served(5432, "-starttls postgres"))
    assert "serial=" in before[0] and before[0] == before[1], before
    tls = net.credentials_dir / "tls"
    subprocess.run(
        ["openssl", "x509", "-req", "-in", f"{DB}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-days", "20",
         "-copy_extensions", "copyall", "-out", f"{DB}.crt"],
        cwd=tls, check=True, capture_output=True,
    )  # fmt: skip
    result = net.converge(inventories["full"])
    assert result.ok, result.tail(120)
    after = (served(6379), served(5432, "-starttls postgres"))
    assert after[0] == after[1] and after[0] != before[0], (before, after)
    end = after[0].split("notAfter=")[1].strip()
    days_left = (datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z") - datetime.datetime.now()).days
    assert 363 <= days_left <= 365, end
    for host in multihost.WORKER_HOSTS:
        assert client_check(net.hosts[host]) == ["True", "1"], host
    flower_workers(net, {f"{name}@{host}" for host, names in multihost.PLACEMENT.items() for name in names})


def test_a_worker_host_dying_mid_scan_loses_no_track(net, deployed, music):
    """worker2 loses power while it holds extract tasks of a running scan that have not finished
    (its threads wait for a CPU slot: every slot of its host is held on db1): on the shipped
    visibility timeout (Redis would hand them back after 30 minutes), worker1's
    reconciler sends their units again, and the scan completes within three minutes of the death
    with every track exactly once."""
    first = int(
        psql(net, "SELECT count(*) FROM present_tracks WHERE path NOT LIKE '/srv/music/second/%'")[0][0]
    )
    staging = Path(music) / "second"
    expected = audio_fixtures.build_library(
        staging, artists=5, albums_per_artist=5, tracks_per_album=12, seconds=0.5, seed=2
    )
    subprocess.run(["chmod", "-R", "a+rX", music], check=True)
    worker2 = net.hosts[W2]
    hold_lock(net.hosts[DB], every_cpu_slot(worker2))
    scan = subprocess.Popen(
        [*net.hosts[W1].ssh_argv(), f"soniquebay scan {multihost.LIBRARY} --wait --json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = "SELECT id FROM scan_sessions WHERE status = 'running' ORDER BY started_at DESC LIMIT 1"
        deadline = time.monotonic() + 60
        while not (rows := psql(net, running)):
            assert time.monotonic() < deadline, "the second scan never started"
            time.sleep(0.3)
        session_id = rows[0][0]
        taken: list[dict] = []
        deadline = time.monotonic() + 120
        while len(taken) < 2 and time.monotonic() < deadline:
            taken = [
                t
                for t in flower_tasks(net, "extract.files")
                if t.get("worker") == f"extract-1@{W2}" and session_id in str(t.get("kwargs"))
            ]
            time.sleep(0.5)
        assert taken, "worker2 never received an extract task of the second scan"
        # The premise: what worker2 holds did not finish (it waits for a slot), so it dies with it.
        assert not [t for t in taken if t.get("succeeded")], taken
        held = [t["uuid"] for t in taken]
        worker2.pull_the_plug()
        died = time.time()
        assert not worker2.running()
        out, err = scan.communicate(timeout=600)
    finally:
        if scan.poll() is None:
            scan.kill()
        release_lock(net.hosts[DB])  # worker2's slots (if it still runs: the test failed before the cut)
    session = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"stderr": err}
    n = len(expected)
    assert session.get("status") == "completed" and session["id"] == session_id, session
    assert session["counts"]["inserted"] == n and session["counts"]["errors"] == 0, session
    ended = datetime.datetime.fromisoformat(session["ended_at"]).timestamp()
    assert ended - died <= 180, f"the session closed {ended - died:.0f} s after worker2 died"
    # Every unit worker2 held was sent again under a new task id, which worker1 ran.
    assert session["resent"] >= len(held), session
    held_list = ", ".join(f"'{task_id}'" for task_id in held)
    still = psql(net, f"SELECT count(*) FROM scan_units WHERE task_id IN ({held_list})")
    assert still == [["0"]], "a unit worker2 held was not sent again"
    resent_ids = [
        task_id
        for (task_id,) in psql(
            net,
            f"SELECT task_id FROM scan_units WHERE session_id = '{session['id']}' AND resent > 0 "
            "AND stage = 'extract'",
        )
    ]
    final = {t["uuid"]: t for t in flower_tasks(net, "extract.files")}
    assert {(final[t]["state"], final[t]["worker"]) for t in resent_ids} == {("SUCCESS", f"extract-1@{W1}")}
    rows = psql(
        net,
        "SELECT path, coalesce(title, ''), coalesce(artist, '') FROM present_tracks "
        "WHERE path LIKE '/srv/music/second/%' ORDER BY path",
    )
    assert rows == expected_rows(expected, staging, f"{multihost.LIBRARY}/second")
    total, distinct = psql(net, "SELECT count(*), count(DISTINCT path) FROM present_tracks")[0]
    assert int(total) == int(distinct) == first + n
    # PostgreSQL holds no connection of the dead host any more, so no lock of theirs can hold the
    # other workers up. (Here the machine's kernel closed its sockets as it died; a cut cable sends
    # nothing, and the postgresql role's TCP keepalives close those within about 2 minutes.)
    gone = f"SELECT count(*) FROM pg_stat_activity WHERE client_addr = '{worker2.address}'"
    while psql(net, gone) != [["0"]]:
        assert time.time() < died + 240, "PostgreSQL still holds connections of the dead host"
        time.sleep(5)


def test_remove_workers_playbook_takes_out_one_host_and_leaves_the_others_running(net, deployed, inventories):
    worker2 = net.hosts[W2]
    if not worker2.running():  # powered off by the previous test: it comes back, units start at boot
        worker2.boot()
        worker2.wait_booted()
    assert worker2.units() == dict.fromkeys(sorted(worker_units(W2)), "active")
    before = net.hosts[W1].main_pids(sorted(worker_units(W1)))

    refused = net.converge(inventories["full"], "playbooks/remove-workers.yml")
    assert not refused.ok and "name them with --limit" in " ".join(refused.output.split())
    assert worker2.units() == dict.fromkeys(sorted(worker_units(W2)), "active")

    removed = net.converge(inventories["full"], "playbooks/remove-workers.yml", "--limit", W2)
    assert removed.ok, removed.tail(80)
    assert worker2.units() == {}
    assert (
        worker2.ssh("ls /etc/systemd/system/ | grep -c soniquebay-worker", check=False).stdout.strip() == "0"
    )
    assert worker2.ssh("test -e /etc/soniquebay/soniquebay.env", check=False).returncode == 1
    assert net.hosts[W1].main_pids(sorted(worker_units(W1))) == before

    # Out of the inventory: site.yml on db1 drops its pg_hba line and firewalls it out.
    result = net.converge(inventories["without_worker2"], "playbooks/site.yml", "--limit", DB)
    assert result.ok, result.tail(80)
    hba = net.hosts[DB].ssh("grep -c 'soniquebay    soniquebay' /etc/postgresql/*/main/pg_hba.conf").stdout
    assert hba.strip() == "1"
    code = (
        "import socket\n"
        "for port in (6379, 5432):\n"
        "    s = socket.socket(); s.settimeout(5)\n"
        f"    print(s.connect_ex(({net.hosts[DB].address!r}, port)))\n"
    )
    refused_codes = worker2.ssh(f"python3 -c {shlex.quote(code)}").stdout.split()
    assert refused_codes == ["111", "111"], refused_codes  # ECONNREFUSED
    assert net.hosts[W1].main_pids(sorted(worker_units(W1))) == before
