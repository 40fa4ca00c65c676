"""Deployment tests: one booted Debian 12 machine per pytest session, converged once with site.yml.

The machine (testkit/testhost.py) shares this host's network, so nginx, Flower, Redis and PostgreSQL
of the deployment answer on this machine's loopback ports while it runs. It is destroyed at the end
of the session, also when a test fails or the run is interrupted.
"""

from __future__ import annotations

import os

import pytest

from testkit import stack
from testkit.deploy.layout import ALL_UNITS
from testkit.machine import Converge
from testkit.testhost import TestHost

# What creating the machine may take on top of a test's own time: debootstrap on a new controller
# (about 2 min), boot, and the first converge (5-10 min on 2 cores; its own limit is 1800 s).
HOST_BUDGET = 2400


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
def first_converge(test_host) -> Converge:
    result = test_host.converge()
    assert result.ok, f"ansible-playbook playbooks/site.yml failed on the fresh host:\n{result.tail(120)}"
    return result


@pytest.fixture(scope="session")
def deployed(test_host, first_converge) -> TestHost:
    """The machine after a successful `playbooks/site.yml`, every unit active."""
    states = test_host.wait_active(ALL_UNITS, timeout=180)
    assert all(state == "active" for state in states.values()), states
    stack.trust(test_host.flower_certificate())
    return test_host
