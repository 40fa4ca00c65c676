"""The version is written once (backend_worker.__version__) and every place that shows it agrees:
the installed distribution, the changelog's newest release, `soniquebay --version`, the exporter."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
from pathlib import Path

import psycopg
from click.testing import CliRunner

import backend_worker
from backend_worker import cli, exporter

REPO = Path(__file__).resolve().parents[2]
CHANGELOG = REPO / "CHANGELOG.md"
RELEASE_HEADING = re.compile(r"^## \[(\d+\.\d+\.\d+)\]", re.M)
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def newest_release() -> tuple[str, str]:
    """The newest `## [x.y.z]` release of CHANGELOG.md ([Unreleased] is not one) and its text."""
    text = CHANGELOG.read_text()
    match = RELEASE_HEADING.search(text)
    assert match, f"{CHANGELOG} has no '## [x.y.z]' release heading"
    following = re.compile(r"^## ", re.M).search(text, match.end())
    return match.group(1), text[match.start() : following.start() if following else len(text)]


def test_the_version_is_semver():
    assert SEMVER.match(backend_worker.__version__), backend_worker.__version__


def test_the_installed_distribution_has_the_version_of_the_source():
    installed = importlib.metadata.version("soniquebay")
    assert installed == backend_worker.__version__, (
        f"the venv's soniquebay is {installed}, the source says {backend_worker.__version__}: "
        f"reinstall it ({sys.executable} -m pip install --no-deps -e .)"
    )


def test_the_changelog_s_newest_release_is_this_version_and_says_how_to_upgrade():
    version, section = newest_release()
    assert version == backend_worker.__version__, (
        f"CHANGELOG.md's newest release is {version}, backend_worker.__version__ is "
        f"{backend_worker.__version__}: add its section (or bump the version)"
    )
    assert re.search(r"^## \[[\d.]+\] - \d{4}-\d{2}-\d{2}$", section, re.M), section.splitlines()[0]
    assert re.search(r"^### Upgrading$", section, re.M), f"CHANGELOG.md: {version} has no '### Upgrading'"


def test_soniquebay_version_prints_the_version():
    result = CliRunner().invoke(cli.main, ["--version"])
    assert (result.exit_code, result.output) == (0, f"soniquebay, version {backend_worker.__version__}\n")


def test_build_info_is_published_when_the_scrape_fails(monkeypatch):
    def unreachable(*args, **kwargs):
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(exporter.psycopg, "connect", unreachable)
    lines = exporter.Exporter().scrape().splitlines()
    assert "soniquebay_up 0" in lines
    build_info = (
        f'soniquebay_build_info{{version="{backend_worker.__version__}",'
        f'python="{platform.python_version()}"}} 1'
    )
    assert build_info in lines
    assert "# TYPE soniquebay_build_info gauge" in lines


def test_build_info_is_one_sample_of_the_version_and_python():
    sample = exporter.build_info_sample()
    assert sample == (
        "soniquebay_build_info",
        {"version": backend_worker.__version__, "python": platform.python_version()},
        1,
    )
    assert exporter.HELP["soniquebay_build_info"][0] == "gauge"


def test_the_wheelhouse_builder_reads_the_version_from_the_source():
    """The deployment installs `soniquebay==<this version>` from the wheelhouse: the builder must find
    the version pyproject.toml takes from backend_worker.__version__, without importing the app."""
    sys.path.insert(0, str(REPO / "roles" / "backend_worker" / "files"))
    try:
        import build_wheelhouse
    finally:
        sys.path.pop(0)
    assert build_wheelhouse.project_metadata(REPO) == (
        "soniquebay",
        backend_worker.__version__,
        ["backend_worker"],
    )
