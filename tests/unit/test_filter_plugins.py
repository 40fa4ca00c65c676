"""The roles' filters (roles/soniquebay/filter_plugins/soniquebay.py) as plain Python: the
worker layout of a host, the private addresses of the other worker hosts, the app revision a unit
records. The unit check they build runs in tests/deploy/test_lint.py (it starts systemd-analyze)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testkit import role_filters

REPO = Path(__file__).resolve().parents[2]
filters = role_filters.load()

LIMITS = {"scan": 600, "extract": 600, "batch": 300, "insert": 600, "deferred": 900}
GROUPS = {"ingest": ["worker1", "worker2"], "writers": ["worker2"]}


def pool(queue: str, units: int = 1, **more) -> dict:
    return {"queue": queue, "units": units, "concurrency": 2, "prefetch_multiplier": 1, **more}


def test_the_filters_are_registered_under_their_names():
    assert set(filters.FilterModule().filters()) == {
        "host_pools", "worker_units", "peer_addresses", "host_network", "ip_addresses", "app_revision",
        "inotify_limits", "systemd_verify_command",
    }  # fmt: skip


def test_a_host_runs_unplaced_pools_and_those_of_its_groups():
    pools = [pool("scan", group="ingest"), pool("batch", group="writers"), pool("insert"),
             pool("deferred", group=None)]  # fmt: skip

    def queues(host: str) -> list[str]:
        return [p["queue"] for p in filters.host_pools(pools, {}, host, GROUPS)]

    assert queues("worker1") == ["scan", "insert", "deferred"]
    assert queues("worker2") == ["scan", "batch", "insert", "deferred"]
    # A group the inventory does not have places the pool nowhere.
    assert filters.host_pools([pool("scan", group="nowhere")], {}, "worker1", GROUPS) == []


def test_host_overrides_change_a_pool_or_drop_it_with_zero_units():
    pools = [pool("insert"), pool("extract", units=2)]
    overrides = {"insert": {"units": 2, "concurrency": 8}, "extract": {"units": 0}}
    changed = filters.host_pools(pools, overrides, "worker2", GROUPS)
    assert changed == [pool("insert", units=2) | {"concurrency": 8}]
    assert pools == [pool("insert"), pool("extract", units=2)], "the inventory's pools are left as they were"


def test_one_unit_per_pool_unit_with_the_queue_time_limit_and_the_defaults():
    pools = [pool("scan", units=2, pool="threads"), pool("batch", memory_max="1G")]
    units = filters.worker_units(pools, LIMITS)
    assert [(u["name"], u["unit"], u["time_limit"]) for u in units] == [
        ("scan-1", "soniquebay-worker-scan-1.service", 600),
        ("scan-2", "soniquebay-worker-scan-2.service", 600),
        ("batch-1", "soniquebay-worker-batch-1.service", 300),
    ]
    assert [(u["pool"], u["memory_max"]) for u in units] == [
        ("threads", "infinity"), ("threads", "infinity"), ("prefork", "1G")
    ]  # fmt: skip
    assert filters.worker_units([pool("scan", units=0)], LIMITS) == []


def test_the_default_layout_gives_the_eight_units_the_deploy_tests_expect():
    defaults = yaml.safe_load((REPO / "roles/backend_worker/defaults/main.yml").read_text())
    layout = defaults["backend_worker_pools"]
    units = filters.worker_units(filters.host_pools(layout, {}, "localhost", {}), LIMITS)
    assert [u["name"] for u in units] == [
        "scan-1", "scan-2", "extract-1", "extract-2", "batch-1", "insert-1", "insert-2", "deferred-1"
    ]  # fmt: skip
    assert units[2]["pool"] == "threads" and "max_tasks_per_child" not in units[2]


def test_peer_addresses_are_the_other_hosts_private_addresses_once_each():
    hostvars = {
        "db1": {"ansible_host": "10.0.0.10"},
        "worker1": {"ansible_host": "203.0.113.5", "soniquebay_private_address": "10.0.0.21"},
        "worker2": {"ansible_host": "10.0.0.22"},
        "worker3": {"ansible_host": "10.0.0.22"},
        "worker4": {"ansible_host": "fd00::24"},
        "local": {"ansible_host": "127.0.0.1"},
        "local6": {"ansible_host": "::1"},
        "named": {"ansible_host": "worker5.example.org"},
        "bare": {},
    }
    hosts = ["db1", "worker1", "worker2", "worker3", "worker4", "local", "local6", "named", "bare"]
    assert filters.peer_addresses(hosts, hostvars, "db1") == ["10.0.0.21", "10.0.0.22", "fd00::24"]
    assert filters.peer_addresses(["db1"], hostvars, "db1") == []


@pytest.mark.parametrize(
    ("address", "network"), [("10.0.0.21", "10.0.0.21/32"), ("fd00::24", "fd00::24/128")]
)
def test_host_network_is_the_network_of_one_address(address, network):
    assert filters.host_network(address) == network


def test_app_revision_names_the_build_and_changes_with_the_settings():
    build = "/opt/soniquebay/venvs/soniquebay-1.0-py3.11-x86_64-0123abcd"
    revision = filters.app_revision(build, "0123456789abcdef0123")
    assert revision == "soniquebay-1.0-py3.11-x86_64-0123abcd-0123456789ab"
    assert filters.app_revision(Path(build).name, "0123456789abcdef0123") == revision
    assert filters.app_revision(build, "ffff456789abcdef0123") != revision


def test_ip_addresses_keeps_the_addresses_once_each():
    given = ["10.0.0.10", "", "db1.example", "127.0.0.1", "10.0.0.10", "fd00::10"]
    assert filters.ip_addresses(given) == ["10.0.0.10", "127.0.0.1", "fd00::10"]


LIVE = {"fs.inotify.max_user_watches": 192540, "fs.inotify.max_user_instances": 128}


def test_auto_inotify_limits_give_each_library_folder_two_watches_and_never_lower_the_kernels():
    million = filters.inotify_limits("auto", "auto", folders=110_101, roots=2, live=LIVE)
    assert million == {"fs.inotify.max_user_watches": 220_202, "fs.inotify.max_user_instances": 128}
    small = filters.inotify_limits("auto", "auto", folders=2_000, roots=1, live=LIVE)
    assert small == {"fs.inotify.max_user_watches": 192540, "fs.inotify.max_user_instances": 128}
    # A kernel set below the watch's needs is raised.
    low = {"fs.inotify.max_user_watches": 8192, "fs.inotify.max_user_instances": 4}
    assert filters.inotify_limits("auto", "auto", folders=2_000, roots=3, live=low) == {
        "fs.inotify.max_user_watches": 8192,
        "fs.inotify.max_user_instances": 11,
    }


def test_inotify_limits_from_the_inventory_are_taken_as_given():
    given = filters.inotify_limits(1_048_576, "512", folders=110_101, roots=1, live=LIVE)
    assert given == {"fs.inotify.max_user_watches": 1_048_576, "fs.inotify.max_user_instances": 512}
    assert filters.inotify_limits(65536, "auto", 10, 1, LIVE)["fs.inotify.max_user_watches"] == 65536


@pytest.mark.parametrize("name", ["", "soniquebay.conf", "a b.service", "x.service; rm -rf /"])
def test_systemd_verify_command_takes_only_unit_file_names(name):
    with pytest.raises(ValueError, match="not a unit file name"):
        filters.systemd_verify_command(name)
