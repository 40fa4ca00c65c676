"""An upgrade in place during a scan: the new release's playbook runs over release N while a scan
started by release N is in flight, on the test host (testkit.testhost) or a test network
(testkit.testnet).

A 20,000-file scan takes seconds here and a converge minutes, so timing alone would not keep the
session running until the workers restart. Every extract CPU slot of each worker host is held (as
on a host whose cores are busy: the workers' own advisory locks, held by a test session), so
release N's extract tasks wait in the server with the scan's work taken off the queue; a host's
slots are let go the moment the converge restarts its first worker unit. Its units then stop warm
while release N's tasks still run, hand back what they had not started, and the new release's
workers take it, on the schema the converge migrated before the restart."""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from testkit.deploy.ops import LOCKER, every_cpu_slot, hold_lock, lock_held, release_lock, wait_for
from testkit.machine import Converge
from testkit.services import DANGLING_REFERENCES_SQL
from testkit.stack import psql

LIBRARY = "/srv/music"
WORKER_UNITS = "soniquebay-worker-*.service"
# Returns once a worker unit of the host has a restart job queued or running (a warm stop waiting
# for its tasks), or after 5 s: polled in the host, not over one SSH connection per look.
RESTART_JOB = (
    "timeout 5 sh -c 'until systemctl list-jobs --no-legend --plain "
    '| awk "\\$2 ~ /^soniquebay-worker-/ && \\$3 == \\"restart\\" { found = 1 } END { exit !found }"; '
    "do sleep 0.2; done'"
)
UNITS_STARTED = (
    f"for unit in $(systemctl list-units --plain --no-legend '{WORKER_UNITS}' | cut -d' ' -f1); do "
    'echo "$unit $(systemctl show -P MainPID $unit) '
    '$(systemctl show --timestamp=us+utc -P ExecMainStartTimestamp $unit)"; '
    "done"
)


@dataclass
class Started:
    pid: int
    at: float  # unix time the unit's main process started


@dataclass
class UpgradeDuringScan:
    session_id: str
    before: dict[str, dict[str, Started]]  # worker host -> unit -> its process before the converge
    converge: Converge | None = None
    converge_seconds: float = 0.0
    restart_began: dict[str, float] = field(default_factory=dict)  # host -> unix time of its first restart
    running_at_restart: dict[str, bool] = field(default_factory=dict)  # the session still ran then
    session: dict = field(default_factory=dict)  # release N's `soniquebay scan --wait --json` result
    after: dict[str, dict[str, Started]] = field(default_factory=dict)

    def ended_at(self) -> float:
        return datetime.datetime.fromisoformat(self.session["ended_at"]).timestamp()

    def started_at(self) -> float:
        return datetime.datetime.fromisoformat(self.session["started_at"]).timestamp()


def units_started(host) -> dict[str, Started]:
    """The worker units of a host: their main process and when it started."""
    started = {}
    for line in host.ssh(UNITS_STARTED).stdout.splitlines():
        unit, pid, at = line.split(" ", 2)  # at: "Sat 2026-12-05 15:07:02.123456 UTC"
        when = datetime.datetime.strptime(at.strip(), "%a %Y-%m-%d %H:%M:%S.%f UTC")
        started[unit] = Started(int(pid), when.replace(tzinfo=datetime.UTC).timestamp())
    return started


def session_status(database, session_id: str) -> str:
    return psql(database, f"SELECT status FROM scan_sessions WHERE id = '{session_id}'")[0][0]


def converge_during_scan(
    converge: Callable[[], Converge], database, workers: list, scan_host, timeout: float = 900
) -> UpgradeDuringScan:
    """Hold the extract slots of `workers`, start `soniquebay scan /srv/music --wait --json` (release
    N's command) on `scan_host`, run `converge()` (the new release's playbook) once the scan has
    handed work to the extract stage, let each host's slots go when its workers' restart begins,
    and return once the session ended. `database` is the machine PostgreSQL runs on."""
    lockers = {host.name: f"{LOCKER}-{host.name}" for host in workers}
    for host in workers:
        hold_lock(database, every_cpu_slot(host), lockers[host.name])
    scan = None
    try:
        before = {host.name: units_started(host) for host in workers}
        scan = subprocess.Popen(
            [*scan_host.ssh_argv(), f"soniquebay scan {LIBRARY} --wait --json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        running = "SELECT id FROM scan_sessions WHERE status = 'running' ORDER BY started_at DESC LIMIT 1"
        rows = wait_for(lambda: psql(database, running), timeout=120, interval=0.5, what="the scan")
        session_id = rows[0][0]
        # The converge starts once the scan stage of release N has sent extract work.
        extract = f"SELECT 1 FROM scan_units WHERE session_id = '{session_id}' AND stage = 'extract' LIMIT 1"
        wait_for(lambda: psql(database, extract), timeout=120, interval=0.5, what="the first extract unit")
        run = UpgradeDuringScan(session_id, before)
        done = threading.Event()

        def release_at_restart(host) -> None:
            while not done.is_set():
                if host.ssh(RESTART_JOB, check=False, timeout=30).returncode == 0:
                    run.restart_began[host.name] = time.time()
                    # Whether the hold was still there: a PostgreSQL restart would have freed it.
                    held = lock_held(database, lockers[host.name])
                    still = session_status(database, session_id) == "running"
                    run.running_at_restart[host.name] = held and still
                    break
            release_lock(database, lockers[host.name])

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(workers) + 1) as pool:
            watchers = [pool.submit(release_at_restart, host) for host in workers]
            try:
                run.converge = converge()
            finally:
                run.converge_seconds = time.monotonic() - started
                done.set()
                for watcher in watchers:
                    watcher.result()
        out, err = scan.communicate(timeout=timeout)
        lines = out.strip().splitlines()
        failed = {"exit": scan.returncode, "stderr": err[-3000:]}
        run.session = json.loads(lines[-1]) if scan.returncode == 0 and lines else failed
        run.after = {host.name: units_started(host) for host in workers}
        return run
    finally:
        for host in workers:
            release_lock(database, lockers[host.name])
        if scan is not None and scan.poll() is None:
            scan.kill()


@dataclass
class Upgrade:
    """What an upgrade during a scan left, read before the library goes again."""

    run: UpgradeDuringScan
    release: str  # the commit of the release before
    builds: dict[str, tuple[str, str]]  # worker host -> the build /opt/soniquebay/venv was, and is
    expected: list[list[str]]  # (path, title, artist) of the library's files (testkit.stack.expected_rows)
    rows: list[list[str]]  # the same of the library's tracks after the session
    duplicates: int  # track rows beyond one per path
    file_errors: int
    dangling: list[str]  # tracks, genre links and credits pointing at a removed row


def current_builds(workers: list) -> dict[str, str]:
    """The build each worker host's venv points at."""
    return {host.name: host.ssh("readlink /opt/soniquebay/venv").stdout.strip() for host in workers}


def upgrade_during_scan(
    converge: Callable[[], Converge],
    release: str,
    database,
    workers: list,
    folder: str,
    expected: list[list[str]],
) -> Upgrade:
    """converge_during_scan of /srv/music, whose files under `folder` are `expected`; the library's
    rows under `folder` read once the session ended."""
    before = current_builds(workers)
    run = converge_during_scan(converge, database, workers, workers[0])
    after = current_builds(workers)
    below = f"starts_with(path, '{folder}/')"
    tracks = (
        "SELECT path, coalesce(title, ''), coalesce(artist, '') "
        f"FROM present_tracks WHERE {below} ORDER BY path"
    )
    return Upgrade(
        run=run,
        release=release,
        builds={host: (before[host], after[host]) for host in before},
        expected=expected,
        rows=psql(database, tracks),
        duplicates=int(
            psql(database, f"SELECT count(*) - count(DISTINCT path) FROM tracks WHERE {below}")[0][0]
        ),
        file_errors=int(psql(database, "SELECT count(*) FROM file_errors")[0][0]),
        dangling=psql(database, DANGLING_REFERENCES_SQL)[0],
    )


def assert_upgraded_during_scan(upgrade: Upgrade, worker_units: dict[str, set[str]]) -> None:
    """The new release's converge migrated the schema and restarted every worker unit of every host
    while release N's session ran (its extract tasks still held the session's work), and the
    session completed with every file a track, once, and nothing else."""
    run = upgrade.run
    assert run.converge is not None and run.converge.ok, run.converge and run.converge.tail(120)
    for host, (before, after) in upgrade.builds.items():
        assert before != after, (
            f"{host} ran this build before the upgrade (release before: {upgrade.release})"
        )
    assert "backend_worker : Run soniquebay db upgrade" in run.converge.changed_tasks(), "nothing migrated"
    session = run.session
    assert session.get("status") == "completed" and session["id"] == run.session_id, session
    n = len(upgrade.expected)
    assert session["counts"]["discovered"] == n and session["counts"]["inserted"] == n, session
    assert session["counts"]["errors"] == 0, session
    assert upgrade.rows == upgrade.expected
    assert (upgrade.duplicates, upgrade.file_errors, upgrade.dangling) == (0, 0, ["0", "0", "0"])
    assert run.running_at_restart == dict.fromkeys(worker_units, True), run.running_at_restart
    for host, units in worker_units.items():
        assert set(run.after[host]) == units, host
        for unit, now in run.after[host].items():
            assert now.pid != run.before[host][unit].pid, f"{unit} of {host} was not restarted"
            assert now.at > run.started_at(), f"{unit} of {host} started before the session"
    # And the new release's workers took part in it: some were back before it ended.
    back = sorted(f"{unit} of {host}" for host in worker_units for unit, now in run.after[host].items()
                  if now.at < run.ended_at())  # fmt: skip
    assert back, "every worker came back after the session ended"
