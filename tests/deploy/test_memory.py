"""What the default layout costs in memory (issue 12): every process of the `soniquebay` user,
workers, Flower and the exporter, idle after a scan. PSS counts a page that n processes share 1/n
in each, so the sum is what they take together; unlike time, it hardly varies between runs."""

from __future__ import annotations

import time

import pytest

from testkit.deploy import chaos
from testkit.deploy.checks import LIBRARY
from testkit.deploy.layout import WORKER_UNITS
from testkit.deploy.ops import memory_by_unit, memory_total, put_library, reset_library_db
from testkit.stack import soniquebay_json

pytestmark = pytest.mark.deploy

IDLE_BUDGET = 800 * 2**20  # bytes of PSS


def test_the_default_layout_idle_after_a_scan_fits_its_memory_budget(deployed, tmp_path):
    put_library(deployed, tmp_path / "music", **chaos.LIBRARY_SHAPE)
    reset_library_db(deployed)
    session = soniquebay_json(deployed, "scan", LIBRARY, "--wait", "--json")
    assert session["status"] == "completed" and session["counts"]["inserted"] == 2000, session
    time.sleep(10)  # the workers idle, their last tasks done
    units = memory_by_unit(deployed)
    total = memory_total(units)
    shown = {
        u: f"{m['processes']} processes, PSS {m['pss'] / 2**20:.0f} MiB" for u, m in sorted(units.items())
    }
    assert set(WORKER_UNITS) | {"soniquebay-flower.service", "soniquebay-exporter.service"} <= set(units), (
        shown
    )
    assert total["pss"] <= IDLE_BUDGET, (
        f"{total['pss'] / 2**20:.0f} MiB PSS in {total['processes']} processes",
        shown,
    )
