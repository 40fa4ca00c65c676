"""Flower as an operator sees it: headless Chromium (Debian's), through nginx, with the password.

Screenshots go to artifacts/screenshots/ (and, with SONIQUEBAY_UPDATE_SCREENSHOTS=1, to
docs/screenshots/ for the README)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from testkit import audio_fixtures
from testkit.deploy.checks import FLOWER, LIBRARY, flower_auth, flower_workers
from testkit.deploy.layout import LAYOUT
from testkit.stack import http, soniquebay_json

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
QUEUES = list(LAYOUT)


@pytest.fixture(scope="module")
def scanned(deployed, tmp_path_factory):
    """The deployed host after a scan, so Flower has tasks of every stage to show."""
    staging = tmp_path_factory.mktemp("browser") / "music"
    expected = audio_fixtures.build_library(
        staging, artists=3, albums_per_artist=2, tracks_per_album=5, seed=7
    )
    target = deployed.root / LIBRARY.lstrip("/")
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-a", str(staging), str(target)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    session = soniquebay_json(deployed, "scan", LIBRARY, "--wait", "--json")
    assert session["status"] == "completed", session
    assert session["counts"]["inserted"] == len(expected)
    flower_workers(deployed)  # all eight answer
    return deployed, session


@pytest.fixture(scope="module")
def browser(deployed, tmp_path_factory, monkeypatch_module):
    """Chromium trusting the deployment's certificate as an operator's browser does once it is
    imported (an NSS database in its home); certificate errors are not ignored. Playwright's own
    request client (Node) trusts it through NODE_EXTRA_CA_CERTS."""
    from playwright.sync_api import sync_playwright

    certificate = deployed.flower_certificate()
    home = tmp_path_factory.mktemp("chromium-home")
    nssdb = f"sql:{home}/.pki/nssdb"
    (home / ".pki/nssdb").mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", nssdb, "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", nssdb, "-n", "soniquebay-flower", "-t", "C,,", "-i", str(certificate)],
        check=True,
    )
    monkeypatch_module.setenv("NODE_EXTRA_CA_CERTS", str(certificate))
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=CHROMIUM_ARGS,
            env={**os.environ, "HOME": str(home)},
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture()
def page(browser, scanned):
    host, _ = scanned
    user, password = flower_auth(host)
    context = browser.new_context(
        http_credentials={"username": user, "password": password}, viewport={"width": 1440, "height": 900}
    )
    yield context.new_page()
    context.close()


def seconds(shown: str) -> float:
    """Flower's runtime cell ("328.85 ms", "1.20 s", "2 min 3 s", "1m 20s"...) in seconds; a bare
    number is seconds. Tasks over a minute are there after the upgrade's scan (conftest.py), whose
    extract tasks waited for their CPU slots."""
    units = {"µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"([0-9.]+)\s*(µs|us|ms|min|sec|s|m|h)?", shown.replace(",", ""))
    assert parts, shown
    return sum(float(value) * units[unit or "s"] for value, unit in parts)


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    if os.environ.get("SONIQUEBAY_UPDATE_SCREENSHOTS"):
        docs = REPO / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHOTS / f"{name}.png", docs / f"{name}.png")


def test_without_the_password_the_browser_gets_no_flower(browser, scanned):
    for credentials in (None, {"username": "admin", "password": "wrong"}):
        context = browser.new_context(http_credentials=credentials)
        for url in (FLOWER, FLOWER + "tasks", FLOWER + "api/workers"):
            assert context.request.get(url).status == 401, (url, credentials)
        context.close()


def test_dashboard_lists_the_eight_workers_named_after_their_units(page, scanned):
    host, _ = scanned
    page.goto(FLOWER)
    names = [f"{q}-{n}@{host.name}" for q, (units, _, _) in LAYOUT.items() for n in range(1, units + 1)]
    for name in names:
        page.locator(f'#workers-table a.worker-name-link[title="{name}"]').wait_for(timeout=60_000)
    page.wait_for_function("() => document.querySelector('#workers-online').innerText.trim() === '8'")
    assert page.locator("#workers-table tbody tr").count() == len(names)
    shot(page, "flower-dashboard")


def test_broker_view_shows_the_five_queues_with_their_lengths(page, scanned):
    page.goto(FLOWER + "broker")
    for queue in QUEUES:
        page.get_by_role("cell", name=queue, exact=True).wait_for()
    table = page.locator("table").first.inner_text()
    assert all(queue in table for queue in QUEUES)
    shot(page, "flower-broker")
    status, _, body = http(FLOWER + "api/queues/length", auth=flower_auth(scanned[0]))
    assert status == 200
    assert {q["name"] for q in json.loads(body)["active_queues"]} == set(QUEUES)


def test_tasks_view_filters_by_state_and_name_and_sorts(page, scanned):
    page.goto(FLOWER + "tasks")
    table = page.locator("#tasks-table")
    table.locator("tbody tr").first.wait_for()
    for name in ("scan.walk", "extract.files", "insert.records", "deferred.finalize"):
        assert page.get_by_text(name).count() > 0, name
    search = page.locator("input[type=search]")
    search.fill("state:SUCCESS name:extract.files")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#tasks-table tbody tr')].every("
        "r => r.innerText.includes('extract.files') && r.innerText.includes('SUCCESS'))"
    )
    rows = table.locator("tbody tr")
    assert rows.count() >= 1
    shot(page, "flower-tasks")
    # Sorting by runtime, longest first: the column header toggles the order. The cleared search
    # redraws the table from the server; sort only once every stage is back on it.
    search.fill("")
    page.wait_for_function(
        "() => ['scan.walk', 'extract.files'].every("
        "n => document.querySelector('#tasks-table tbody').innerText.includes(n))"
    )
    header = page.locator("th[data-column=runtime] >> visible=true")
    header.click()
    page.wait_for_function("() => document.querySelector('th[data-column=runtime][aria-sort]') !== null")
    if header.get_attribute("aria-sort") != "descending":
        header.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('th[data-column=runtime]')]"
        ".some(h => h.getAttribute('aria-sort') === 'descending')"
    )
    column = page.evaluate(
        "() => [...document.querySelectorAll('#tasks-table thead th')].findIndex("
        "h => h.dataset.column === 'runtime')"
    )
    # The sorted page arrives by XHR after the header changes; read it until it has settled.
    runtimes: list[float] = []
    for _ in range(20):
        page.wait_for_timeout(500)
        cells = table.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()
        runtimes = [seconds(t) for t in cells if t.strip()]
        if len(runtimes) >= 2 and runtimes == sorted(runtimes, reverse=True):
            break
    assert len(runtimes) >= 2 and runtimes == sorted(runtimes, reverse=True), runtimes


def test_task_page_shows_readable_arguments_and_a_short_result(page, scanned):
    host, session = scanned
    status, _, body = http(FLOWER + "api/tasks?taskname=extract.files&limit=1", auth=flower_auth(host))
    assert status == 200
    (task_id,) = json.loads(body)
    page.goto(FLOWER + f"task/{task_id}")
    text = page.locator("body").inner_text()
    assert "extract.files" in text and "SUCCESS" in text
    assert session["id"] in text
    assert "files from" in text  # the arguments are summarised, not a list of paths
    assert "'extracted':" in text
    assert len(text) < 20_000
    shot(page, "flower-task")
