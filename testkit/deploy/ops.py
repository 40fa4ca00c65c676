"""What the monitoring and fault tests do to the deployed test host: put a library in place, run a
scan in the background, watch Flower and Prometheus, freeze a task mid-work (a prefork pool
process, or one thread of a thread-pool worker)."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import time
from pathlib import Path

from testkit import audio_fixtures
from testkit.deploy.checks import FLOWER, LIBRARY, celery_inspect, flower_auth
from testkit.deploy.layout import LAYOUT, POOLS, WORKER_UNITS
from testkit.machine import REPO
from testkit.services import DANGLING_REFERENCES_SQL
from testkit.stack import http, psql
from testkit.testhost import TestHost

PROMETHEUS = "http://127.0.0.1:9090/"
CLI = "/opt/soniquebay/venv/bin/soniquebay"
VENV_PYTHON = "/opt/soniquebay/venv/bin/python"
FREEZE = REPO / "testkit" / "freeze.py"


def put_library(host: TestHost, staging: Path, **shape) -> list[dict]:
    """A fixture library of `shape` (build_library's arguments) at /srv/music on the host, replacing
    what was there; returns the expected records with their paths as the host sees them."""
    expected = audio_fixtures.build_library(staging, **shape)
    target = host.root / LIBRARY.lstrip("/")
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-a", str(staging), str(target)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    for record in expected:
        record["path"] = LIBRARY + "/" + str(Path(record["path"]).relative_to(staging))
    return expected


def reset_library_db(host: TestHost) -> None:
    """Forget every track and error, so a scan starts from an empty library."""
    psql(
        host,
        "TRUNCATE tracks, track_genres, track_credits, album_credits, albums, artists, genres, "
        "file_errors CASCADE",
    )


class BackgroundScan:
    """`soniquebay scan /srv/music --wait --json` on the host, running while the test injects faults."""

    def __init__(self, host: TestHost, *args: str, env_file: str | None = None):
        self.host = host
        # With env_file, the command reads it after the deployment's env file (so it wins).
        cli = (
            f"set -a; . /etc/soniquebay/soniquebay.env; . {env_file}; set +a; exec {CLI}"
            if env_file
            else "soniquebay"
        )
        self.proc = subprocess.Popen(
            [*host.ssh_argv(), " ".join([cli, "scan", LIBRARY, "--wait", "--json", *args])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def session_id(self, timeout: float = 60) -> str:
        """The running session (the newest one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = psql(
                self.host, "SELECT id FROM scan_sessions WHERE status = 'running' ORDER BY started_at DESC"
            )
            if rows:
                return rows[0][0]
            time.sleep(0.5)
        raise AssertionError("no scan session started")

    def units_done(self) -> int:
        return int(psql(self.host, "SELECT count(*) FROM scan_units WHERE done_at IS NOT NULL")[0][0])

    def wait_units_done(self, at_least: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.units_done() < at_least:
            assert self.proc.poll() is None, f"the scan ended early: {self.proc.communicate()}"
            assert time.monotonic() < deadline, f"fewer than {at_least} units done after {timeout} s"
            time.sleep(0.3)

    def result(self, timeout: float = 600) -> dict:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"scan exited {self.proc.returncode}: {out}{err}"
        return json.loads(out.strip().splitlines()[-1])


def assert_library_is_exactly(host: TestHost, expected: list[dict]) -> None:
    """Every expected file is one track row, nothing else, no duplicates (paths are unique keys, so
    also compare the counts of the tables a duplicate insert would grow)."""
    paths = [p for (p,) in psql(host, "SELECT path FROM present_tracks ORDER BY path")]
    assert paths == sorted(e["path"] for e in expected)
    genres = psql(host, "SELECT count(*), count(DISTINCT (track_id, genre_id)) FROM track_genres")[0]
    assert genres[0] == genres[1]
    assert psql(host, "SELECT count(*) FROM file_errors") == [["0"]]
    assert psql(host, DANGLING_REFERENCES_SQL) == [["0", "0", "0"]], "rows pointing at a removed row"


def flower_api(
    host: TestHost, path: str, method: str = "GET", auth: tuple[str, str] | None = None
) -> tuple[int, object]:
    """Flower's API through nginx, as admin unless `auth` says otherwise: (status, decoded JSON or text)."""
    status, _, body = http(FLOWER + path, auth=auth or flower_auth(host), timeout=60, method=method)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def prometheus(path: str) -> object:
    """Prometheus' HTTP API on the host's loopback (shared with this machine)."""
    status, _, body = http(PROMETHEUS + path)
    assert status == 200, body[:500]
    return json.loads(body)["data"]


def wait_for(predicate, timeout: float, interval: float = 2.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


def pool_children(host: TestHost, unit: str) -> list[int]:
    main = host.unit_main_pid(unit)
    out = host.ssh(f"pgrep -P {main} || true").stdout.split()
    return sorted(int(pid) for pid in out)


def freeze_a_working_child(host: TestHost, units: list[str], timeout: float = 60, then=None) -> int:
    """SIGSTOP the first pool process of `units` seen using CPU (it is running a task), as a hung
    disk read would freeze it; returns its pid. Runs on the host so it reacts within milliseconds.
    `then` (say, starting a scan) is called once the watch is armed, so it cannot miss the work."""
    script = f"""
pids=""
for unit in {" ".join(units)}; do pids="$pids $(pgrep -P $(systemctl show -P MainPID $unit))"; done
ticks() {{ awk '{{print $14 + $15}}' /proc/$1/stat 2>/dev/null || echo 0; }}
declare -A before
for p in $pids; do before[$p]=$(ticks $p); done
echo armed
end=$((SECONDS + {int(timeout)}))
while [ $SECONDS -lt $end ]; do
  for p in $pids; do
    if [ "$(ticks $p)" -gt "${{before[$p]}}" ]; then kill -STOP $p; echo $p; exit 0; fi
  done
  sleep 0.01
done
exit 1
"""
    proc = subprocess.Popen(
        [*host.ssh_argv(), "bash -s"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    proc.stdin.write(script)
    proc.stdin.close()
    armed = proc.stdout.readline().strip()
    if then is not None and armed == "armed":
        then()
    out = proc.stdout.read()  # until the script ends (at most `timeout`)
    err = proc.stderr.read()
    proc.wait(timeout=30)
    assert armed == "armed" and proc.returncode == 0, f"no pool process of {units} started working: {err}"
    return int(out.split()[-1])


class FrozenThread:
    """One thread of a thread-pool worker held by testkit/freeze.py, which runs on the host (under
    ssh, `proc`; `remote` is its pid there): stopped at the entry of a read of `path`, where the
    GIL is released, while the worker's other threads run on. `release` lets it go on; it also
    goes once the worker process exits (the freezer then ends by itself)."""

    def __init__(self, host, pid: int, tid: int, path: str, proc: subprocess.Popen, remote: int):
        self.host, self.pid, self.tid, self.path, self.proc, self.remote = host, pid, tid, path, proc, remote

    def release(self) -> None:
        if self.proc.poll() is None:
            # The remote freezer ends (a tracer that exits lets its tracee go on), then its ssh.
            self.host.ssh(f"kill {self.remote} 2>/dev/null; true")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def __repr__(self) -> str:
        return f"FrozenThread(pid={self.pid}, tid={self.tid}, path={self.path!r})"


def _traced(host, pid: int) -> bool:
    """Every thread of `pid` has a tracer (freeze.py seized them all)."""
    out = host.ssh(f"cat /proc/{pid}/task/*/status 2>/dev/null | grep '^TracerPid:' || true").stdout
    tracers = [line.split()[1] for line in out.splitlines()]
    return bool(tracers) and all(t != "0" for t in tracers)


def freeze_a_thread(host, units: list[str], then, prefix: str = LIBRARY, timeout: float = 60) -> FrozenThread:
    """testkit/freeze.py on the main process of each of `units`: the first thread seen opening or
    reading a file under `prefix` stays frozen there, as a hung disk or network file system
    would hold it; the other freezers end. The caller has the work taken and waiting (at a lock,
    HOLDS), so that no file is read before the freezers are in place: `then` lets it go on once
    every freezer holds its process."""
    freezers = []
    script = FREEZE.read_text()
    try:
        for unit in units:
            pid = host.unit_main_pid(unit)
            proc = subprocess.Popen(
                [*host.ssh_argv(), f"echo $$; exec python3 - {pid} {prefix} {int(timeout)}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            proc.stdin.write(script)
            proc.stdin.close()
            freezers.append((pid, proc, int(proc.stdout.readline())))
        for pid, _, _ in freezers:
            wait_for(lambda pid=pid: _traced(host, pid), timeout=30, interval=0.2, what=f"{pid} traced")
        then()
        ready, _, _ = select.select([proc.stdout for _, proc, _ in freezers], [], [], timeout + 10)
        for pid, proc, remote in freezers:
            if proc.stdout in ready:
                line = proc.stdout.readline().split(maxsplit=2)
                if line and line[0] == "frozen":
                    frozen = FrozenThread(host, pid, int(line[1]), line[2].strip(), proc, remote)
                    freezers.remove((pid, proc, remote))
                    return frozen
        errors = [proc.stderr.read() if proc.poll() is not None else "" for _, proc, _ in freezers]
        raise AssertionError(f"no thread of {units} read a file under {prefix}: {errors}")
    finally:
        for pid, proc, remote in freezers:
            FrozenThread(host, pid, 0, "", proc, remote).release()


def task_of(host, frozen: FrozenThread) -> dict:
    """The task of a frozen thread, as `celery inspect active` reports it: in a thread pool
    `worker_pid` is the worker's pid, and the frozen thread reads a file of the task's chunk."""
    active = celery_inspect(host, "active")
    tasks = [
        t
        for worker_tasks in active.values()
        for t in worker_tasks
        if t.get("worker_pid") == frozen.pid and frozen.path in (t.get("kwargs") or {}).get("paths", ())
    ]
    assert len(tasks) == 1, f"not one active task of {frozen} reads {frozen.path}: {active}"
    return tasks[0]


def freeze_a_task(host, units: list[str], then=None, attempts: int = 5) -> tuple[int | FrozenThread, dict]:
    """Freeze a task of `units` in the middle of its work, as a hung disk read would; returns what
    `resume` lets go on and the task (as `celery inspect active` reports it). `then` starts the work.

    A prefork pool process is caught using CPU (SIGSTOP); one caught between two tasks holds none:
    it is resumed and another one is caught. In a thread pool one thread is stopped inside a read
    of a library file (freeze_a_thread): the queue's work is first held at its lock (HOLDS, for
    extract every CPU slot of the host) until the freezers are in place."""
    queue = units[0].removeprefix("soniquebay-worker-").rsplit("-", 1)[0]
    if POOLS[queue] == "threads":
        hold_lock(host, HOLDS[queue])
        try:
            if then is not None:
                then()
            wait_for(
                lambda: psql(host, "SELECT 1 FROM pg_locks WHERE NOT granted"),
                timeout=120, interval=0.2, what=f"a {queue} task waiting at the held lock",
            )  # fmt: skip
            frozen = freeze_a_thread(host, units, then=lambda: release_lock(host))
        finally:
            release_lock(host)
        try:
            return frozen, task_of(host, frozen)
        except BaseException:
            frozen.release()
            raise
    for _ in range(attempts):
        pid = freeze_a_working_child(host, units, then=then)
        then = None
        active = celery_inspect(host, "active")
        tasks = [t for worker_tasks in active.values() for t in worker_tasks if t.get("worker_pid") == pid]
        if tasks:
            return pid, tasks[0]
        resume(host, [pid])
    raise AssertionError(f"no pool process of {units} could be caught in a task in {attempts} attempts")


def redis(host, *args: str, user: str = "admin", password: str | None = None) -> str:
    """redis-cli on the host as one of the broker's users (admin: the operator's), with its
    credential or the `password` given."""
    return host.ssh(
        f"export REDISCLI_AUTH=$(cat); redis-cli --user {user} --no-auth-warning " + " ".join(args),
        input=password or host.credential("redis" if user == "workers" else f"redis-{user}"),
    ).stdout.strip()


def units_of(queue: str) -> list[str]:
    return [f"soniquebay-worker-{queue}-{n}.service" for n in range(1, LAYOUT[queue][0] + 1)]


def hold_stage(host, queue: str) -> BackgroundScan:
    """Stop `queue`'s units, start a scan from an empty library, and return once the scan has
    filled that queue and everything upstream is idle."""
    host.ssh("systemctl stop " + " ".join(units_of(queue)), timeout=300)
    reset_library_db(host)
    scan = BackgroundScan(host)
    previous = None

    def filled_and_still():
        nonlocal previous
        length = int(redis(host, "llen", queue))
        settled = length > 0 and length == previous
        previous = length
        return length if settled else None

    wait_for(filled_and_still, timeout=180, interval=2, what=f"the {queue} queue to fill")
    return scan


def release_one_holding_messages(host, queue: str) -> list[int]:
    """Start the first unit of the held stage so that it takes messages it cannot finish, and return
    once its heartbeat (what the reconciler reads) names them: it is then sure to hold
    unacknowledged work, however fast the stage is. A prefork unit's pool processes are frozen
    (SIGSTOP) the moment they exist, and returned; a thread pool has none: its tasks wait for a
    PostgreSQL lock (HOLDS) while the worker, its heartbeat and its broker connection run on. The
    caller lets the work go on with `resume`."""
    unit = units_of(queue)[0]
    if POOLS[queue] == "threads":
        hold_lock(host, HOLDS[queue])
        host.ssh(f"systemctl start {unit}")
        wait_for(lambda: held_by(host, unit), timeout=60, interval=0.5, what=f"{unit} to take messages")
        return []
    concurrency = LAYOUT[queue][1]
    script = f"""
systemctl start {unit}
end=$((SECONDS + 60))
while [ $SECONDS -lt $end ]; do
  kids=$(pgrep -P "$(systemctl show -P MainPID {unit})")
  if [ "$(echo $kids | wc -w)" -ge {concurrency} ]; then kill -STOP $kids; echo $kids; exit 0; fi
  sleep 0.02
done
exit 1
"""
    proc = host.ssh("bash -s", input=script, check=False, timeout=120)
    assert proc.returncode == 0, f"{unit} did not start its pool: {proc.stderr}"
    frozen = [int(pid) for pid in proc.stdout.split()]
    wait_for(lambda: held_by(host, unit), timeout=60, interval=0.5, what=f"{unit} to take messages")
    return frozen


# A lock only one stage's tasks wait for, by queue of a thread pool (see test_hangs.py): what an
# operator's forgotten transaction or a long VACUUM FULL does to them.
def cpu_slot_lock_class(host) -> int:
    """The advisory lock class of the host's extract CPU slots, from the hostname its workers see
    (backend_worker.cpu.slot_lock_class: the same in every release, whichever runs there)."""
    from backend_worker.cpu import slot_lock_class

    hostname = host.ssh("runuser -u soniquebay -- python3 -c 'import socket; print(socket.gethostname())'")
    return slot_lock_class(hostname.stdout.strip())


def every_cpu_slot(host) -> str:
    """Every extract CPU slot of the host (the workers use 0 .. SONIQUEBAY_EXTRACT_SLOTS - 1, by
    default one per core): an extract task then waits for one in the server, before reading a file."""
    return f"SELECT pg_advisory_lock({cpu_slot_lock_class(host)}, s) FROM generate_series(0, 63) AS s"


HOLDS = {
    "scan": "LOCK TABLE session_dirs IN ACCESS EXCLUSIVE MODE",
    "extract": every_cpu_slot,  # a statement that depends on the host: computed by hold_lock
    "insert": "LOCK TABLE tracks IN EXCLUSIVE MODE",
    "deferred": "LOCK TABLE cover_plans IN ACCESS EXCLUSIVE MODE",
}
LOCKER = "soniquebay-test-lock"  # application_name of the session holding it


def hold_lock(host, statement, locker: str = LOCKER) -> None:
    """A psql session on the host holds `statement`'s lock until release_lock (or resume); a
    callable statement (HOLDS["extract"]) is given the host first. Locks held under different
    `locker` names are released one by one."""
    if callable(statement):
        statement = statement(host)
    sql = f"BEGIN; {statement}; SELECT pg_sleep(3600);"
    host.ssh(
        f"PGAPPNAME={locker} nohup runuser -u postgres -- psql -q soniquebay -c '{sql}' >/dev/null 2>&1 &"
    )
    wait_for(lambda: lock_held(host, locker), timeout=30, interval=0.5, what="the lock to be held")


def lock_held(host, locker: str = LOCKER) -> bool:
    return bool(
        psql(
            host,
            f"SELECT 1 FROM pg_stat_activity WHERE application_name = '{locker}' "
            "AND query LIKE '%pg_sleep%' AND state = 'active'",
        )
    )


def release_lock(host, locker: str = LOCKER) -> None:
    psql(host, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{locker}'")


def transactions_left_open(host, settle: float = 3.0) -> list[list[str]]:
    """Sessions of the soniquebay database idle in a transaction and still so, unchanged, `settle`
    seconds later: a leaked one stays forever; the workers' own multi-statement transactions (a
    reconciliation pass, a heartbeat) are idle between two statements for a moment only, and a
    single look could catch one."""
    query = (
        "SELECT pid, state_change, application_name, left(regexp_replace(query, '\\s+', ' ', 'g'), 200) "
        "FROM pg_stat_activity "
        "WHERE datname = 'soniquebay' AND state LIKE 'idle in transaction%' ORDER BY pid"
    )
    first = psql(host, query)
    if not first:
        return []
    time.sleep(settle)
    seen = {tuple(row[:2]) for row in first}
    return [row for row in psql(host, query) if tuple(row[:2]) in seen]


def held_by(host, unit: str) -> list[str]:
    """Task ids the unit's running worker holds, as its latest heartbeat reports them."""
    worker = unit.removeprefix("soniquebay-worker-").removesuffix(".service") + "@" + host.name
    pid = host.unit_main_pid(unit)
    rows = psql(
        host,
        f"SELECT array_to_string(held, ' ') FROM worker_heartbeats WHERE worker = '{worker}' AND pid = {pid} "
        "ORDER BY seen_at DESC LIMIT 1",
    )
    return rows[0][0].split() if rows and rows[0][0] else []


def resume(host, held: list) -> None:
    """Let held work go on: the frozen pool processes of a prefork unit (pids) continue, a frozen
    thread (FrozenThread, freeze_a_task) is released; a thread pool's work held at a lock (nothing
    frozen: release_one_holding_messages) has its lock released."""
    pids = [item for item in held if isinstance(item, int)]
    if pids:
        host.ssh("kill -CONT " + " ".join(map(str, pids)) + " 2>/dev/null; true")
    for item in held:
        if isinstance(item, FrozenThread):
            item.release()
    if not held:
        release_lock(host)


# The time a fault may cost: from the fault to the session's close, on the shipped settings.
RECOVERY_LIMIT = 180


def assert_recovered_in_time(session: dict, fault_at: float) -> float:
    """The session closed within RECOVERY_LIMIT seconds of the fault (time.time() when it struck)."""
    import datetime

    ended = datetime.datetime.fromisoformat(session["ended_at"]).timestamp()
    took = ended - fault_at
    assert took <= RECOVERY_LIMIT, (
        f"the session closed {took:.0f} s after the fault (limit {RECOVERY_LIMIT} s)"
    )
    return took


WORKERS_DROPIN = "/run/systemd/system/soniquebay-worker-.service.d"


class short_extract_time_limit:  # noqa: N801 (used as a context manager, like open)
    """Every worker unit with a `queue` (extract by default) time limit of `seconds` while the block
    runs (a drop-in in /run, read after the env file; `ENV_FILE` for a command that should send with
    it), for the tests of a task killed at its limit: the shipped 600 s would make them wait ten
    minutes, and what they check does not depend on the value."""

    ENV_FILE = "/run/soniquebay-time-limit.env"

    def __init__(self, host, seconds: int, queue: str = "extract"):
        self.host, self.seconds, self.queue = host, seconds, queue

    def _apply(self, script: str) -> None:
        self.host.ssh(
            script + "; systemctl daemon-reload; systemctl restart soniquebay-workers.target", timeout=600
        )

    def __enter__(self):
        env = self.ENV_FILE
        self.host.ssh(f"cat > {env}", input=f"SONIQUEBAY_TIME_LIMIT_{self.queue.upper()}={self.seconds}\n")
        self.host.ssh(
            f"mkdir -p {WORKERS_DROPIN} && cat > {WORKERS_DROPIN}/time-limit.conf",
            input=f"[Service]\nEnvironmentFile={env}\n",
        )
        self._apply("true")
        # Every worker answers (warmed up, its pool forked) before the test measures anything.
        celery_inspect(
            self.host, "ping", expect={u.split("-", 2)[2].removesuffix(".service") for u in WORKER_UNITS}
        )
        return self

    def __exit__(self, *exc_info):
        # A process a failed test left frozen would hold the warm shutdown up: resume them all.
        self._apply(f"pkill -CONT -u soniquebay; rm -rf {WORKERS_DROPIN} {self.ENV_FILE}")
        return False


# Memory of every process of the service user, by systemd unit (workers, Flower, exporter): PSS
# counts a page shared by N processes 1/N in each, so the sum is what they cost together.
MEMORY_SCRIPT = r"""
import json, os, pwd
uid = pwd.getpwnam("soniquebay").pw_uid
units = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            continue
        unit = open(f"/proc/{pid}/cgroup").read().strip().rsplit("/", 1)[-1]
        lines = open(f"/proc/{pid}/smaps_rollup").read().splitlines()[1:]
        rollup = dict(line.split(":", 1) for line in lines)
    except (OSError, ValueError):
        continue
    u = units.setdefault(unit, {"processes": 0, "pss": 0, "rss": 0})
    u["processes"] += 1
    u["pss"] += int(rollup["Pss"].split()[0]) * 1024
    u["rss"] += int(rollup["Rss"].split()[0]) * 1024
print(json.dumps(units))
"""


def memory_by_unit(host: TestHost) -> dict[str, dict[str, int]]:
    """unit -> {"processes", "pss", "rss"} (bytes) of every process of the `soniquebay` user."""
    return json.loads(host.ssh("python3 -", input=MEMORY_SCRIPT).stdout.strip().splitlines()[-1])


def memory_total(units: dict[str, dict[str, int]]) -> dict[str, int]:
    return {key: sum(u[key] for u in units.values()) for key in ("processes", "pss", "rss")}
