"""Monitoring on the deployed test host, as an operator uses it: Prometheus scraping Flower and the
exporter, the worker-offline alert, Flower's operator actions through nginx, retries in Flower."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import PurePosixPath

import pytest

from testkit.deploy.checks import (
    FLOWER,
    LIBRARY,
    celery_inspect,
    flower_auth,
    flower_workers,
    reachable_from_another_address,
    viewer_auth,
    wait_all_active,
)
from testkit.deploy.layout import WORKER_UNITS
from testkit.deploy.ops import (
    BackgroundScan,
    assert_library_is_exactly,
    flower_api,
    freeze_a_task,
    freeze_a_thread,
    hold_stage,
    pool_children,
    prometheus,
    put_library,
    release_one_holding_messages,
    reset_library_db,
    resume,
    short_extract_time_limit,
    task_of,
    units_of,
    wait_for,
)
from testkit.stack import http, psql, soniquebay_json

pytestmark = pytest.mark.deploy

ALERTS = {
    "SoniqueBayTaskFailureRateHigh",
    "SoniqueBayQueueBacklog",
    "SoniqueBayWorkerOffline",
    "SoniqueBayScanStalled",
    "SoniqueBayMetricsDown",
    "SoniqueBayBackupFailed",
    "SoniqueBayBackupTooOld",
}


def test_prometheus_scrapes_flower_and_the_exporter_with_the_alert_rules(deployed):
    def targets_up():
        targets = prometheus("api/v1/targets")["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        wanted = {"prometheus": "up", "soniquebay-flower": "up", "soniquebay": "up"}
        return health if health == wanted else None

    wait_for(targets_up, timeout=120, what="every scrape target up")
    rules = prometheus("api/v1/rules")["groups"]
    assert {rule["name"] for group in rules for rule in group["rules"]} == ALERTS
    assert all(rule["health"] == "ok" for group in rules for rule in group["rules"])

    # Flower's and the exporter's series arrive: one online worker per unit, one length per queue.
    def eight_online():
        series = prometheus("api/v1/query?query=" + _q("flower_worker_online == 1"))["result"]
        return series if len(series) == len(WORKER_UNITS) else None

    online = wait_for(eight_online, timeout=120, what="eight online workers in Prometheus")
    assert {s["metric"]["worker"] for s in online} == set(flower_workers(deployed))
    queues = prometheus("api/v1/query?query=soniquebay_queue_messages")["result"]
    assert {s["metric"]["queue"] for s in queues} == {"scan", "extract", "batch", "insert", "deferred"}


def test_flower_metrics_are_open_on_loopback_only_and_behind_the_password_in_nginx(deployed):
    # From the host itself (Prometheus' way in): no password needed on Flower's loopback port.
    fetch = (
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:5555/flower/metrics').read().decode())"
    )
    metrics = deployed.ssh(f'python3 -c "{fetch}"').stdout
    assert "flower_events_total" in metrics and "flower_worker_online" in metrics
    # Through the public site: the password, like the rest of /flower/.
    assert http(FLOWER + "metrics")[0] == 401
    assert http(FLOWER + "metrics", auth=("admin", "wrong-password-123"))[0] == 401
    status, _, body = http(FLOWER + "metrics", auth=flower_auth(deployed))
    assert status == 200 and b"flower_worker_online" in body
    # Prometheus and the exporter listen on loopback only.
    listeners = deployed.ssh("ss -Hltn").stdout.splitlines()
    for port in (9090, 9808):
        local = [line.split()[3] for line in listeners if line.split()[3].rsplit(":", 1)[1] == str(port)]
        assert local and all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::1]") for a in local), (port, local)
    assert reachable_from_another_address([9090, 9808]) == []


def test_stopping_a_worker_unit_fires_the_worker_offline_alert(deployed):
    unit, worker = "soniquebay-worker-batch-1.service", f"batch-1@{deployed.name}"
    deployed.ssh(f"systemctl stop {unit}", timeout=180)
    try:

        def firing():
            alerts = prometheus("api/v1/alerts")["alerts"]
            return [
                a
                for a in alerts
                if a["labels"]["alertname"] == "SoniqueBayWorkerOffline"
                and a["labels"].get("worker") == worker
                and a["state"] == "firing"
            ]

        alert = wait_for(firing, timeout=240, interval=5, what=f"SoniqueBayWorkerOffline for {worker}")[0]
        assert alert["labels"]["severity"] == "critical"
        # Only the stopped worker is reported.
        others = [
            a["labels"].get("worker")
            for a in prometheus("api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == "SoniqueBayWorkerOffline" and a["state"] == "firing"
        ]
        assert others == [worker]
    finally:
        deployed.ssh(f"systemctl start {unit}")
        wait_all_active(deployed)


def test_a_worker_shut_down_from_flower_is_brought_back_by_systemd(deployed):
    unit, worker = "soniquebay-worker-deferred-1.service", f"deferred-1@{deployed.name}"
    flower_workers(deployed)
    pid = deployed.unit_main_pid(unit)
    restarts = int(deployed.ssh(f"systemctl show -P NRestarts {unit}").stdout)
    # The read-only account cannot: 403 from nginx, and the worker goes on.
    viewer = flower_api(deployed, f"api/worker/shutdown/{worker}", method="POST", auth=viewer_auth(deployed))
    assert viewer[0] == 403 and "nginx" in str(viewer[1]), viewer  # nginx refused it: Flower never saw it
    assert deployed.unit_main_pid(unit) == pid and worker in flower_workers(deployed)
    status, body = flower_api(deployed, f"api/worker/shutdown/{worker}", method="POST")
    assert status == 200, body

    def came_back():
        new_pid = deployed.unit_main_pid(unit)
        active = deployed.ssh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active"
        return new_pid if active and new_pid not in (0, pid) else None

    wait_for(came_back, timeout=120, interval=1, what=f"{unit} restarted after the shutdown")
    assert int(deployed.ssh(f"systemctl show -P NRestarts {unit}").stdout) == restarts + 1
    # A clean exit (the shutdown), not a crash: systemd restarted it because of Restart=always.
    journal = deployed.ssh(f"journalctl -u {unit} -n 200 --no-pager", check=False).stdout
    assert "shutdown" in journal.lower()
    assert worker in flower_workers(deployed)


def test_a_pool_restart_from_flower_replaces_pool_processes_and_keeps_the_worker(deployed):
    unit, worker = "soniquebay-worker-batch-1.service", f"batch-1@{deployed.name}"
    flower_workers(deployed)
    main, before = deployed.unit_main_pid(unit), pool_children(deployed, unit)
    assert len(before) == 4
    viewer = flower_api(
        deployed, f"api/worker/pool/restart/{worker}", method="POST", auth=viewer_auth(deployed)
    )
    assert viewer[0] == 403 and "nginx" in str(viewer[1]), viewer  # nginx refused it: Flower never saw it
    assert pool_children(deployed, unit) == before
    status, body = flower_api(deployed, f"api/worker/pool/restart/{worker}", method="POST")
    assert status == 200 and "Restarting" in body["message"], body

    # billiard replaces each pool process when it next looks for work (the idle one at once, the
    # others as tasks come): a new process appears, the pool keeps its size, the worker stays.
    def renewed():
        now = pool_children(deployed, unit)
        return now if len(now) == 4 and set(now) - set(before) else None

    wait_for(renewed, timeout=60, interval=1, what="a new pool process")
    assert deployed.unit_main_pid(unit) == main
    assert worker in celery_inspect(deployed, "ping", expect={"batch-1"})


def test_a_stuck_extract_thread_is_shown_in_flower_and_a_queued_chunk_revoked_becomes_error_records(
    deployed, tmp_path
):
    """What an operator can do about a stuck extract task in a thread pool. A thread cannot be
    terminated (Flower's revoke with terminate works on prefork pools only); a revoke stops a chunk
    that has not started (tests/integration/test_faults.py: one a worker took and holds for a free
    thread). Here one chunk is revoked from Flower while it waits in the queue:
    the extract worker that then takes it discards it, its files become error records and the
    session closes once the other chunk, whose thread hung mid-read and is seen STARTED in Flower,
    goes on (the disk came back). `retry-failed` reads the revoked chunk."""
    expected = put_library(deployed, tmp_path / "music", artists=6, albums_per_artist=4, tracks_per_album=80)
    scan = hold_stage(deployed, "extract")
    session_id = scan.session_id()
    queued = psql(
        deployed,
        f"SELECT task_id FROM scan_units WHERE session_id = '{session_id}' AND stage = 'extract' "
        "AND done_at IS NULL ORDER BY unit_id",
    )
    assert len(queued) == 2, queued  # 1,920 files: two chunks, waiting in the queue
    revoked_id = queued[0][0]
    # Flower lists it (sent, not yet received); the read-only account cannot revoke it.
    assert flower_api(deployed, f"api/task/info/{revoked_id}")[0] == 200
    viewer = flower_api(deployed, f"api/task/revoke/{revoked_id}", method="POST", auth=viewer_auth(deployed))
    assert viewer[0] == 403, viewer
    status, body = flower_api(deployed, f"api/task/revoke/{revoked_id}", method="POST")
    assert status == 200, body
    # The extract worker starts (it learns the revoke from the running workers) with the CPU slots
    # held, so that its thread exists when the freezer starts; then a thread hangs mid-read.
    held = release_one_holding_messages(deployed, "extract")
    frozen = None
    try:
        frozen = freeze_a_thread(deployed, units_of("extract")[:1], then=lambda: resume(deployed, held))
        stuck = task_of(deployed, frozen)
        assert stuck["name"] == "extract.files" and stuck["id"] != revoked_id, stuck
        task_id, chunk = stuck["id"], stuck["kwargs"]["paths"]
        # Flower lists it as started, with readable arguments ...
        status, info = flower_api(deployed, f"api/task/info/{task_id}")
        assert status == 200 and info["state"] == "STARTED", info
        # ... and in its worker's active tasks (Workers -> the worker -> Tasks).
        worker = stuck["hostname"]
        status, workers = flower_api(deployed, f"api/workers?refresh=1&workername={worker}")
        assert status == 200 and task_id in {t["id"] for w in workers.values() for t in w.get("active", [])}
        viewer = flower_api(
            deployed, f"api/task/revoke/{task_id}?terminate=true&signal=SIGKILL", method="POST",
            auth=viewer_auth(deployed),
        )  # fmt: skip
        assert viewer[0] == 403 and "nginx" in str(viewer[1]), viewer  # nginx refused it: Flower never saw it
        assert flower_api(deployed, f"api/task/info/{task_id}")[1]["state"] == "STARTED"
        # The revoked chunk was discarded when the worker took it: already its files' error records.
        wait_for(
            lambda: (
                int(psql(deployed, "SELECT count(*) FROM file_errors")[0][0]) == len(expected) - len(chunk)
            ),
            timeout=60, interval=1, what="the revoked chunk's error records",
        )  # fmt: skip
        assert scan.proc.poll() is None, "the session waits for the stuck chunk"
    finally:
        # The operator fixed whatever hung: the thread reads on.
        resume(deployed, [frozen] if frozen else [])
        deployed.ssh("systemctl start " + " ".join(units_of("extract")[1:]))
    session = scan.result(timeout=300)
    assert session["status"] == "completed", session
    errors = psql(deployed, "SELECT path, reason FROM file_errors ORDER BY path")
    revoked_paths = sorted(set(e["path"] for e in expected) - set(chunk))
    assert [p for p, _ in errors] == revoked_paths
    assert {r for _, r in errors} == {"extract task failed: TaskRevokedError: revoked by an operator"}
    assert session["counts"]["inserted"] == len(chunk)
    assert session["counts"]["errors"] == len(revoked_paths)
    wait_for(
        lambda: (flower_api(deployed, f"api/task/info/{revoked_id}")[1] or {}).get("state") == "REVOKED",
        timeout=60,
        what="the revoked task shown as REVOKED in Flower",
    )
    # The revoked chunk is read again on demand.
    proc = deployed.ssh("soniquebay retry-failed --wait --json", timeout=300)
    assert '"status": "completed"' in proc.stdout, proc.stdout
    assert psql(deployed, "SELECT count(*) FROM present_tracks") == [[str(len(expected))]]
    assert psql(deployed, "SELECT count(*) FROM file_errors") == [["0"]]


LIMIT = 40  # the extract time limit while a task hangs (short_extract_time_limit)


def test_flower_lists_a_workers_reserved_tasks_and_a_task_failed_at_its_time_limit(deployed, tmp_path):
    """An extract worker takes more chunks than it has threads while their CPU slots are held:
    Flower lists the ones no thread runs yet as its reserved tasks. Then a thread hangs mid-read
    past the hard time limit: Flower lists the task as FAILURE (filter by state and name), without
    retry; its files are error records, the rest of the library stays, and the worker, whose
    thread is beyond rescue, is replaced by a fresh one; `retry-failed` then reads them."""
    # 10,000 files: more chunks (at least 10 of 1,000) than an extract worker has threads (8).
    expected = put_library(
        deployed, tmp_path / "music", artists=10, albums_per_artist=10, tracks_per_album=100
    )
    scan = hold_stage(deployed, "extract")
    worker = f"extract-1@{deployed.name}"
    held = release_one_holding_messages(deployed, "extract")
    try:

        def reserved():
            status, workers = flower_api(deployed, f"api/workers?refresh=1&workername={worker}")
            return (workers.get(worker) or {}).get("reserved") if status == 200 else None

        listed = wait_for(reserved, timeout=90, interval=3, what=f"reserved tasks of {worker} in Flower")
        assert {t["name"] for t in listed} == {"extract.files"}, listed
        assert all(t["hostname"] == worker and not t["time_start"] for t in listed), listed
    finally:
        resume(deployed, held)
        deployed.ssh("systemctl start " + " ".join(units_of("extract")[1:]))
    session = scan.result(timeout=600)
    assert session["status"] == "completed" and session["counts"]["inserted"] == len(expected), session

    # The library is in place but for one top-level folder (its smallest: one chunk), added then: the
    # scan's only chunk, whose thread hangs. The extract limit is 40 s for this part only: the
    # shipped 600 s would make it wait ten minutes for the same outcome.
    shape = {"artists": 6, "albums_per_artist": 4, "tracks_per_album": 40}  # 960 files
    expected = put_library(deployed, tmp_path / "later", **shape)
    folders = {}  # top-level folder of the library -> its files
    for e in expected:
        folders.setdefault(PurePosixPath(e["path"]).relative_to(LIBRARY).parts[0], []).append(e["path"])
    late, late_paths = min(folders.items(), key=lambda item: len(item[1]))
    late_paths.sort()
    reset_library_db(deployed)
    with short_extract_time_limit(deployed, LIMIT):
        deployed.ssh(f"mkdir -p /srv/later && mv {shlex.quote(LIBRARY + '/' + late)} /srv/later/")
        first = soniquebay_json(deployed, "scan", LIBRARY, "--wait", "--json")
        assert first["status"] == "completed", first
        assert first["counts"]["inserted"] == len(expected) - len(late_paths), first
        deployed.ssh(f"mv {shlex.quote('/srv/later/' + late)} {LIBRARY}/ && rmdir /srv/later")
        scans = []
        frozen, hung = freeze_a_task(
            deployed, units_of("extract"), then=lambda: scans.append(BackgroundScan(deployed))
        )
        try:
            (scan,) = scans
            task_id, chunk = hung["id"], hung["kwargs"]["paths"]
            assert sorted(chunk) == late_paths, chunk[:3]
            unit = next(u for u in units_of("extract") if deployed.unit_main_pid(u) == frozen.pid)
            wait_for(
                lambda: (
                    task_id
                    in (flower_api(deployed, "api/tasks?state=FAILURE&taskname=extract.files")[1] or {})
                ),
                timeout=LIMIT + 120,
                interval=3,
                what="the hung task listed as FAILURE in Flower",
            )
            status, info = flower_api(deployed, f"api/task/info/{task_id}")
            assert status == 200 and info["state"] == "FAILURE" and not info.get("retries"), info
            assert f"TimeLimitExceeded({LIMIT}" in (info.get("traceback") or ""), info
            session = scan.result(timeout=600)
            # The stuck thread cannot be killed: a minute later its worker shuts down and exits,
            # systemd starts a fresh one (and the frozen thread ends with its process).
            wait_for(
                lambda: deployed.unit_main_pid(unit) not in (0, frozen.pid),
                timeout=240, interval=2, what=f"{unit} replaced",
            )  # fmt: skip
            assert frozen.proc.wait(timeout=60) == 0
        finally:
            resume(deployed, [frozen])
    wait_all_active(deployed)
    assert session["status"] == "completed", session
    assert session["counts"]["errors"] == len(chunk), session
    assert session["counts"]["inserted"] == 0, session
    assert session["counts"]["unchanged"] == len(expected) - len(chunk), session
    assert psql(deployed, "SELECT count(*) FROM present_tracks") == [[str(len(expected) - len(chunk))]]
    reason = f"not read: its extract task ran past the {LIMIT} s time limit"
    listed = [json.loads(line) for line in deployed.ssh("soniquebay errors --json").stdout.splitlines()]
    assert sorted(e["path"] for e in listed) == sorted(chunk), listed[:3]
    assert {(e["stage"], e["error"]) for e in listed} == {("extract", reason)}
    proc = deployed.ssh("soniquebay retry-failed --wait --json", timeout=300)
    assert '"status": "completed"' in proc.stdout, proc.stdout
    assert_library_is_exactly(deployed, expected)


def test_a_database_outage_shows_retry_then_success_in_flower_and_metrics_show_throughput(deployed, tmp_path):
    """PostgreSQL goes down while the insert workers hold batches (the stage is held back until
    its queue is full, then released into the outage): the inserts retry, then succeed."""
    expected = put_library(deployed, tmp_path / "music", artists=6, albums_per_artist=4, tracks_per_album=30)
    scan = hold_stage(deployed, "insert")
    deployed.ssh("systemctl stop postgresql")
    deployed.ssh("systemctl start " + " ".join(units_of("insert")))
    try:
        retried = wait_for(
            lambda: flower_api(deployed, "api/tasks?state=RETRY")[1],
            timeout=60,
            interval=1,
            what="a task in state RETRY in Flower",
        )
        time.sleep(3)
    finally:
        deployed.ssh("systemctl start postgresql")
    session = scan.result(timeout=600)
    assert session["status"] == "completed", session
    assert session["counts"]["inserted"] == len(expected) and session["counts"]["errors"] == 0

    def all_succeeded():
        states = {tid: (flower_api(deployed, f"api/task/info/{tid}")[1] or {}) for tid in retried}
        done = {tid: info for tid, info in states.items() if info.get("state") == "SUCCESS"}
        return done if len(done) == len(states) else None

    succeeded = wait_for(all_succeeded, timeout=180, interval=3, what="the retried tasks to succeed")
    assert all(int(info.get("retries") or 0) >= 1 for info in succeeded.values()), succeeded
    # Throughput and runtime per task, from Flower's metrics in Prometheus (README, Monitoring).
    query = "sum by (task) (increase(flower_events_total{type='task-succeeded'}[10m]))"
    wait_for(
        lambda: (
            {s["metric"]["task"] for s in prometheus(f"api/v1/query?query={_q(query)}")["result"]}
            >= {"scan.walk", "extract.files", "batch.collect", "insert.records", "deferred.finalize"}
        ),
        timeout=90,
        what="succeeded-task counts per task name",
    )
    average = (
        "sum by (task) (rate(flower_task_runtime_seconds_sum[10m]))"
        " / sum by (task) (rate(flower_task_runtime_seconds_count[10m]))"
    )
    runtime = prometheus("api/v1/query?query=" + _q(average))["result"]
    assert {s["metric"]["task"] for s in runtime} >= {"extract.files", "insert.records"}
    # Memory per worker: Flower's worker stats (maxrss) for every worker.
    workers = flower_workers(deployed)
    assert all(info["stats"]["rusage"]["maxrss"] > 0 for info in workers.values())


def _q(promql: str) -> str:
    import urllib.parse

    return urllib.parse.quote(promql, safe="")
