"""`make sandbox` (one machine) and `make sandbox-down` as the README shows them: a throwaway Debian 12
machine in its own network namespace, deployed, a sample library scanned, the Flower URL printed;
then everything it created removed."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from testkit.stack import http, trust
from testkit.testnet import TABLE_PREFIX

pytestmark = [pytest.mark.readme, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = Path("/var/lib/soniquebay-sandbox")  # scripts/sandbox.py
NAME = "sbox"
SAMPLE_FILES = 30  # the README: "scans a small generated sample library (30 files at /srv/music)"


def make(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def leftovers() -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found = [line.split()[0] for line in netns.splitlines() if line.startswith(f"{NAME}-")]
    found += [f"link {NAME}-br" for line in links.splitlines() if f" {NAME}-br:" in line]
    table = TABLE_PREFIX + NAME
    found += [f"nft {table}" for line in tables.splitlines() if line.endswith(f" {table}")]
    found += [str(STATE_DIR)] if STATE_DIR.exists() else []
    return found


def test_make_sandbox_deploys_and_scans_and_sandbox_down_removes_everything():
    assert leftovers() == [], "a sandbox is already up: make sandbox-down first"
    up = make("sandbox", "HOSTS=1")
    try:
        output = up.stdout + up.stderr
        assert up.returncode == 0, output[-5000:]
        scan = re.search(r"^Scan (\w+): (\{.*\})$", up.stdout, re.MULTILINE)
        assert scan, up.stdout[-3000:]
        counts = ast.literal_eval(scan.group(2))
        assert scan.group(1) == "completed", scan.group(0)
        assert counts["discovered"] == counts["inserted"] == SAMPLE_FILES and counts["errors"] == 0, counts
        summary = json.loads((STATE_DIR / NAME / "summary.json").read_text())
        assert f"Flower:   {summary['flower']}  (user admin, password in {summary['password']};" in up.stdout
        assert summary["flower"] == "https://10.77.1.10/flower/"
        password = Path(summary["password"]).read_text().strip()
        trust(summary["certificate"])
        assert http(summary["flower"])[0] == 401
        assert http(summary["flower"], auth=("admin", password))[0] == 200
        # The printed ssh command reaches the machine, where `soniquebay status` works.
        ssh = summary["ssh"]["sandbox"] + " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        status = subprocess.run(
            f"{ssh} soniquebay status --json", shell=True, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout.strip().splitlines()[-1])["library"]["tracks"] == SAMPLE_FILES
    finally:
        down = make("sandbox-down", timeout=600)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers() == []
