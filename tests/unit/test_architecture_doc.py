"""docs/architecture.md names every module of backend_worker, as `module.py` or `folder/module.py`:
a module added without its place in the architecture fails here."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "backend_worker"


def test_every_module_of_backend_worker_is_named_in_the_architecture_doc():
    doc = (REPO / "docs/architecture.md").read_text()
    modules = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.parts
    )
    assert len(modules) > 30
    assert [module for module in modules if f"`{module}`" not in doc] == []


def test_the_architecture_doc_names_no_module_that_is_gone():
    doc = (REPO / "docs/architecture.md").read_text()
    named = set(re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)`", doc))
    gone = [name for name in named if not (PACKAGE / name).exists() and not (REPO / name).exists()]
    assert sorted(gone) == []
