"""`make dev` and `make dev-stop` as the README shows them: Redis, PostgreSQL, one worker per queue
and Flower as plain processes of this machine; a scan through them; everything gone after the stop.
State goes to a folder of the test's own (DEV_DIR) and free ports, so a developer's .dev stays."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from testkit import audio_fixtures
from testkit.machine import port_in_use
from testkit.services import QUEUES, free_port, shared_tempdir
from testkit.stack import http, wait_flower_workers

pytestmark = [pytest.mark.readme, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def make(target: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", target], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_make_dev_runs_a_scan_and_make_dev_stop_stops_every_process():
    dev = shared_tempdir("soniquebay-dev-")
    ports = {"DEV_REDIS_PORT": free_port(), "DEV_PG_PORT": free_port(), "DEV_FLOWER_PORT": free_port()}
    # A developer's shell: none of the suite's own SONIQUEBAY_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQUEBAY_")}
    env.update({"DEV_DIR": str(dev), **{k: str(v) for k, v in ports.items()}})
    up = make("dev", env)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert f"dev stack up. source {dev}/env" in up.stdout
        library = shared_tempdir("soniquebay-dev-music-")
        expected = audio_fixtures.build_library(library, artists=2, albums_per_artist=2, tracks_per_album=5)
        scan = subprocess.run(
            ["bash", "-c", f"source {dev}/env && soniquebay scan {library} --wait --json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert scan.returncode == 0, scan.stdout[-3000:] + scan.stderr[-3000:]
        session = json.loads(scan.stdout.strip().splitlines()[-1])
        assert session["status"] == "completed", session
        counts = session["counts"]
        assert counts["discovered"] == counts["inserted"] == len(expected) and counts["errors"] == 0, session
        flower = f"http://127.0.0.1:{ports['DEV_FLOWER_PORT']}/flower/"
        password = (dev / "flower-password").read_text().strip()
        assert http(flower)[0] == 401
        hostname = socket.gethostname()
        workers = wait_flower_workers(flower, ("admin", password), {f"{q}-1@{hostname}" for q in QUEUES})
        assert {name.split("@")[0] for name in workers} == {f"{q}-1" for q in QUEUES}
        pids = [int(p.read_text()) for p in dev.glob("*.pid")]
        assert len(pids) == len(QUEUES) + 2, pids  # the workers, Flower and redis-server
    finally:
        down = make("dev-stop", env)
        shutil.rmtree(dev, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "dev stack stopped" in down.stdout
    assert [name for name, port in ports.items() if port_in_use(port)] == []
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert alive == [], alive
