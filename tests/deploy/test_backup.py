"""Backups and restore on the deployed test host, with the shipped settings (daily timer, 7 dumps kept).

soniquebay-backup.service writes consistent dumps and keeps the newest seven; a failing run fails the
unit, shows in the exporter and fires SoniqueBayBackupFailed in Prometheus. playbooks/restore.yml
brings a dump back after the database is dropped: every track keeps its id, a session that was
running when the dump was taken completes, and an unchanged rescan changes nothing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from testkit import audio_fixtures
from testkit.deploy.checks import LIBRARY, wait_all_active
from testkit.deploy.ops import (
    BackgroundScan,
    assert_library_is_exactly,
    prometheus,
    put_library,
    redis,
    reset_library_db,
    wait_for,
)
from testkit.deploy.ops import units_of as stage_units
from testkit.stack import http, psql, soniquebay_json

pytestmark = pytest.mark.deploy

BACKUPS = "/var/backups/soniquebay"
EXPORTER = "http://127.0.0.1:9808/metrics"
KEEP = 7  # postgresql_backup_keep's default


def exporter_metrics() -> dict[str, float]:
    status, _, body = http(EXPORTER)
    assert status == 200, body[:300]
    samples = {}
    for line in body.decode().splitlines():
        if line.startswith("soniquebay_backup_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def dumps(host) -> list[str]:
    return host.ssh(
        f"find {BACKUPS} -maxdepth 1 -name 'soniquebay-*.dump' -printf '%f\\n' | sort"
    ).stdout.split()


def back_up(host, check: bool = True):
    """One run of the backup unit, as its timer starts it; returns the finished ssh call."""
    proc = host.ssh("systemctl start soniquebay-backup.service", check=False, timeout=600)
    if check:
        assert proc.returncode == 0, host.ssh(
            "journalctl -u soniquebay-backup.service -n 20 --no-pager"
        ).stdout
    return proc


def track_ids(host, under: str = LIBRARY) -> dict[str, str]:
    rows = psql(host, f"SELECT path, id FROM present_tracks WHERE starts_with(path, '{under}/')")
    return dict(rows)


def test_the_backup_timer_writes_private_dumps_and_keeps_the_newest_seven(deployed):
    enabled = deployed.ssh(
        "systemctl is-enabled soniquebay-backup.timer; systemctl is-active soniquebay-backup.timer"
    )
    assert enabled.stdout.split() == ["enabled", "active"]
    assert "02:30:00" in deployed.ssh("systemctl show -P TimersCalendar soniquebay-backup.timer").stdout
    assert deployed.ssh(f"stat -c '%a %U' {BACKUPS}").stdout.split() == ["700", "postgres"]
    before = set(dumps(deployed))
    started = time.time()
    for _ in range(KEEP + 2):
        back_up(deployed)
    kept = dumps(deployed)
    assert len(kept) == KEEP, kept
    assert not before & set(kept), "older dumps should have gone first"
    newest = f"{BACKUPS}/{kept[-1]}"
    assert deployed.ssh(f"stat -c '%a %U' {newest}").stdout.split() == ["600", "postgres"]
    # A dump pg_restore reads, holding the library's tables.
    listing = deployed.ssh(f"pg_restore --list {newest}").stdout
    assert "TABLE DATA public tracks" in listing and "TABLE DATA public scan_sessions" in listing
    assert not deployed.ssh(f"find {BACKUPS} -name '*.partial'").stdout.strip()
    rows = psql(deployed, "SELECT count(*) FILTER (WHERE ok), max(file) FROM backups WHERE ok")
    assert int(rows[0][0]) >= KEEP + 2 and rows[0][1] == newest
    m = exporter_metrics()
    assert started - 5 <= m["soniquebay_backup_last_success_timestamp_seconds"] <= time.time() + 5
    assert m["soniquebay_backup_age_seconds"] < 120
    assert m["soniquebay_backup_size_bytes"] > 0


def test_a_failing_backup_fails_its_unit_and_fires_the_alert(deployed):
    # The directory is no longer postgres' (a disk mounted there read-only would do the same).
    deployed.ssh(f"chown root:root {BACKUPS} && chmod 0755 {BACKUPS}")
    try:
        failed_at = time.time()
        assert back_up(deployed, check=False).returncode != 0
        assert (
            deployed.ssh("systemctl is-failed soniquebay-backup.service", check=False).stdout.strip()
            == "failed"
        )
        journal = deployed.ssh("journalctl -u soniquebay-backup.service -n 20 --no-pager").stdout
        assert "backup of soniquebay failed" in journal and "Permission denied" in journal, journal
        m = exporter_metrics()
        assert m["soniquebay_backup_last_failure_timestamp_seconds"] >= failed_at - 5
        assert (
            m["soniquebay_backup_last_failure_timestamp_seconds"]
            > m["soniquebay_backup_last_success_timestamp_seconds"]
        )

        def firing():
            alerts = prometheus("api/v1/alerts")["alerts"]
            return [
                a
                for a in alerts
                if a["labels"]["alertname"] == "SoniqueBayBackupFailed" and a["state"] == "firing"
            ]

        alert = wait_for(firing, timeout=180, interval=5, what="SoniqueBayBackupFailed firing")[0]
        assert alert["labels"]["severity"] == "critical"
    finally:
        deployed.ssh(f"chown postgres:postgres {BACKUPS} && chmod 0700 {BACKUPS}")
    back_up(deployed)
    m = exporter_metrics()
    assert (
        m["soniquebay_backup_last_success_timestamp_seconds"]
        > m["soniquebay_backup_last_failure_timestamp_seconds"]
    )


def test_restore_after_the_database_is_dropped_keeps_every_id_and_finishes_the_running_session(
    deployed, tmp_path_factory
):
    reset_library_db(deployed)
    staging = tmp_path_factory.mktemp("backup") / "music"
    first = put_library(deployed, staging, artists=3, albums_per_artist=4, tracks_per_album=10, seed=31)
    session = soniquebay_json(deployed, "scan", LIBRARY, "--wait", "--json")
    assert session["status"] == "completed", session
    ids_before = track_ids(deployed)
    assert len(ids_before) == len(first)

    # More files, and a scan of them held before its inserts: the dump is taken mid-session.
    more = staging.parent / "later"
    later = audio_fixtures.build_library(more, artists=2, albums_per_artist=5, tracks_per_album=20, seed=32)
    target = deployed.root / LIBRARY.lstrip("/") / "later"
    subprocess.run(["cp", "-a", str(more), str(target)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    for record in later:
        record["path"] = f"{LIBRARY}/later/{Path(record['path']).relative_to(more)}"
    inserts = stage_units("insert")
    deployed.ssh("systemctl stop " + " ".join(inserts), timeout=300)
    try:
        scan = BackgroundScan(deployed)
        running = scan.session_id()
        previous = None

        def inserts_waiting():
            nonlocal previous
            length = int(redis(deployed, "llen", "insert"))
            settled = length > 0 and length == previous
            previous = length
            return settled

        wait_for(inserts_waiting, timeout=180, interval=2, what="the insert queue to fill")
        back_up(deployed)
        dump = f"{BACKUPS}/{dumps(deployed)[-1]}"
        assert psql(deployed, f"SELECT status FROM scan_sessions WHERE id = '{running}'") == [["running"]]
    finally:
        deployed.ssh("systemctl start " + " ".join(inserts))
    assert scan.result()["status"] == "completed"

    # The disk is lost: the database goes, then the restore playbook brings the dump back.
    deployed.ssh("systemctl stop soniquebay.target", timeout=300)
    deployed.ssh("runuser -u postgres -- dropdb soniquebay")
    result = deployed.converge("playbooks/restore.yml", "-e", f"postgresql_restore_file={dump}")
    assert result.ok, result.tail(80)
    wait_all_active(deployed)

    # The session the dump caught running goes on from there (its ledger is in the dump) and completes.
    def closed():
        rows = psql(deployed, f"SELECT status FROM scan_sessions WHERE id = '{running}'")
        return rows[0][0] if rows and rows[0][0] != "running" else None

    assert wait_for(closed, timeout=300, interval=3, what=f"session {running} to close") == "completed"
    assert_library_is_exactly(deployed, first + later)
    ids_restored = track_ids(deployed)
    assert {path: ids_restored[path] for path in ids_before} == ids_before

    rescan = soniquebay_json(deployed, "scan", LIBRARY, "--wait", "--json")
    counts = rescan["counts"]
    assert rescan["status"] == "completed" and counts["unchanged"] == len(first) + len(later), counts
    assert counts["extracted"] == counts["inserted"] == counts["moved"] == counts["missing"] == 0, counts
    assert track_ids(deployed) == ids_restored
