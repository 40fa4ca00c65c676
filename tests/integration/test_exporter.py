"""The metrics exporter against real Redis and PostgreSQL."""

from __future__ import annotations

import math
import os
import re
import shutil
import urllib.request

import pytest
import redis

from testkit import audio_fixtures, services

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert re.search(r"^# TYPE soniquebay_queue_messages gauge$", text, re.M)
    return samples


@pytest.fixture()
def exporter_port(broker):
    """The exporter, logged in to the broker as its own read-only user (as deployed)."""
    port = services.free_port()
    env = {**os.environ, **broker.login_env("exporter")}
    with services.process_listening(
        [str(services.VENV_BIN / "soniquebay"), "exporter", "--port", str(port)], port, env=env
    ):
        yield port


def test_metrics_follow_the_library_queues_and_stalled_sessions(pipeline, library, exporter_port):
    expected = audio_fixtures.build_library(library, artists=2, albums_per_artist=2, tracks_per_album=3)
    assert pipeline.scan(library)["status"] == "completed"
    m = scrape(exporter_port)
    assert m["soniquebay_up"] == 1
    assert m['soniquebay_library_items{kind="tracks"}'] == len(expected)
    assert m['soniquebay_library_items{kind="missing"}'] == 0
    # What sessions did to track identities: an album renamed (moved), another deleted (missing).
    albums = sorted({os.path.dirname(e["path"]) for e in expected})
    os.rename(albums[0], albums[0] + " (renamed)")
    shutil.rmtree(albums[1])
    assert pipeline.scan(library)["status"] == "completed"
    m = scrape(exporter_port)
    assert m['soniquebay_tracks_identity_total{event="moved"}'] == 3
    assert m['soniquebay_tracks_identity_total{event="missing"}'] == 3
    assert m['soniquebay_tracks_identity_total{event="returned"}'] == 0
    assert m['soniquebay_tracks_identity_total{event="purged"}'] == 0
    assert m['soniquebay_library_items{kind="tracks"}'] == len(expected) - 3
    assert m['soniquebay_library_items{kind="missing"}'] == 3
    assert m["soniquebay_scan_sessions_running"] == 0
    assert m["soniquebay_scan_session_stalled_seconds"] == 0
    for queue in services.QUEUES:
        assert m[f'soniquebay_queue_messages{{queue="{queue}"}}'] == 0
        assert m[f'soniquebay_queue_oldest_unfinished_seconds{{queue="{queue}"}}'] == 0

    # A session whose last extract chunk never finished, ten minutes ago.
    pipeline.conn.execute(
        "INSERT INTO scan_sessions (id, roots, started_at) "
        "VALUES ('00000000-0000-4000-8000-000000000001', '{/x}', now() - interval '20 minutes')"
    )
    pipeline.conn.execute(
        "INSERT INTO scan_units (session_id, unit_id, stage, created_at) "
        "VALUES ('00000000-0000-4000-8000-000000000001', 'walk:0/x0', 'extract', "
        "        now() - interval '10 minutes')"
    )
    from backend_worker.app import app

    pipeline.workers.stop(["scan"])  # so that a message waits in the scan queue
    try:
        with app.connection_for_write() as conn:
            app.amqp.Producer(conn).publish({"hello": 1}, routing_key="scan", exchange="soniquebay")
        m = scrape(exporter_port)
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("scan")
        pipeline.workers.start(["scan"])
    assert m["soniquebay_scan_sessions_running"] == 1
    assert 590 < m["soniquebay_scan_session_stalled_seconds"] < 700
    assert 590 < m['soniquebay_queue_oldest_unfinished_seconds{queue="extract"}'] < 700
    assert m['soniquebay_queue_messages{queue="scan"}'] == 1


def test_metrics_give_the_age_of_the_last_complete_scan_of_each_library_root(
    pipeline, library, tmp_path, broker
):
    from backend_worker import exporter

    audio_fixtures.build_library(library / "a", artists=1, albums_per_artist=1, tracks_per_album=1)
    audio_fixtures.build_library(library / "b", artists=1, albums_per_artist=1, tracks_per_album=1)
    never = tmp_path / "never scanned"
    roots = (str(library), str(never))
    exporter_broker = redis.Redis.from_url(broker.url_for("exporter"))  # the exporter's own user

    def ages() -> dict[str, float]:
        samples = exporter.collect(exporter_broker, pipeline.conn, roots)
        return {s[1]["root"]: s[2] for s in samples if s[0] == "soniquebay_last_completed_scan_age_seconds"}

    assert ages() == {str(library): math.inf, str(never): math.inf}
    assert pipeline.scan(library / "a")["status"] == "completed"  # a folder below the root: not the root
    assert ages()[str(library)] == math.inf
    assert pipeline.scan(library)["status"] == "completed"
    pipeline.conn.execute("UPDATE scan_sessions SET ended_at = ended_at - interval '1 hour'")
    assert 3600 <= ages()[str(library)] < 3700 and ages()[str(never)] == math.inf
    text = exporter.render(exporter.collect(exporter_broker, pipeline.conn, roots))
    assert f'soniquebay_last_completed_scan_age_seconds{{root="{never}"}} +Inf' in text.splitlines()


def test_metrics_say_down_when_the_database_is_unreachable(services_up, monkeypatch):
    from backend_worker.exporter import Exporter

    monkeypatch.setenv("SONIQUEBAY_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    text = Exporter().scrape()
    assert "soniquebay_up 0" in text.splitlines()


def test_metrics_give_the_last_good_and_failed_backups(db_conn):
    from backend_worker import exporter

    db_conn.execute("DELETE FROM backups")

    def backups() -> dict[str, float]:
        return {name: value for name, _, value in exporter.backup_samples(db_conn)}

    # None yet: the age counts from the migration that began recording them.
    applied = db_conn.execute(
        "SELECT extract(epoch FROM now() - applied_at) FROM schema_migrations WHERE name = '0009_backups.sql'"
    ).fetchone()[0]
    none = backups()
    assert none["soniquebay_backup_last_success_timestamp_seconds"] == 0
    assert none["soniquebay_backup_last_failure_timestamp_seconds"] == 0
    assert abs(none["soniquebay_backup_age_seconds"] - float(applied)) < 5
    db_conn.execute(
        "INSERT INTO backups (started_at, finished_at, ok, file, bytes, error) VALUES "
        "(now() - interval '50 hours', now() - interval '49 hours', true, '/b/old.dump', 100, NULL), "
        "(now() - interval '26 hours', now() - interval '25 hours', true, '/b/new.dump', 300, NULL), "
        "(now() - interval '2 hours', now() - interval '1 hour', false, NULL, NULL, 'pg_dump failed')"
    )
    now = db_conn.execute("SELECT extract(epoch FROM now())").fetchone()[0]
    m = backups()
    assert abs(m["soniquebay_backup_last_success_timestamp_seconds"] - (float(now) - 25 * 3600)) < 5
    assert abs(m["soniquebay_backup_last_failure_timestamp_seconds"] - (float(now) - 3600)) < 5
    assert 25 * 3600 - 5 < m["soniquebay_backup_age_seconds"] < 25 * 3600 + 5
    assert m["soniquebay_backup_size_bytes"] == 300
    db_conn.execute("DELETE FROM backups")
