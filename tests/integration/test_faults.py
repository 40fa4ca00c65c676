"""Faults injected into a running scan on real workers: nothing is lost, nothing duplicated."""

from __future__ import annotations

import json
import subprocess
import time

import psycopg
import pytest

from tests import audio_fixtures, services

pytestmark = pytest.mark.integration


def test_postgresql_restarted_mid_scan_the_tasks_retry_and_complete(pipeline, postgres, library):
    expected = audio_fixtures.build_library(library, artists=6, albums_per_artist=4, tracks_per_album=8)
    scan = subprocess.Popen(
        [str(services.VENV_BIN / "soniquebay"), "scan", str(library), "--wait", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Stop the database once the scan is under way, keep it down long enough for every stage's
    # tasks to hit the outage, then bring it back.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pipeline.rows("SELECT count(*) FROM scan_units WHERE done_at IS NOT NULL")[0][0] >= 3:
            break
        time.sleep(0.05)
    postgres.stop()
    time.sleep(4)
    postgres.start()
    out, err = scan.communicate(timeout=300)
    assert scan.returncode == 0, err
    session = json.loads(out.strip().splitlines()[-1])
    assert session["status"] == "completed"
    assert session["counts"]["inserted"] == len(expected) and session["counts"]["errors"] == 0
    with psycopg.connect(postgres.url) as conn:
        paths = [p for (p,) in conn.execute("SELECT path FROM tracks ORDER BY path")]
    assert paths == sorted(e["path"] for e in expected)
    logs = "".join(pipeline.workers.log_tail(q, 4000) for q in services.QUEUES)
    assert "retry" in logs.lower(), "some task met the outage and was retried"
