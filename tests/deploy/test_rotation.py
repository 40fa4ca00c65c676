"""Rotating the broker's passwords as docs/deployment.md says ("Rotating a password"): the
credential's file deleted on the controller, site.yml run again. The old passwords are refused,
the new ones work, and the stack runs on them (Flower lists every worker through the broker, a
scan completes). The admin's rotation is the one ACL LOAD cannot log in for: Redis restarts."""

from __future__ import annotations

import pytest

from testkit.deploy.checks import flower_workers, wait_all_active
from testkit.deploy.ops import redis
from testkit.stack import soniquebay_json

pytestmark = pytest.mark.deploy

ROTATED = {"redis": "workers", "redis-admin": "admin", "redis-flower": "flower"}


def ping(host, user: str, password: str) -> str:
    """redis-cli's answer to PING, with its AUTH failure if any (redis-cli reports a refused AUTH
    and still sends the command, which then gets NOAUTH)."""
    return redis(host, "ping 2>&1", user=user, password=password)


def test_rotated_broker_passwords_replace_the_old_ones(deployed):
    old = {name: deployed.credential(name) for name in ROTATED}
    for name in ROTATED:
        (deployed.credentials_dir / name).unlink()
    result = deployed.converge()
    assert result.ok, result.tail(120)
    for name, user in ROTATED.items():
        new = deployed.credential(name)
        assert new != old[name]
        refused = ping(deployed, user, old[name])
        assert "WRONGPASS" in refused and "PONG" not in refused, f"{user} kept its old password: {refused}"
        assert ping(deployed, user, new) == "PONG"
    env = deployed.ssh("cat /etc/soniquebay/soniquebay.env /etc/soniquebay/flower.env").stdout
    assert not any(password in env for password in old.values())
    wait_all_active(deployed)
    flower_workers(deployed)
    assert soniquebay_json(deployed, "scan", "/srv/music", "--wait", "--json")["status"] == "completed"
    assert "user default off" in redis(deployed, "acl list")
