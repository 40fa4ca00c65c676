"""The broker's line cut while tasks send their messages (a Redis restart, a network drop): every
send either lands in its queue or raises an error the one retry policy waits out. Anything else
fails the task, and with it the scan session (as a Redis restart once did: kombu re-declared the
queue on a fresh connection, then published on the channel that reconnection had closed)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading

import pytest
import redis

from testkit import netcut, services

pytestmark = pytest.mark.integration

# A database no worker of the suite consumes from: the probe's messages stay where they were sent.
PROBE_DB = 7


def test_sends_cut_mid_command_raise_only_errors_the_retry_policy_waits_out(broker):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    forwarder = netcut.Forwarder(broker.port)
    env = {**os.environ, "SONIQUEBAY_BROKER_URL": broker.url_for("workers", port=forwarder.port, db=PROBE_DB)}
    # As many threads as an insert unit runs tasks at once (roles/backend_worker/defaults/main.yml).
    probe = subprocess.Popen(
        [sys.executable, "-m", "testkit.publish_under_cuts", "25", "16"],
        cwd=services.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stop = threading.Event()

    def cut_now_and_then():
        # Short cuts, often, so that some fall in every step of a send (this struck the declaration
        # retried over a reconnection 6 to 16 times in 25 s, measured before the fix).
        while not stop.wait(rng.uniform(0.01, 0.1)):
            forwarder.cut(rng.choice([0.0, 0.01, 0.05]))

    cutter = threading.Thread(target=cut_now_and_then)
    cutter.start()
    try:
        out, err = probe.communicate(timeout=120)
    finally:
        stop.set()
        cutter.join()
        forwarder.close()
    assert probe.returncode == 0, err
    report = json.loads(out)
    sent, transient, other = report["sent"], report["transient"], report["other"]
    print(f"seed {seed}: {forwarder.cuts} cuts, {len(sent)} sent, {len(transient)} transient")
    assert forwarder.cuts >= 200 and len(transient) >= 3, "the cuts did not strike the sends"
    assert not other, f"seed {seed}: {len(other)} sends failed otherwise:\n{other[0]}"
    # A send that returned is in its queue (a send retried after a cut may be there twice).
    queued = redis.Redis.from_url(broker.url_for("workers", db=PROBE_DB))
    try:
        ids = {json.loads(body)["headers"]["id"] for body in queued.lrange("insert", 0, -1)}
        assert set(sent) <= ids, f"seed {seed}: {len(set(sent) - ids)} sent messages missing"
        assert len(sent) >= 100
    finally:
        queued.delete("insert")
