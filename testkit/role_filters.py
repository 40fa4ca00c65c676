"""The roles' filters (roles/soniquebay/filter_plugins/soniquebay.py) imported as plain
Python, for the tests that check them without Ansible."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from testkit.machine import REPO

FILTERS = REPO / "roles/soniquebay/filter_plugins/soniquebay.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soniquebay_filters", FILTERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
