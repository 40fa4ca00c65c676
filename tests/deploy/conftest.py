"""Deployment tests: one booted Debian 12 machine per pytest session. Its first converge is an
upgrade in place: the release before (testkit.releases) is deployed, a 20,000-file scan started,
and playbooks/site.yml of this checkout runs while the scan is in flight (the `upgrade` fixture);
every test then checks the upgraded host.

The machine (testkit/testhost.py) shares this host's network, so nginx, Flower, Redis and PostgreSQL
of the deployment answer on this machine's loopback ports while it runs. It is destroyed at the end
of the session, also when a test fails or the run is interrupted.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from testkit import audio_fixtures, releases, stack
from testkit.deploy.checks import LIBRARY
from testkit.deploy.layout import ALL_UNITS
from testkit.machine import Converge
from testkit.stack import soniquebay_json
from testkit.testhost import TestHost
from testkit.upgrade import Upgrade, upgrade_during_scan

# What creating the machine may take on top of a test's own time: debootstrap on a new controller
# (about 2 min), boot, and the first converge: the release before (5-10 min on 2 cores), then this
# one over it during a scan (2-4 min); each converge's own limit is 1800 s.
HOST_BUDGET = 3000
# The library scanned during the upgrade: 20,000 files (200 artists x 10 albums x 10 tracks).
UPGRADE_FOLDER = f"{LIBRARY}/upgrade"
UPGRADE_SHAPE = {"artists": 200, "albums_per_artist": 10, "tracks_per_album": 10, "seconds": 0.5, "seed": 30}


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the items that will run, in their final order
def pytest_collection_modifyitems(config, items):
    """Run the deploy tests last: while the test host is up it holds ports 80, 5432, 5555, 6379
    and a few GB of memory, which the other suites should not share. The first of them creates
    the machine (the session fixtures below): its time limit gets HOST_BUDGET on top of its own."""
    deploy = [item for item in items if item.get_closest_marker("deploy")]
    if not deploy:
        return
    rest = [item for item in items if not item.get_closest_marker("deploy")]
    items[:] = rest + deploy
    first = deploy[0]
    marker = first.get_closest_marker("timeout")
    own = marker.args[0] if marker and marker.args else float(config.getini("timeout"))
    first.add_marker(pytest.mark.timeout(own + HOST_BUDGET), append=False)


@pytest.fixture(scope="session")
def test_host():
    """The booted machine, not yet provisioned (or SONIQUEBAY_TESTHOST: one kept up, see testhost.py)."""
    kept = os.environ.get("SONIQUEBAY_TESTHOST")
    host = TestHost.attach(kept) if kept else TestHost.create()
    try:
        yield host
    finally:
        host.destroy()


@pytest.fixture(scope="session")
def upgrade(test_host) -> Upgrade | None:
    """The release before converged on the fresh host, a 20,000-file scan of it started, and
    playbooks/site.yml of this checkout run while it is in flight (testkit.upgrade). What the test
    of the upgrade checks is read here; then the library is taken away and its tracks purged, so
    the other tests start from an empty library. None on a machine kept up (SONIQUEBAY_TESTHOST):
    it already runs this release."""
    if test_host.kept:
        return None
    commit = releases.previous_release()
    tree = releases.export_tree(commit, test_host.workdir / "release-before")
    before = test_host.converge(release=tree)
    assert before.ok, f"site.yml of the release before ({commit}) failed:\n{before.tail(120)}"
    states = test_host.wait_active(ALL_UNITS, timeout=180)
    assert all(state == "active" for state in states.values()), states
    folder = test_host.root / UPGRADE_FOLDER.lstrip("/")
    expected = audio_fixtures.build_library(folder, **UPGRADE_SHAPE)
    subprocess.run(["chmod", "-R", "a+rX", str(test_host.root / LIBRARY.lstrip("/"))], check=True)
    result = upgrade_during_scan(
        lambda: test_host.converge(),
        commit,
        test_host,
        [test_host],
        UPGRADE_FOLDER,
        stack.expected_rows(expected, folder, UPGRADE_FOLDER),
    )
    assert result.run.converge.ok, (
        f"site.yml over the release before failed:\n{result.run.converge.tail(120)}"
    )
    # The folder emptied (not the root: a scan refuses an empty root that holds tracks), scanned,
    # its tracks missing, then purged as an operator does.
    shutil.rmtree(folder)
    folder.mkdir()
    session = soniquebay_json(test_host, "scan", UPGRADE_FOLDER, "--wait", "--json")
    assert session["status"] == "completed", session
    test_host.ssh("soniquebay purge")
    folder.rmdir()
    return result


@pytest.fixture(scope="session")
def first_converge(test_host, upgrade) -> Converge:
    if upgrade is not None:
        return upgrade.run.converge
    result = test_host.converge()
    assert result.ok, f"ansible-playbook playbooks/site.yml failed on the kept host:\n{result.tail(120)}"
    return result


@pytest.fixture(scope="session")
def deployed(test_host, first_converge) -> TestHost:
    """The machine after a successful `playbooks/site.yml`, every unit active."""
    states = test_host.wait_active(ALL_UNITS, timeout=180)
    assert all(state == "active" for state in states.values()), states
    stack.trust(test_host.flower_certificate())
    return test_host
