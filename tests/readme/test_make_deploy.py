"""`make deploy` run as the README says, inside a fresh Debian 13 (trixie) machine: the project
copied in from a `git archive` of HEAD, `make` installed, then `make deploy` provisions the machine
it runs on (its own venv, wheelhouse and inventory/local). The Debian 12 deployment is covered in
depth by tests/deploy; this proves the second supported release and the README's own command.

The machine lives in a network namespace of its own (tests/testnet.py), so it can run while the
Debian 12 test host holds this machine's ports. It reaches the package registries through this
machine's NAT with this machine's own trust settings (CA bundle, pip's configuration) copied in.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import audio_fixtures
from tests.deploy.layout import ALL_UNITS, expected_layout
from tests.stack import expected_rows, http, psql, soniquebay_json, trust, wait_flower_workers
from tests.testnet import NetHost, TestNet

pytestmark = [pytest.mark.readme, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
NET_NAME = "sbr"
SUBNET = 2  # 10.77.2.0/24: the multi-host tests use .0, make sandbox .1
HOST = "trixie"
PROJECT = "/root/soniquebay"
LIBRARY = "/srv/music"
# The controller's trust settings, needed where the registries are reached through a proxy.
TRUST_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")


def recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s+:\s+(.*)$", output, re.MULTILINE)
    assert match, f"no PLAY RECAP for localhost in:\n{output[-3000:]}"
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def make_deploy(machine: NetHost) -> subprocess.CompletedProcess:
    return machine.ssh(f"cd {PROJECT} && make deploy", check=False, timeout=2400)


@pytest.fixture(scope="module")
def machine():
    net = TestNet.create(NET_NAME, subnet=SUBNET, machines=[HOST], suite="trixie")
    try:
        yield net.hosts[HOST]
    finally:
        net.destroy()


@pytest.fixture(scope="module")
def library(machine) -> list[dict]:
    """A user's music, in place before the deployment."""
    staging = machine.root / LIBRARY.lstrip("/")
    expected = audio_fixtures.build_library(
        staging / "albums", artists=3, albums_per_artist=3, tracks_per_album=6, seconds=0.5, seed=13
    )
    subprocess.run(["chmod", "-R", "a+rX", str(staging)], check=True)
    return expected


@pytest.fixture(scope="module")
def first_deploy(machine, library) -> subprocess.CompletedProcess:
    """The README's steps: the project in a folder, `make` installed, `make deploy` as root."""
    target = machine.root / PROJECT.lstrip("/")
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    for name in TRUST_FILES:
        if Path(name).exists():
            shutil.copyfile(name, machine.root / name.lstrip("/"))
    machine.ssh(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make", timeout=600
    )
    return make_deploy(machine)


def test_the_machine_is_a_fresh_debian_13(machine):
    release = machine.ssh(". /etc/os-release && echo $VERSION_ID $VERSION_CODENAME").stdout.split()
    assert release == ["13", "trixie"], release


def test_make_deploy_provisions_it_and_says_where_the_password_is(machine, first_deploy):
    output = first_deploy.stdout + first_deploy.stderr
    assert first_deploy.returncode == 0, output[-5000:]
    assert recap(output)["failed"] == 0
    assert "SoniqueBay is deployed." in output
    assert f"Log in as admin with the password in {PROJECT}/credentials/flower-admin" in output
    assert f"or read only as viewer with the password in {PROJECT}/credentials/flower-viewer." in output
    copy = f"{PROJECT}/credentials/flower-certificate-localhost.pem"
    fingerprint = machine.ssh(f"openssl x509 -in {copy} -noout -fingerprint -sha256").stdout
    fingerprint = fingerprint.split("=", 1)[1].strip()
    assert f"Certificate of localhost: {fingerprint} (SHA-256" in output
    mode = machine.ssh(f"stat -c %a {PROJECT}/credentials/flower-admin").stdout.strip()
    assert mode == "600"
    states = machine.ssh("systemctl is-active " + " ".join(ALL_UNITS), check=False).stdout.split()
    assert dict(zip(ALL_UNITS, states, strict=True)) == dict.fromkeys(ALL_UNITS, "active")
    # The release's own servers: PostgreSQL 17, Redis 8 (Valkey is not what Debian 13 ships as redis).
    versions = machine.ssh("psql --version; redis-server --version").stdout
    assert "(PostgreSQL) 17." in versions and "Redis server v=8." in versions, versions


def test_flower_shows_the_eight_workers_with_their_layout_behind_the_password(
    machine, first_deploy, tmp_path
):
    flower = f"https://{machine.address}/flower/"
    certificate = tmp_path / "flower.pem"
    certificate.write_text(machine.ssh(f"cat {PROJECT}/credentials/flower-certificate-localhost.pem").stdout)
    trust(certificate)
    admin = ("admin", machine.ssh(f"cat {PROJECT}/credentials/flower-admin").stdout.strip())
    assert http(flower)[0] == 401
    assert http(flower, auth=("admin", "wrong-password-123"))[0] == 401
    assert http(flower, auth=admin)[0] == 200
    layout = expected_layout()
    workers = wait_flower_workers(flower, admin, {f"{name}@{HOST}" for name in layout})
    assert sorted(workers) == sorted(f"{name}@{HOST}" for name in layout)
    for name, (queue, concurrency, prefetch) in layout.items():
        info = workers[f"{name}@{HOST}"]
        assert [q["name"] for q in info["active_queues"]] == [queue], name
        assert info["stats"]["pool"]["max-concurrency"] == concurrency, name
        assert info["stats"]["prefetch_count"] == prefetch, name


def test_a_scan_lands_the_exact_rows(machine, first_deploy, library):
    session = soniquebay_json(machine, "scan", LIBRARY, "--wait", "--json")
    assert session["status"] == "completed", session
    counts = session["counts"]
    assert counts["discovered"] == counts["inserted"] == len(library) and counts["errors"] == 0, session
    rows = psql(machine, "SELECT path, coalesce(title, ''), coalesce(artist, '') FROM tracks ORDER BY path")
    staging = machine.root / LIBRARY.lstrip("/") / "albums"
    assert rows == expected_rows(library, staging, f"{LIBRARY}/albums")


def test_a_second_make_deploy_changes_nothing(machine, first_deploy):
    second = make_deploy(machine)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-5000:]
    assert recap(output)["changed"] == 0, re.findall(r"^changed: .*$", output, re.MULTILINE)
