"""Real services for the test suite: a private redis-server, a private PostgreSQL cluster and
Celery worker processes, all on free loopback ports, started and stopped by the suite."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend_worker.pipeline import QUEUES

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Workers run as an unprivileged user, as in production: that is also what makes a mode-000
# folder unreadable to them (root reads everything).
WORKER_USER = "nobody"


# Every table of the library and the ledger: what a test or a benchmark empties to start afresh.
LIBRARY_TABLES = (
    "track_genres, track_credits, album_credits, tracks, albums, artists, genres, file_errors, "
    "cover_plans, record_buffer, session_dirs, session_vanished, scan_units, scan_sessions"
)

# Rows of tracks, track_genres and the credits tables that point at a row that is not there:
# (tracks, track_genres, credits). Those tables have no foreign keys (migrations 0006, 0010); the
# library lock and 0010's triggers keep them whole.
DANGLING_REFERENCES_SQL = (
    "SELECT (SELECT count(*) FROM tracks t"
    "  WHERE NOT EXISTS (SELECT 1 FROM albums a WHERE a.id = t.album_id)"
    "  OR NOT EXISTS (SELECT 1 FROM artists a WHERE a.id = t.artist_id)), "
    "(SELECT count(*) FROM track_genres g"
    "  WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.id = g.track_id)"
    "  OR NOT EXISTS (SELECT 1 FROM genres n WHERE n.id = g.genre_id)), "
    "(SELECT count(*) FROM track_credits c"
    "  WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.id = c.track_id)"
    "  OR NOT EXISTS (SELECT 1 FROM artists a WHERE a.id = c.artist_id))"
    " + (SELECT count(*) FROM album_credits c"
    "  WHERE NOT EXISTS (SELECT 1 FROM albums al WHERE al.id = c.album_id)"
    "  OR NOT EXISTS (SELECT 1 FROM artists a WHERE a.id = c.artist_id))"
)


# The worker role's defaults: the layout and scheduling policy the test and bench workers follow.
WORKER_DEFAULTS = REPO / "roles/backend_worker/defaults/main.yml"


def deployment_layout() -> list[tuple[str, int, int, int, str, int | None]]:
    """(queue, units, concurrency, prefetch multiplier, pool, max tasks per child or None) of each
    pool of the deployment's default layout (roles/backend_worker/defaults/main.yml), in its order."""
    text = WORKER_DEFAULTS.read_text()
    pattern = (
        r"\{queue: (\w+), units: (\d+), concurrency: (\d+), prefetch_multiplier: (\d+), pool: (\w+)"
        r"(?:, max_tasks_per_child: (\d+))?"
    )
    return [
        (q, int(u), int(c), int(m), pool, int(tasks) if tasks else None)
        for q, u, c, m, pool, tasks in re.findall(pattern, text)
    ]


def deployment_scheduling_prefix() -> list[str]:
    """The command prefix that runs a worker under the deployment's CPU scheduling policy
    (backend_worker_cpu_scheduling_policy, the units' CPUSchedulingPolicy): `chrt --batch 0`."""
    text = WORKER_DEFAULTS.read_text()
    found = re.search(r"^backend_worker_cpu_scheduling_policy: (\w+)$", text, re.MULTILINE)
    if not found:
        raise RuntimeError("cannot read the CPU scheduling policy from roles/backend_worker/defaults")
    return ["chrt", f"--{found.group(1)}", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@contextlib.contextmanager
def process_listening(argv: list[str], port: int, **popen):
    """A process of argv, handed over once something listens on port; terminated at the end."""
    proc = subprocess.Popen(argv, **popen)
    try:
        wait_for_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def stop_process_groups(procs) -> None:
    """SIGTERM each process group (a Celery worker and its pool), SIGKILL what is left after 30 s."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def shared_tempdir(prefix: str) -> Path:
    """A folder the unprivileged workers can read (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path


def redis_user_rules() -> dict[str, str]:
    """The broker's users as the redis role ships them (redis_users): name -> ACL rules."""
    import yaml

    defaults = yaml.safe_load((REPO / "roles/redis/defaults/main.yml").read_text())
    return {user["name"]: user["rules"] for user in defaults["redis_users"]}


def render_redis_users(dest: Path, passwords: dict[str, str]) -> None:
    """The shipped ACL file (the redis role's redis-users.acl.j2), rendered by Ansible as the role does."""
    import json

    rules = redis_user_rules()
    users = [{"name": name, "password": passwords[name], "rules": rules[name]} for name in rules]
    extra = dest.with_suffix(".vars.json")
    extra.write_text(json.dumps({"redis_users": users, "redis_users_legacy_default": False}))
    template = REPO / "roles/redis/templates/redis-users.acl.j2"
    subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-m", "ansible.builtin.template", "-a", f"src={template} dest={dest} mode=0600",
         "-e", f"@{extra}", "-e", f"ansible_python_interpreter={sys.executable}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    extra.unlink()


class Redis:
    """A private redis-server with the shipped users (the `default` user off); `url` logs in as the
    workers, `url_for(name)` as another of them."""

    def __init__(self, workdir: Path, port: int):
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.passwords = {name: f"{name}-test-password" for name in redis_user_rules()}
        self.url, self.admin_url = self.url_for("workers"), self.url_for("admin")

    def url_for(self, user: str, port: int | None = None, db: int = 0) -> str:
        """`user`'s URL of this server (or of a forwarder in front of it, on `port`), database `db`."""
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{port or self.port}/{db}"

    def login_env(self, user: str) -> dict[str, str]:
        """The environment of a service logging in as `user` (as its deployed env file does)."""
        return {"SONIQUEBAY_BROKER_USER": user, "SONIQUEBAY_BROKER_PASSWORD": self.passwords[user]}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        users = self.workdir / "users.acl"
        render_redis_users(users, self.passwords)
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                 "--save", "", "--appendonly", "yes", "--maxmemory-policy", "noeviction",
                 "--aclfile", str(users)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


# The deployment's two database roles (roles/postgresql/defaults/main.yml) and the SQL that gives
# the owner everything and the workers their privileges, the same file the role applies.
OWNER_ROLE = "soniquebay_owner"
WORKERS_ROLE = "soniquebay"
DATABASE_ROLES_SQL = REPO / "roles/postgresql/files/database_roles.sql"


def database_roles_statements() -> list[str]:
    """The statements of roles/postgresql/files/database_roles.sql, split as the role splits them."""
    return [part.strip() for part in DATABASE_ROLES_SQL.read_text().split(";\n\n") if part.strip()]


def apply_database_roles(superuser_url: str, owner: str = OWNER_ROLE, workers: str = WORKERS_ROLE) -> bool:
    """Run roles/postgresql/files/database_roles.sql in the database of superuser_url as the role
    does (one transaction, client-side parameters as psycopg2's): the owner owns everything, the
    workers get their privileges. True when it changed any."""
    import psycopg

    with psycopg.connect(superuser_url) as conn, psycopg.ClientCursor(conn) as cur:
        for statement in database_roles_statements():
            cur.execute(statement, {"owner": owner, "workers": workers})
        return cur.fetchone()[0]


class Postgres:
    """A throwaway cluster owned by the `postgres` system user (initdb refuses root). Tests trade
    durability for speed; `durable=True` keeps Debian's settings (the benchmarks measure those).

    Its roles are the deployment's (trust authentication): `owner_url` owns the database and
    migrates it, `workers_url` is what the workers and the command use, `url` the superuser (for
    fixtures that empty or inspect the database)."""

    FAST = "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"

    def __init__(self, workdir: Path, port: int, durable: bool = False):
        self.port = port
        self.datadir = workdir / "pgdata"
        self.workdir = workdir
        self.durable = durable
        self.url = self.url_for("postgres")
        self.owner_url, self.workers_url = self.url_for(OWNER_ROLE), self.url_for(WORKERS_ROLE)

    def url_for(self, role: str, database: str = "soniquebay") -> str:
        return f"postgresql://{role}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        """A database laid out as the postgresql role makes it: owned by the owner, the workers'
        privileges granted (those of the tables migrations create included)."""
        import psycopg

        with psycopg.connect(self.url_for("postgres", "postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE} TEMPLATE template0 ENCODING 'UTF8'")
        apply_database_roles(self.url_for("postgres", name))

    def postmaster_pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().split()[0])

    def _as_postgres(self, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, **kwargs)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.workdir, "postgres", "postgres")
        fresh = not self.datadir.exists()
        if fresh:
            self._as_postgres(
                str(PG_BIN / "initdb"), "-D", str(self.datadir), "--auth=trust", "-U", "postgres",
                "--encoding=UTF8", "--locale=C.UTF-8", stdout=subprocess.DEVNULL,
            )  # fmt: skip
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-w", "-l", str(self.workdir / "postgres.log"),
            "-o", f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
                  + ("" if self.durable else self.FAST),
            "start", stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if fresh:
            import psycopg

            with psycopg.connect(self.url_for("postgres", "postgres"), autocommit=True) as conn:
                for role in (OWNER_ROLE, WORKERS_ROLE):
                    conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
            self.create_database("soniquebay")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop",
                              stdout=subprocess.DEVNULL)  # fmt: skip


def hold_extract_slots(database_url: str):
    """A connection holding every extract CPU slot (the advisory locks of cpu.cpu_slot):
    extract tasks then wait for one in the server, before reading a file. Close it to free them."""
    import psycopg

    from backend_worker.config import settings
    from backend_worker.cpu import CPU_SLOT_LOCK_CLASS

    conn = psycopg.connect(database_url, autocommit=True)
    conn.execute(
        "SELECT pg_advisory_lock(%s, s) FROM generate_series(0, %s - 1) AS s",
        (CPU_SLOT_LOCK_CLASS, settings().extract_slots),
    )
    return conn


class Workers:
    """One `celery worker` process per queue, each with a small pool of the deployment's kind
    (threads or prefork, roles/backend_worker/defaults/main.yml)."""

    def __init__(self, logdir: Path, env: dict[str, str], concurrency: int = 2):
        self.logdir = logdir
        self.env = env
        self.concurrency = concurrency
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, queues=QUEUES, extra_env: dict[str, str] | None = None) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.logdir.chmod(0o777)
        env = {**self.env, **(extra_env or {})}
        pools = {queue: pool for queue, _, _, _, pool, _ in deployment_layout()}
        for queue in queues:
            with open(self.logdir / f"{queue}.log", "ab") as log:
                self.procs[queue] = subprocess.Popen(
                    [*deployment_scheduling_prefix(),
                     "setpriv", f"--reuid={WORKER_USER}", "--regid=nogroup", "--clear-groups",
                     str(VENV_BIN / "celery"), "-A", "backend_worker", "worker", "-Q", queue,
                     "-c", str(self.concurrency), "--prefetch-multiplier", "4", "--pool", pools[queue],
                     "-n", f"{queue}-1@%h",
                     "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
                    cwd="/", env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        self.wait_ready(queues)

    def wait_ready(self, queues=QUEUES, timeout: float = 60) -> None:
        from backend_worker.app import app

        wanted = {f"{q}-1@{socket.gethostname()}" for q in queues}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for queue, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {queue} exited:\n{self.log_tail(queue)}")
            replies = app.control.ping(timeout=0.5) or []
            if wanted <= {name for reply in replies for name in reply}:
                return
        raise TimeoutError(f"workers not ready after {timeout} s")

    def log_size(self, queue: str) -> int:
        """Where the queue's worker log ends now: an offset for log_since()."""
        return (self.logdir / f"{queue}.log").stat().st_size

    def log_since(self, queue: str, offset: int) -> str:
        """What the queue's worker logged after `offset` (from log_size())."""
        with open(self.logdir / f"{queue}.log", "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def log_tail(self, queue: str, lines: int = 40) -> str:
        path = self.logdir / f"{queue}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, queues=QUEUES) -> None:
        procs = {q: p for q, p in self.procs.items() if q in queues}
        stop_process_groups(procs.values())
        for queue in procs:
            del self.procs[queue]

    def restart(self, queues, extra_env: dict[str, str] | None = None) -> None:
        """Restart these queues' workers with settings changed (or back to the suite's)."""
        self.stop(queues)
        self.start(queues, extra_env)

    def pool_children(self, queue: str) -> list[int]:
        main = self.procs[queue].pid
        with open(f"/proc/{main}/task/{main}/children") as fh:
            return [int(pid) for pid in fh.read().split()]
