"""Prometheus alert rules: valid, and each alert fires (and stays quiet) as its unit tests say."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "roles/prometheus/files/soniquebay-alerts.yml"
RULE_TESTS = REPO / "tests/monitoring/alerts.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_rules_are_valid():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout


def test_every_alert_has_unit_tests_and_they_pass():
    alerts = {line.split(":", 1)[1].strip() for line in RULES.read_text().splitlines() if "- alert:" in line}
    tested = {
        line.split(":", 1)[1].strip() for line in RULE_TESTS.read_text().splitlines() if "alertname:" in line
    }
    assert alerts == tested
    proc = promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
