"""Redis, PostgreSQL and the deployment's worker layout as plain processes on this machine.

Redis and PostgreSQL are started like the test suite's (testkit/services.py, free loopback ports)
but PostgreSQL keeps the settings of a Debian install (fsync, synchronous_commit and
full_page_writes on), as the deployment runs it. The workers are the deployment's default
8-unit layout (roles/backend_worker/defaults/main.yml), each unit one
``celery -A ... worker -Q <queue> -c <n> --prefetch-multiplier <m> --pool <pool> -n <queue>-<i>@%h``,
run as root with the deployment's environment variables and CPU scheduling policy.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testkit import services

REPO = services.REPO
VENV_BIN = services.VENV_BIN


@dataclass(frozen=True)
class Pool:
    queue: str
    units: int
    concurrency: int
    prefetch: int
    pool: str = "prefork"
    max_tasks_per_child: int | None = None


def deployment_layout() -> list[Pool]:
    """The worker pools of roles/backend_worker/defaults/main.yml (read, so the bench follows it)."""
    pools = [Pool(*row) for row in services.deployment_layout()]
    if {p.queue for p in pools} != set(services.QUEUES):
        raise RuntimeError(f"cannot read the worker layout from roles/backend_worker/defaults: {pools}")
    return pools


class Layout:
    """The worker units of a layout as plain processes (one process group each)."""

    def __init__(
        self, pools: list[Pool], logdir: Path, env: dict[str, str], app: str = "bench.probe", cwd: Path = REPO
    ):
        self.pools = pools
        self.logdir = logdir
        self.env = env
        self.app = app
        self.cwd = cwd  # celery puts it first on sys.path: the code the workers run
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def names(self) -> list[str]:
        return [f"{p.queue}-{i}" for p in self.pools for i in range(1, p.units + 1)]

    def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        for pool in self.pools:
            for i in range(1, pool.units + 1):
                name = f"{pool.queue}-{i}"
                recycle = (
                    ["--max-tasks-per-child", str(pool.max_tasks_per_child)]
                    if pool.max_tasks_per_child
                    else []
                )
                with open(self.logdir / f"{name}.log", "ab") as log:
                    self.procs[name] = subprocess.Popen(
                        [*services.deployment_scheduling_prefix(),
                         str(VENV_BIN / "celery"), "-A", self.app, "worker", "--loglevel=INFO",
                         "-Q", pool.queue, "-c", str(pool.concurrency),
                         "--prefetch-multiplier", str(pool.prefetch), "--pool", pool.pool,
                         *recycle,
                         "-n", f"{name}@%h"],
                        cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip

    def wait_ready(self, timeout: float = 240) -> float:
        """Wait until every unit answers a ping; returns the seconds it took."""
        from backend_worker.app import app

        started = time.monotonic()
        wanted = {f"{name}@{socket.gethostname()}" for name in self.names}
        while time.monotonic() - started < timeout:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited:\n{self.log_tail(name)}")
            replies = app.control.ping(timeout=1.0) or []
            if wanted <= {n for reply in replies for n in reply}:
                return time.monotonic() - started
        raise TimeoutError(f"workers not ready after {timeout} s")

    def pids(self) -> dict[str, list[int]]:
        """Unit name -> [main pid, pool children...]."""
        out = {}
        for name, proc in self.procs.items():
            out[name] = [proc.pid, *children(proc.pid)]
        return out

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


class Services:
    """A private Redis and a durable PostgreSQL on free loopback ports under `workdir`, the schema,
    a covers folder, and the workers' environment. The deployment's settings also go into this
    process's environment before anything builds the Celery app (it pings the workers with them)."""

    def __init__(self, workdir: Path):
        self.redis = services.Redis(workdir / "redis", services.free_port())
        self.postgres = services.Postgres(workdir / "postgres", services.free_port(), durable=True)
        self.covers = workdir / "covers"
        self.message_dir = workdir / "messages"
        self.env = env_for(self.redis.url, self.postgres.url, self.covers, self.message_dir)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("SONIQUEBAY_")})

    def start(self) -> None:
        from backend_worker import db

        self.redis.start()
        self.postgres.start()
        db.upgrade(self.postgres.url)
        self.covers.mkdir()

    def empty_library(self) -> None:
        import psycopg

        with psycopg.connect(self.postgres.url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {services.LIBRARY_TABLES} RESTART IDENTITY CASCADE")
            conn.execute("CHECKPOINT")

    def stop(self) -> None:
        self.postgres.stop()
        self.redis.stop()


def env_for(redis_url: str, database_url: str, covers_dir: Path, message_dir: Path) -> dict[str, str]:
    """The deployment's settings (defaults for every tuning knob), nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQUEBAY_")}
    env.update(
        {
            "SONIQUEBAY_BROKER_URL": redis_url,
            "SONIQUEBAY_DATABASE_URL": database_url,
            "SONIQUEBAY_COVERS_DIR": str(covers_dir),
            "SONIQUEBAY_BENCH_MESSAGE_LOG": str(message_dir),
            "PYTHONPATH": str(REPO),
        }
    )
    return env


# --- /proc readings ---------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (prefork children share the parent's) counted once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int, with_reaped_children: bool = False) -> float:
    """User + system CPU time of a process (plus that of its exited, waited-for children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK
