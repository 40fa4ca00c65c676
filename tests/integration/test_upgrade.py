"""A library ingested by the release before keeps its track ids through the upgrade: the migrations
it lacks keep every row, and the first rescan reads each file once more at its path (for the
credits the release before did not store), keeping every id; the next reads none. The release
before runs for real (its code from git, its workers and its command)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from backend_worker import db
from testkit import audio_fixtures, releases, services

pytestmark = pytest.mark.integration

DATABASE = "soniquebay_upgrade"


def soniquebay(env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, f"soniquebay {' '.join(args)}: {proc.stderr}"
    return proc


def scan(env: dict, root: Path) -> dict:
    session = json.loads(soniquebay(env, "scan", str(root), "--wait", "--json").stdout.splitlines()[-1])
    assert session["status"] == "completed", session
    return session["counts"]


def test_a_library_of_the_release_before_keeps_its_ids_after_the_upgrade(
    worker_procs, db_conn, library, postgres
):
    db_conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    postgres.create_database(DATABASE)  # as deployed: the owner migrates, the workers' role scans
    url = postgres.url_for(services.WORKERS_ROLE, DATABASE)
    owner_url = postgres.url_for(services.OWNER_ROLE, DATABASE)
    before_release = releases.export(
        releases.previous_release(), services.shared_tempdir("soniquebay-release-")
    )
    env_before = {**os.environ, "SONIQUEBAY_DATABASE_URL": url, "PYTHONPATH": str(before_release)}
    env_now = {**os.environ, "SONIQUEBAY_DATABASE_URL": url}
    logs = services.shared_tempdir("soniquebay-upgrade-logs-")

    newest = db.migrations()[-1][1]  # what the release before lacks (it was added after it)
    # Migrations log in as the owner role (its URL only in their environment, as deployed).
    as_owner_before = {**env_before, "SONIQUEBAY_DATABASE_URL": owner_url}
    assert newest not in soniquebay(as_owner_before, "db", "upgrade").stdout
    audio_fixtures.build_library(library, artists=2, albums_per_artist=5, tracks_per_album=4)
    worker_procs.stop()
    try:
        workers = services.Workers(logs / "before", env_before)
        try:
            workers.start()
            assert scan(env_before, library)["inserted"] == 40
        finally:
            workers.stop()
        with psycopg.connect(url) as conn:
            ids = conn.execute("SELECT id, path, album_id, artist_id FROM tracks ORDER BY id").fetchall()
        assert len(ids) == 40

        migrated = soniquebay({**env_now, "SONIQUEBAY_DATABASE_URL": owner_url}, "db", "upgrade").stdout
        assert f"applied {newest}" in migrated
        workers = services.Workers(logs / "now", env_now)
        try:
            workers.start()
            # The first rescan reads every file once more, for what the release before did not
            # store (its credits, migration 0010), at its path: every id stays.
            counts = scan(env_now, library)
            assert (counts["unchanged"], counts["extracted"], counts["inserted"]) == (0, 40, 40), counts
            assert (counts["moved"], counts["missing"], counts["returned"]) == (0, 0, 0), counts
            with psycopg.connect(url) as conn:
                assert (
                    conn.execute("SELECT id, path, album_id, artist_id FROM tracks ORDER BY id").fetchall()
                    == ids
                )
                filled = "SELECT count(audio_key), count(ino), count(dev) FROM present_tracks"
                assert conn.execute(filled).fetchone() == (40, 40, 40)
                # Each "A feat. B" track credits both artists now, the others their one artist.
                credited, featuring = conn.execute(
                    "SELECT count(*) FILTER (WHERE n = 2), count(*) FILTER (WHERE artist LIKE '%% feat. %%') "
                    "FROM (SELECT t.artist, (SELECT count(*) FROM track_credits c WHERE c.track_id = t.id "
                    "AND c.role = 'artist') AS n FROM tracks t) AS x"
                ).fetchone()
                assert credited == featuring > 0
            # From then on an unchanged library is read no more.
            counts = scan(env_now, library)
            assert (counts["unchanged"], counts["extracted"], counts["inserted"]) == (40, 0, 0), counts
            # And the identity holds from then on: the library reorganised, every id kept.
            top = next(p for p in library.iterdir() if p.name != audio_fixtures.VARIOUS_ARTISTS)
            below = sum(1 for p in top.rglob("*") if p.suffix in (".mp3", ".flac", ".ogg", ".opus", ".m4a"))
            top.rename(library / "Renamed")
            counts = scan(env_now, library)
            assert (counts["moved"], counts["extracted"], counts["missing"]) == (below, 0, 0), counts
            with psycopg.connect(url) as conn:
                after = conn.execute(
                    "SELECT id, path, album_id, artist_id FROM tracks ORDER BY id"
                ).fetchall()
            prefix = str(top) + "/"
            assert after == [
                (i, str(library / "Renamed") + "/" + p[len(prefix) :] if p.startswith(prefix) else p, al, ar)
                for i, p, al, ar in ids
            ]
        finally:
            workers.stop()
    finally:
        worker_procs.start()
        db_conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
