"""Filters of the SoniqueBay roles: the worker layout of a host, the addresses of the other worker
hosts, the revision of the app a unit runs, the inotify limits of the library watch, the check of a unit file
before it goes live. Plain functions,
tested in tests/unit/test_filter_plugins.py."""

from __future__ import annotations

import ipaddress
import posixpath
import re

# What a unit of a pool runs unless the pool says otherwise.
UNIT_DEFAULTS = {"pool": "prefork", "memory_max": "infinity"}


def host_pools(pools: list[dict], overrides: dict, hostname: str, groups: dict) -> list[dict]:
    """The pools this host runs: those placed on no group or on a group holding this host, each
    changed by its queue's entry in `overrides` (host_vars); units 0 drops a pool here."""
    found = []
    for pool in pools:
        group = pool.get("group")
        if group is not None and hostname not in groups.get(group, []):
            continue
        merged = {**pool, **(overrides.get(pool["queue"]) or {})}
        if int(merged["units"]) > 0:
            found.append(merged)
    return found


def worker_units(pools: list[dict], time_limits: dict) -> list[dict]:
    """One entry per systemd unit of `pools`: name scan-1, unit soniquebay-worker-scan-1.service,
    and the queue's hard time limit (seconds)."""
    return [
        {
            **UNIT_DEFAULTS,
            **pool,
            "name": f"{pool['queue']}-{index}",
            "unit": f"soniquebay-worker-{pool['queue']}-{index}.service",
            "time_limit": int(time_limits.get(pool["queue"], 0)),
        }
        for pool in pools
        for index in range(1, int(pool["units"]) + 1)
    ]


def private_address(host: str, hostvars: dict) -> str:
    """Where the other hosts reach `host`: soniquebay_private_address, else ansible_host, else its name."""
    variables = hostvars.get(host, {})
    return str(variables.get("soniquebay_private_address") or variables.get("ansible_host") or host)


def peer_addresses(hosts: list[str], hostvars: dict, this_host: str) -> list[str]:
    """The private addresses of `hosts` other than this one, once each and in order; host names
    and loopback addresses are left out (nothing to let in from the network)."""
    found: list[str] = []
    for host in hosts:
        if host == this_host:
            continue
        try:
            address = ipaddress.ip_address(private_address(host, hostvars))
        except ValueError:
            continue
        if not address.is_loopback and str(address) not in found:
            found.append(str(address))
    return found


def ip_addresses(items: list) -> list[str]:
    """The items that are IP addresses (host names and empty strings left out), once each, in order."""
    found: list[str] = []
    for item in items:
        try:
            address = str(ipaddress.ip_address(str(item)))
        except ValueError:
            continue
        if address not in found:
            found.append(address)
    return found


def host_network(address: str) -> str:
    """An address as the network of that one host: 10.0.0.21/32, fd00::21/128."""
    return str(ipaddress.ip_network(address))


def app_revision(build: str, settings_checksum: str) -> str:
    """What a unit runs: the app's build (its key, or the path of its venv) and its settings file's
    checksum. A unit carrying it restarts when either changes."""
    return f"{posixpath.basename(str(build).rstrip('/'))}-{str(settings_checksum)[:12]}"


# inotify's limits, per user: one watch per folder watched, one instance per library root watched.
INOTIFY_WATCHES, INOTIFY_INSTANCES = "fs.inotify.max_user_watches", "fs.inotify.max_user_instances"
# Left to the other programs of the user and to new folders: a watch per folder, doubled.
INOTIFY_WATCHES_PER_FOLDER = 2
# The service user runs nothing else that uses inotify: a few instances to spare (the kernel's
# default, 128, is far above; auto never lowers it).
INOTIFY_SPARE_INSTANCES = 8


def inotify_limits(watches, instances, folders: int, roots: int, live: dict) -> dict[str, int]:
    """The inotify limits the library watch needs: an inventory number as given, or "auto": room
    for every folder of the library twice over and an instance per root and a few more, never below
    the running kernel's value (`live`, sysctl name -> value). Keys are sysctl names."""

    def wanted(setting, needed: int, name: str) -> int:
        if str(setting) == "auto":
            return max(int(live[name]), needed)
        return int(setting)

    return {
        INOTIFY_WATCHES: wanted(watches, INOTIFY_WATCHES_PER_FOLDER * int(folders), INOTIFY_WATCHES),
        INOTIFY_INSTANCES: wanted(instances, INOTIFY_SPARE_INSTANCES + int(roots), INOTIFY_INSTANCES),
    }


# A unit file is checked under its own name in a folder of its own (systemd-analyze refuses a file
# whose name is no unit name, as the temporary file Ansible validates is), and a bad directive
# fails it: verify only reports those on stderr, with a zero exit.
UNIT_VERIFY_SCRIPT = (
    'd=$(mktemp -d) && cp "$1" "$d/$2" && out=$(systemd-analyze verify --man=no "$d/$2" 2>&1); '
    'status=$?; rm -rf "$d"; [ -z "$out" ] || echo "$out" >&2; [ "$status" -eq 0 ] && [ -z "$out" ]'
)
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@-]+\.(service|timer|target|socket|path)")


def systemd_verify_command(unit: str) -> str:
    """The `validate:` of a task writing the unit file `unit`: the rendered file goes live only if
    `systemd-analyze verify` finds nothing to say about it (%s: the file Ansible rendered)."""
    if not UNIT_NAME.fullmatch(str(unit)):
        raise ValueError(f"not a unit file name: {unit!r}")
    return f"/bin/sh -c '{UNIT_VERIFY_SCRIPT}' systemd-verify %s {unit}"


class FilterModule:
    def filters(self):
        return {
            "host_pools": host_pools,
            "worker_units": worker_units,
            "peer_addresses": peer_addresses,
            "host_network": host_network,
            "ip_addresses": ip_addresses,
            "app_revision": app_revision,
            "inotify_limits": inotify_limits,
            "systemd_verify_command": systemd_verify_command,
        }
