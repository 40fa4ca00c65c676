"""What a converge restarts, and what it refuses, on the deployed test host: a bad Redis or
PostgreSQL setting fails the play naming the file, before the file is written or the server touched;
changed app settings restart every service that reads them (workers, Flower, the exporter, in three
plays of site.yml), each role finding that out on its own."""

from __future__ import annotations

import json

import pytest

from testkit.deploy.layout import WORKER_UNITS

pytestmark = pytest.mark.deploy

APP_SERVICES = [*WORKER_UNITS, "soniquebay-flower.service", "soniquebay-exporter.service"]
REDIS_SETTINGS = "/etc/redis/soniquebay.conf"
# Debian 12's cluster: its unit runs the server (postgresql.service only groups the clusters).
POSTGRESQL_SERVER = "postgresql@15-main.service"
POSTGRESQL_SETTINGS = "/etc/postgresql/15/main/conf.d/soniquebay.conf"


def main_pids(host, units: list[str]) -> dict[str, int]:
    out = host.ssh("for u in " + " ".join(units) + "; do systemctl show -P MainPID $u; done").stdout.split()
    return dict(zip(units, map(int, out), strict=True))


def states(host, units: list[str]) -> list[str]:
    return host.ssh("systemctl is-active " + " ".join(units), check=False).stdout.split()


def checksum(host, path: str) -> str:
    return host.ssh(f"sha256sum {path}").stdout.split()[0]


def one_line(output: str) -> str:
    return " ".join(output.split())


def test_a_bad_redis_setting_fails_naming_the_file_and_redis_keeps_running(deployed):
    before = main_pids(deployed, ["redis-server.service"])
    written = checksum(deployed, REDIS_SETTINGS)
    result = deployed.converge("playbooks/broker.yml", "-e", json.dumps({"redis_maxmemory": "2 GB"}))
    assert not result.ok
    output = one_line(result.output)
    assert f"{REDIS_SETTINGS} was not written and Redis was not restarted: redis-server refuses it" in output
    assert "'maxmemory 2 GB'" in output, result.tail(40)
    assert "RUNNING HANDLER [redis : Restart Redis]" not in result.output
    assert main_pids(deployed, ["redis-server.service"]) == before
    assert states(deployed, ["redis-server.service"]) == ["active"]
    assert checksum(deployed, REDIS_SETTINGS) == written


def test_a_bad_postgresql_setting_fails_naming_the_file_and_postgresql_keeps_running(deployed):
    before = main_pids(deployed, [POSTGRESQL_SERVER])
    written = checksum(deployed, POSTGRESQL_SETTINGS)
    bad = {"postgresql_settings": {"tcp_keepalives_idle": "soon", "tcp_user_timeout": "60s"}}
    result = deployed.converge("playbooks/database.yml", "-e", json.dumps(bad))
    assert not result.ok
    output = one_line(result.output)
    refused = f"{POSTGRESQL_SETTINGS} was not written and PostgreSQL was not reloaded: postgres refuses it"
    assert refused in output
    assert 'invalid value for parameter "tcp_keepalives_idle": "soon"' in output, result.tail(40)
    assert "RUNNING HANDLER [postgresql : Reload PostgreSQL]" not in result.output
    assert main_pids(deployed, [POSTGRESQL_SERVER]) == before
    assert states(deployed, [POSTGRESQL_SERVER]) == ["active"]
    assert checksum(deployed, POSTGRESQL_SETTINGS) == written


def test_changed_app_settings_restart_every_service_that_reads_them_and_only_those(deployed):
    servers = ["redis-server.service", POSTGRESQL_SERVER, "nginx.service", "prometheus.service"]
    watched = [*APP_SERVICES, *servers]
    before = main_pids(deployed, watched)
    changed = {"backend_worker_extra_env": {"SONIQUEBAY_CONFIG_CHECK_TEST": "1"}}
    result = deployed.converge("playbooks/site.yml", "-e", json.dumps(changed))
    try:
        assert result.ok, result.tail(120)
        after = main_pids(deployed, watched)
        restarted = sorted(unit for unit in watched if after[unit] != before[unit])
        assert restarted == sorted(APP_SERVICES), (before, after)
        assert all(after[unit] > 0 for unit in APP_SERVICES), after
        assert states(deployed, APP_SERVICES) == ["active"] * len(APP_SERVICES)
        env_file = deployed.ssh("grep -c SONIQUEBAY_CONFIG_CHECK_TEST /etc/soniquebay/soniquebay.env").stdout
        assert env_file.strip() == "1"
    finally:
        back = deployed.converge("playbooks/site.yml")
    assert back.ok, back.tail(120)
    assert states(deployed, APP_SERVICES) == ["active"] * len(APP_SERVICES)
