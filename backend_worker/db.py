"""PostgreSQL access: connections (the task threads' own among them) and schema migrations.

Lists go to the server as binary parameters (``%b``) in the pipeline's statements: psycopg quotes
each element of a text array in Python (1.1 ms for 300 folder names, 15 times the binary form;
2.4 ms per extract message of 1,000 paths stored as jsonb), and a scan sends tens of thousands.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from importlib import resources

import psycopg

from backend_worker.config import settings

_MIGRATION_LOCK = 0x50_4E_49_51  # advisory lock id: one migrator at a time


def connect(url: str | None = None, **kwargs) -> psycopg.Connection:
    return psycopg.connect(url or settings().database_url, connect_timeout=10, **kwargs)


# One connection per thread that runs tasks (a prefork child has one; a thread pool one per
# thread: a psycopg connection must not run two transactions at once), reused across tasks and
# replaced when it breaks. Keyed by thread id so the hang guard can cancel a thread's query.
_connections: dict[int, psycopg.Connection] = {}


def thread_connection() -> psycopg.Connection:
    """This thread's connection, in autocommit mode (a statement alone needs no transaction)."""
    me = threading.get_ident()
    conn = _connections.get(me)
    if conn is None or conn.closed or conn.broken:
        conn = _connections[me] = connect(autocommit=True)
    return conn


@contextlib.contextmanager
def transaction() -> Iterator[psycopg.Connection]:
    """`with transaction() as conn:` one transaction on this thread's connection."""
    conn = thread_connection()
    with conn.transaction():
        yield conn


def discard_busy_connection() -> None:
    """A task stopped mid-query (its soft time limit interrupts whatever runs, even a wait for a
    lock) leaves the connection busy or in a failed transaction: the next one starts afresh."""
    conn = _connections.get(threading.get_ident())
    idle = psycopg.pq.TransactionStatus.IDLE
    if conn is not None and not conn.closed and conn.info.transaction_status != idle:
        conn.close()  # the server ends the query and frees the session's locks
        _connections.pop(threading.get_ident(), None)


def cancel_query(thread_id: int) -> None:
    """Cancel what that thread's connection runs (from another thread: the hang guard)."""
    conn = _connections.get(thread_id)
    if conn is not None and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            conn.cancel_safe(timeout=10)


def end_session(thread_id: int) -> None:
    """Terminate that thread's server session, from this thread's own connection: its transaction
    ends and its locks are freed, as when a prefork child is killed. (Closing the connection here
    would race the stuck thread inside libpq.)"""
    conn = _connections.get(thread_id)
    if conn is not None and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            thread_connection().execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


def migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("backend_worker.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def upgrade(url: str | None = None) -> list[str]:
    """Apply pending migrations in order; returns the names applied (none when up to date)."""
    applied_now = []
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.commit()
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(name)
        conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        conn.commit()
    return applied_now


def pending_migrations(conn: psycopg.Connection) -> list[str]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    done = set()
    if exists:
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in migrations() if version not in done]
