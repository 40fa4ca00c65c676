"""Multi-host deployment tests: db1 (broker, database, Flower) and two worker hosts, each a booted
Debian 12 in its own network namespace (testkit/testnet.py), plus an "outsider" namespace on the same
network that no inventory names.

They never share a session with the deploy tests (whose test host uses this machine's network and
memory): `make test` runs them in a pytest invocation of their own, `pytest -m multihost`. In a
session that selected both, the multi-host tests are skipped with that hint.

For development, keep the machines between runs:
    SONIQUEBAY_MULTIHOST_KEEP=1 pytest -m multihost    # leaves network "sbt" up (owner "kept")
    SONIQUEBAY_MULTIHOST_KEEP=1 pytest -m multihost -k scan   # attaches to it again
    python -m testkit.testnet down sbt                   # removes it
"""

from __future__ import annotations

import os

import pytest

from testkit import multihost
from testkit.testnet import NET_ROOT, TestNet, TestNetError

NET_NAME = "sbt"
SUBNET = 0  # 10.77.0.0/24; make sandbox uses 10.77.1.0/24
KEEP = os.environ.get("SONIQUEBAY_MULTIHOST_KEEP", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    multihost = [item for item in items if item.get_closest_marker("multihost")]
    if not multihost:
        return
    rest = [item for item in items if not item.get_closest_marker("multihost")]
    items[:] = rest + multihost  # after everything, the deploy tests included
    if any(item.get_closest_marker("deploy") for item in rest):
        skip = pytest.mark.skip(
            reason="the multi-host tests run in a pytest session of their own (pytest -m multihost; "
            "make test does): the deploy tests' test host must be gone before their machines boot"
        )
        for item in multihost:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def net():
    """Three booted machines and an outsider namespace; the music library bind-mounted read-only at
    /srv/music on both worker hosts (the same directory of this machine)."""
    music = NET_ROOT / NET_NAME / "music"
    if KEEP:
        try:
            network = TestNet.attach(NET_NAME)
        except TestNetError:
            network = None
        if network is not None:
            yield network
            return
    network = TestNet.create(
        NET_NAME,
        subnet=SUBNET,
        machines=[multihost.DB_HOST, *multihost.WORKER_HOSTS],
        outsiders=["outsider"],
        binds={host: {multihost.LIBRARY: str(music)} for host in multihost.WORKER_HOSTS},
        owner="kept" if KEEP else None,
    )
    try:
        yield network
    finally:
        if not KEEP:
            network.destroy()


@pytest.fixture(scope="session")
def music(net):
    """The library directory every worker host sees at /srv/music."""
    return net.hosts[multihost.WORKER_HOSTS[0]].binds[multihost.LIBRARY]


@pytest.fixture(scope="session")
def inventories(net):
    """Inventory without worker2 (phase a: the stack before the host is added) and with it."""
    return {
        "without_worker2": multihost.write_multihost_inventory(
            net, net.workdir / "inventory-a", workers=("worker1",), settings=multihost.RUN_SETTINGS
        ),
        "full": multihost.write_multihost_inventory(
            net, net.workdir / "inventory", settings=multihost.RUN_SETTINGS
        ),
    }
