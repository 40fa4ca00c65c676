"""Random faults during repeated full scans on the deployed test host, on its shipped settings.

Each round empties the library, starts `soniquebay scan --wait`, and strikes the running scan
with one or two faults picked at random: Redis restarted, the main process of any worker unit
killed with SIGKILL, a pool process of a prefork unit (batch) killed with SIGKILL, every worker
restarted (warm), PostgreSQL stopped for 20 s. Then it checks what landed: every file one track,
nothing else, no error record, and how long the session took to close after the fault.

Used by tests/deploy/test_reliability.py (a few faults, in `make test`) and by `make chaos`
(bench/chaos.py: 30 faults or more, the figures in docs/reliability.md).
"""

from __future__ import annotations

import datetime
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from testkit.deploy.checks import LIBRARY, wait_all_active
from testkit.deploy.layout import POOLS, WORKER_UNITS
from testkit.deploy.ops import BackgroundScan, reset_library_db, units_of
from testkit.stack import psql

# The fault tests' library (2,000 files); `make chaos` hard-links copies of it.
LIBRARY_SHAPE = {"artists": 8, "albums_per_artist": 5, "tracks_per_album": 50, "seed": 11}

FAULTS = (
    "redis-restart",
    "kill-9-worker",
    "kill-9-pool-process",
    "restart-workers",
    "postgresql-stopped-20s",
)


def inject(host, kind: str, rng: random.Random) -> str:
    """Strike the host with one fault; returns what was hit."""
    if kind == "redis-restart":
        host.ssh("systemctl restart redis-server", timeout=120)
        return "redis-server"
    if kind == "kill-9-worker":
        unit = rng.choice(WORKER_UNITS)
        host.ssh(f"kill -9 {host.unit_main_pid(unit)}")
        return unit
    if kind == "kill-9-pool-process":
        # Only prefork units have pool processes; a thread pool's threads die with their worker.
        unit = rng.choice([u for queue, pool in POOLS.items() if pool == "prefork" for u in units_of(queue)])
        children = host.ssh(f"pgrep -P {host.unit_main_pid(unit)} || true").stdout.split()
        if not children:
            return f"{unit} (no pool process)"
        child = rng.choice(children)
        host.ssh(f"kill -9 {child}", check=False)
        return f"{unit} pool process {child}"
    if kind == "restart-workers":
        host.ssh("systemctl restart soniquebay-workers.target", timeout=1200)
        return "soniquebay-workers.target"
    if kind == "postgresql-stopped-20s":
        host.ssh("systemctl stop postgresql", timeout=120)
        try:
            time.sleep(20)
        finally:
            host.ssh("systemctl start postgresql", timeout=120)
        return "postgresql"
    raise ValueError(kind)


@dataclass
class Round:
    session_id: str
    faults: list[tuple[str, str, float]] = field(default_factory=list)  # (kind, target, time.time())
    status: str = ""
    recovery: float = 0.0  # from the last fault to the session's close
    lost: int = 0
    duplicated: int = 0
    errors: int = 0
    resent: int = 0


def _seconds(session: dict) -> float:
    started = datetime.datetime.fromisoformat(session["started_at"])
    return (datetime.datetime.fromisoformat(session["ended_at"]) - started).total_seconds()


def _running(host, session_id: str) -> bool:
    rows = psql(host, f"SELECT status FROM scan_sessions WHERE id = '{session_id}'")
    return bool(rows) and rows[0][0] == "running"


def add_copies(host, library: list[dict], copies: int) -> list[dict]:
    """`copies` hard-linked copies of the library's folders under /srv/music/copy-<i> (every path
    distinct, the data once on disk): a scan then lasts long enough for faults to strike it.
    Returns the expected records, the library's own included; `remove_copies` undoes it."""
    root = host.root / LIBRARY.lstrip("/")
    tops = sorted(str(p) for p in root.iterdir() if not p.name.startswith("copy-"))
    expected = list(library)
    for i in range(copies):
        (root / f"copy-{i}").mkdir()
        subprocess.run(["cp", "-al", *tops, str(root / f"copy-{i}")], check=True)
        expected += [{**r, "path": f"{LIBRARY}/copy-{i}/{r['path'][len(LIBRARY) + 1 :]}"} for r in library]
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return expected


def remove_copies(host) -> None:
    for copy in (host.root / LIBRARY.lstrip("/")).glob("copy-*"):
        shutil.rmtree(copy)


def run(
    host,
    expected: list[dict],
    faults: int,
    rng: random.Random,
    log: Callable[[str], None] = print,
    kinds: list[str] | None = None,
) -> list[Round]:
    """Rounds of full scans until `faults` faults struck running sessions; the faults' kinds are
    `kinds` in that order if given, else drawn at random."""
    plan = list(kinds or [])
    rounds: list[Round] = []
    struck = 0
    expected_paths = sorted(e["path"] for e in expected)
    # A scan without a fault first: how long one takes, so the faults strike while it runs.
    wait_all_active(host)
    reset_library_db(host)
    clean = BackgroundScan(host).result(timeout=1200)
    assert clean["status"] == "completed" and clean["counts"]["inserted"] == len(expected_paths), clean
    duration = _seconds(clean)
    log(f"a full scan of {len(expected_paths)} files without faults: {duration:.1f} s")
    while struck < faults:
        wait_all_active(host)
        reset_library_db(host)
        scan = BackgroundScan(host)
        current = Round(scan.session_id())
        for _ in range(min(rng.choice((1, 1, 2)), faults - struck)):
            time.sleep(rng.uniform(0.1, 0.5) * duration)
            if not _running(host, current.session_id):
                break
            kind = plan.pop(0) if plan else rng.choice(FAULTS)
            at = time.time()
            current.faults.append((kind, inject(host, kind, rng), at))
            struck += 1
        session = scan.result(timeout=1200)
        if not current.faults:
            log(f"session {current.session_id} closed before a fault struck; not counted")
            continue
        current.status = session["status"]
        ended = datetime.datetime.fromisoformat(session["ended_at"]).timestamp()
        current.recovery = ended - current.faults[-1][2]
        paths = [p for (p,) in psql(host, "SELECT path FROM present_tracks ORDER BY path")]
        current.lost = len(set(expected_paths) - set(paths))
        extra_rows = len(paths) - len(set(paths)) + len(set(paths) - set(expected_paths))
        current.duplicated = extra_rows + max(0, session["counts"]["inserted"] - len(expected_paths))
        current.errors = int(psql(host, "SELECT count(*) FROM file_errors")[0][0])
        current.resent = session.get("resent", 0)
        rounds.append(current)
        what = ", ".join(f"{kind} ({target})" for kind, target, _ in current.faults)
        log(
            f"round {len(rounds)}: {what}: {current.status}, closed {current.recovery:.0f} s after the "
            f"fault, lost {current.lost}, duplicated {current.duplicated}, errors {current.errors}, "
            f"re-sent {current.resent}"
        )
    wait_all_active(host)
    return rounds


def summary(rounds: list[Round]) -> dict:
    recoveries = [r.recovery for r in rounds]
    kinds: dict[str, int] = {}
    for r in rounds:
        for kind, _, _ in r.faults:
            kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "faults": sum(len(r.faults) for r in rounds),
        "by_kind": kinds,
        "sessions": len(rounds),
        "completed": sum(r.status == "completed" for r in rounds),
        "lost": sum(r.lost for r in rounds),
        "duplicated": sum(r.duplicated for r in rounds),
        "errors": sum(r.errors for r in rounds),
        "resent": sum(r.resent for r in rounds),
        "recovery_median": statistics.median(recoveries) if recoveries else 0.0,
        "recovery_max": max(recoveries, default=0.0),
    }
