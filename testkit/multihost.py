"""Inventories for machines of a testkit.testnet network: the multi-host layout of inventory/example, and
a single host like inventory/local. Used by the multi-host tests and by `make sandbox`.

The multi-host inventory is inventory/example with the machines' addresses: its group_vars are
used as they are (symlinked: the derived broker/database address, the firewall, the worker layout
placed on the groups `ingest` and `writers`), plus settings of the run in group_vars/all/.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import yaml

from testkit.testnet import TestNet

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory/example"
LOCAL = REPO / "inventory/local"
LIBRARY = "/srv/music"

DB_HOST = "db1"
WORKER_HOSTS = ("worker1", "worker2")
# worker1 is near the storage and the database (every queue: it can take over alone), worker2 near the
# storage only; inventory/example/group_vars/workers.yml places the pools on these groups.
GROUPS = {"ingest": ["worker1", "worker2"], "writers": ["worker1"]}
# Per-host override (host_vars): the writer host runs two insert units instead of the pool's one.
HOST_VARS = {"worker1": {"backend_worker_pool_overrides": {"insert": {"units": 2}}}}
# What that gives: worker name -> (host, concurrency); the eight units of the standard layout.
PLACEMENT = {
    "worker1": ["scan-1", "extract-1", "batch-1", "insert-1", "insert-2", "deferred-1"],
    "worker2": ["scan-1", "extract-1"],
}
# queue -> concurrency of its units: inventory/example's pools, read (the test net deploys them).
CONCURRENCY = {
    pool["queue"]: pool["concurrency"]
    for pool in yaml.safe_load((EXAMPLE / "group_vars/workers.yml").read_text())["backend_worker_pools"]
}

# Settings of the test runs: the shipped time limits and visibility timeout (a dead host's work comes
# back through the ledger, not after the visibility timeout), and small units, so a library of a few
# hundred files still fans out into many extract chunks and insert batches.
RUN_SETTINGS = {
    # The timer of scheduled scans at a time of day the run does not reach (12 hours from now): a
    # scan it started would run beside the ones the tests start and watch.
    "backend_worker_scan_schedule": f"*-*-* {(datetime.datetime.now().hour + 12) % 24:02d}:00:00",
    "backend_worker_extra_env": {
        "SONIQUEBAY_EXTRACT_CHUNK_FILES": 25,
        "SONIQUEBAY_INSERT_BATCH_ROWS": 100,
        "SONIQUEBAY_WALK_UNIT_ENTRIES": 40,
    },
}


def write_multihost_inventory(
    net: TestNet, directory: Path, workers: tuple[str, ...] = WORKER_HOSTS, settings: dict | None = None
) -> Path:
    """db1 (broker, database, monitoring) and the given worker hosts, with inventory/example's group_vars."""
    directory.mkdir(parents=True, exist_ok=True)
    hosts = [DB_HOST, *workers]
    children: dict = {
        "broker": {"hosts": {DB_HOST: None}},
        "database": {"hosts": {DB_HOST: None}},
        "monitoring": {"hosts": {DB_HOST: None}},
        "workers": {"hosts": dict.fromkeys(workers)},
    }
    for group, members in GROUPS.items():
        children[group] = {"hosts": {h: None for h in members if h in workers}}
    inventory = {"all": {"hosts": {h: net.host_vars(h) for h in hosts}, "children": children}}
    (directory / "hosts.yml").write_text(json.dumps(inventory, indent=2))
    group_vars = directory / "group_vars"
    (group_vars / "all").mkdir(parents=True, exist_ok=True)
    _link(group_vars / "all" / "00-example.yml", EXAMPLE / "group_vars/all.yml")
    for name in ("broker.yml", "database.yml", "workers.yml"):
        _link(group_vars / name, EXAMPLE / "group_vars" / name)
    run_settings = {"backend_worker_check_library": True, **(settings or {})}
    (group_vars / "all" / "10-run.yml").write_text(json.dumps(run_settings, indent=2))
    host_vars = directory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for old in host_vars.iterdir():
        old.unlink()
    for host, values in HOST_VARS.items():
        if host in workers:
            (host_vars / f"{host}.yml").write_text(json.dumps(values, indent=2))
    return directory


def write_single_inventory(net: TestNet, directory: Path, host: str) -> Path:
    """Every tier on one machine, with inventory/local's group_vars (reached over SSH)."""
    directory.mkdir(parents=True, exist_ok=True)
    inventory = {
        "all": {
            "hosts": {host: net.host_vars(host)},
            "children": {g: {"hosts": {host: None}} for g in ("broker", "database", "workers", "monitoring")},
        }
    }
    (directory / "hosts.yml").write_text(json.dumps(inventory, indent=2))
    _link(directory / "group_vars", LOCAL / "group_vars")
    return directory


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
