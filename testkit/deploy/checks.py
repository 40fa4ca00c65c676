"""How the tests look at the deployed test host (testkit.testhost) from outside, as an operator would:
Flower through nginx with its two accounts, `celery inspect` as the service user, units active,
ports reachable from the network."""

from __future__ import annotations

import json
import socket
import subprocess
import time

from testkit.deploy.layout import ALL_UNITS, expected_layout
from testkit.stack import wait_flower_workers
from testkit.testhost import TestHost

FLOWER = "https://127.0.0.1/flower/"
LIBRARY = "/srv/music"
# Every password a converge generates into the controller's credentials dir.
SECRETS = (
    "flower-admin",
    "flower-viewer",
    "redis",
    "redis-admin",
    "redis-flower",
    "redis-exporter",
    "postgresql",
    "postgresql-owner",
)


def flower_auth(host: TestHost) -> tuple[str, str]:
    return ("admin", host.credential("flower-admin"))


def viewer_auth(host: TestHost) -> tuple[str, str]:
    """The read-only account."""
    return ("viewer", host.credential("flower-viewer"))


def flower_workers(host: TestHost, timeout: float = 120) -> dict:
    """Flower's /api/workers through nginx, once all eight workers answer (fails otherwise)."""
    return wait_flower_workers(
        FLOWER, flower_auth(host), {f"{n}@{host.name}" for n in expected_layout()}, timeout
    )


def celery_inspect(
    host: TestHost, command: str, expect: set[str] | None = None, timeout: float = 120
) -> dict:
    """`celery inspect <command> --json` on the host, as the service user with the env file; with
    `expect`, retried until every one of those workers (name without @host) has answered."""
    names = {f"{name}@{host.name}" for name in expect or ()}
    deadline = time.monotonic() + timeout
    while True:
        proc = host.ssh(
            "set -a; . /etc/soniquebay/soniquebay.env; set +a; "
            f"runuser -u soniquebay -- /opt/soniquebay/venv/bin/celery -A backend_worker inspect {command} "
            "--json --timeout 10",
            check=False,
            timeout=90,
        )
        lines = proc.stdout.strip().splitlines()
        replies = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
        if (replies and names <= set(replies)) or time.monotonic() > deadline:
            assert replies, f"no worker answered `inspect {command}`: {proc.stdout}{proc.stderr}"
            return replies
        time.sleep(3)


def wait_all_active(host: TestHost, units: list[str] = ALL_UNITS, timeout: float = 240) -> None:
    states = host.wait_active(units, timeout=timeout)
    assert all(state == "active" for state in states.values()), states


def own_addresses() -> list[str]:
    """This machine's non-loopback addresses (the test host shares them)."""
    out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    addresses = []
    for line in out.splitlines():
        fields = line.split()
        family, address = fields[2], fields[3].split("/")[0]
        if fields[1] != "lo" and not address.startswith("fe80") and family in ("inet", "inet6"):
            addresses.append(address)
    return addresses


def reachable_from_another_address(ports: list[int]) -> list[str]:
    """address:port of the ports that accept a connection on one of this machine's non-loopback
    addresses (the test host shares them): what a machine on the network could reach."""
    addresses = own_addresses()
    assert addresses, "this machine has no non-loopback address to try"
    reachable = []
    for address in addresses:
        for port in ports:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(3)
                if sock.connect_ex((address, port)) == 0:
                    reachable.append(f"{address}:{port}")
    return reachable
