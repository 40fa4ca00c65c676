"""PostgreSQL access: connections and schema migrations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources

import psycopg

from backend_worker.config import settings

# Errors worth retrying: the server went away, restarted, or two transactions collided.
TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)

_MIGRATION_LOCK = 0x50_4E_49_51  # advisory lock id: one migrator at a time


def connect(url: str | None = None, **kwargs) -> psycopg.Connection:
    return psycopg.connect(url or settings().database_url, connect_timeout=10, **kwargs)


@contextlib.contextmanager
def transaction(url: str | None = None) -> Iterator[psycopg.Connection]:
    """One connection, one transaction: committed on success, rolled back on error."""
    with connect(url) as conn:
        yield conn


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
