"""The database's two roles: the owner role owns the database and every object in it (and alone
changes the schema); the workers' role, the one the workers, the exporter and the command log in
as, owns nothing and reads and writes rows only. The rest of the integration suite runs as the
workers' role: that its privileges suffice is proved there. Here: what it may not do, who owns
what, and the upgrade of a database laid out by the releases before (the workers' role owning it
all) through the same SQL the postgresql role runs (roles/postgresql/files/database_roles.sql)."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from backend_worker import db
from testkit import services

pytestmark = pytest.mark.integration

OWNER, WORKERS = services.OWNER_ROLE, services.WORKERS_ROLE
OLD_LAYOUT = "soniquebay_old_layout"
RESTORED = "soniquebay_restored"

# Each refused to the workers' role: "permission denied" or "must be owner".
SCHEMA_CHANGES = [
    "CREATE TABLE intruder (id integer)",
    "DROP TABLE tracks",
    "ALTER TABLE tracks ADD COLUMN intruder integer",
    "TRUNCATE tracks",
    "CREATE INDEX intruder ON tracks (title)",
    "DROP VIEW present_tracks",
    "ALTER TABLE schema_migrations ADD COLUMN intruder integer",
    "DROP TABLE schema_migrations",
    "ALTER SEQUENCE tracks_id_seq RESTART",
    # What `soniquebay db upgrade` runs first.
    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL)",
]

OWNERS_SQL = """
SELECT c.relkind::text, c.relname::text, c.relowner::regrole::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' ORDER BY 2
"""
ACL_SQL = "SELECT relname::text, relacl::text[] FROM pg_class WHERE relnamespace = 'public'::regnamespace"


def refused(url: str, statement: str) -> str:
    """The error the statement gets on a connection to url (it must get one)."""
    with (
        psycopg.connect(url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as caught,
    ):
        conn.execute(statement)
    return str(caught.value)


def test_the_workers_role_reads_and_writes_rows_and_makes_temp_tables(postgres, db_conn):
    with psycopg.connect(postgres.workers_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (WORKERS,)
        artist = conn.execute("INSERT INTO artists (name) VALUES ('A') RETURNING id").fetchone()[0]
        conn.execute("UPDATE artists SET name = 'B' WHERE id = %s", (artist,))
        assert conn.execute("SELECT name FROM artists").fetchall() == [("B",)]
        conn.execute("DELETE FROM artists WHERE id = %s", (artist,))
        conn.execute("CREATE TEMP TABLE scratch (id integer)")  # the insert stage's incoming_tracks
        conn.execute("SELECT setval('artists_id_seq', 10)")
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] >= 9


@pytest.mark.parametrize("statement", SCHEMA_CHANGES)
def test_the_workers_role_cannot_change_the_schema(postgres, services_up, statement):
    error = refused(postgres.workers_url, statement)
    assert "permission denied" in error or "must be owner" in error, error


def test_the_command_run_as_the_workers_role_refuses_to_migrate_naming_the_owner(services_up):
    proc = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), "db", "upgrade"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "permission denied for schema public" in proc.stderr and OWNER in proc.stderr, proc.stderr


def test_the_owner_owns_the_database_and_every_object_and_the_workers_role_nothing(postgres, db_conn):
    objects = db_conn.execute(OWNERS_SQL).fetchall()
    assert {kind for kind, _, _ in objects} >= {"r", "S", "i", "v"}  # tables, sequences, indexes, a view
    assert [(name, owner) for _, name, owner in objects if owner != OWNER] == []
    assert db_conn.execute(
        "SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()"
    ).fetchone() == (OWNER,)
    # Objects the workers' role owns, but for the insert stage's temp table (its session's own, gone
    # with it: a worker that upserted a known path still holds one).
    owned = (
        "SELECT count(*) FROM pg_shdepend d WHERE d.deptype = 'o' AND d.refobjid = %s::regrole "
        "AND NOT (d.classid = 'pg_class'::regclass AND EXISTS "
        "(SELECT 1 FROM pg_class c WHERE c.oid = d.objid AND c.relpersistence = 't'))"
    )
    assert db_conn.execute(owned, (WORKERS,)).fetchone() == (0,)
    # And a second run of the role's SQL finds nothing to change (a deployment's second run).
    assert services.apply_database_roles(postgres.url) is False


def test_a_database_of_the_releases_before_moves_to_the_owner_keeping_every_row_and_id(postgres, db_conn):
    db_conn.execute(f"DROP DATABASE IF EXISTS {OLD_LAYOUT} WITH (FORCE)")
    # As releases before 0.4.0 made it: the workers' role owns the database and migrates it.
    db_conn.execute(f"CREATE DATABASE {OLD_LAYOUT} OWNER {WORKERS} TEMPLATE template0 ENCODING 'UTF8'")
    workers_url = postgres.url_for(WORKERS, OLD_LAYOUT)
    superuser_url = postgres.url_for("postgres", OLD_LAYOUT)
    try:
        db.upgrade(workers_url)
        with psycopg.connect(workers_url) as conn:
            conn.execute("INSERT INTO artists (name) VALUES ('A'), ('B'), ('C'), ('D')")
            conn.execute("DELETE FROM artists WHERE name = 'B'")  # a gap in the ids
            conn.execute(
                "INSERT INTO albums (title, albumartist_id) SELECT 'Album of ' || name, id FROM artists"
            )
        with psycopg.connect(superuser_url) as conn:
            before = conn.execute(OWNERS_SQL).fetchall()
            assert {owner for _, _, owner in before} == {WORKERS}
            rows = {
                table: conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
                for table in ("artists", "albums")
            }

        assert services.apply_database_roles(superuser_url) is True
        assert services.apply_database_roles(superuser_url) is False  # the next deployment's run

        with psycopg.connect(superuser_url) as conn:
            after = conn.execute(OWNERS_SQL).fetchall()
            assert after == [(kind, name, OWNER) for kind, name, _ in before]
            assert conn.execute(
                "SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()"
            ).fetchone() == (OWNER,)
            for table, kept in rows.items():
                assert conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall() == kept
        with psycopg.connect(workers_url) as conn:
            # The sequences moved with their tables: ids go on after the last one.
            new = conn.execute("INSERT INTO artists (name) VALUES ('E') RETURNING id").fetchone()[0]
            assert new == max(row[0] for row in rows["artists"]) + 1
        for statement in ("DROP TABLE tracks", "CREATE TABLE intruder (id integer)", "TRUNCATE artists"):
            error = refused(workers_url, statement)
            assert "permission denied" in error or "must be owner" in error, error

        # The owner migrates from now on; what it creates the workers may read and write at once.
        owner_url = postgres.url_for(OWNER, OLD_LAYOUT)
        assert db.upgrade(owner_url) == []
        with psycopg.connect(owner_url) as conn:
            conn.execute("CREATE TABLE later (id bigserial PRIMARY KEY, note text)")
        with psycopg.connect(workers_url) as conn:
            conn.execute("INSERT INTO later (note) VALUES ('a future migration''s table')")
            assert conn.execute("SELECT id, note FROM later").fetchall() == [
                (1, "a future migration's table")
            ]
    finally:
        db_conn.execute(f"DROP DATABASE IF EXISTS {OLD_LAYOUT} WITH (FORCE)")


def test_a_dump_restored_as_the_owner_keeps_the_workers_privileges(postgres, db_conn, tmp_path):
    """What soniquebay-db restore does (roles/postgresql/files/soniquebay-db): pg_restore --no-owner
    --role=<owner> into a database the owner owns. The dump carries the GRANTs and the default
    privileges; the database-level grants come back with the role's SQL run after the restore."""
    db_conn.execute(f"DROP DATABASE IF EXISTS {RESTORED} WITH (FORCE)")
    dump = services.shared_tempdir("soniquebay-dump-") / "soniquebay.dump"
    dump.parent.chmod(0o777)
    address = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres"]
    try:
        run = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*run, str(services.PG_BIN / "pg_dump"), *address, "--format=custom", f"--file={dump}",
             "soniquebay"],
            check=True,
        )  # fmt: skip
        db_conn.execute(f"CREATE DATABASE {RESTORED} OWNER {OWNER} TEMPLATE template0 ENCODING 'UTF8'")
        subprocess.run(
            [*run, str(services.PG_BIN / "pg_restore"), *address, "--exit-on-error", "--single-transaction",
             "--no-owner", f"--role={OWNER}", f"--dbname={RESTORED}", str(dump)],
            check=True,
        )  # fmt: skip
        superuser_url = postgres.url_for("postgres", RESTORED)
        with psycopg.connect(superuser_url) as conn:
            assert {owner for _, _, owner in conn.execute(OWNERS_SQL).fetchall()} == {OWNER}
            with psycopg.connect(postgres.url) as original:
                assert dict(conn.execute(ACL_SQL).fetchall()) == dict(original.execute(ACL_SQL).fetchall())
            defaults = (
                "SELECT defaclrole::regrole::text, defaclobjtype::text, defaclacl::text FROM pg_default_acl"
            )
            with psycopg.connect(postgres.url) as original:
                assert sorted(conn.execute(defaults).fetchall()) == sorted(
                    original.execute(defaults).fetchall()
                )
        # The database's own grants are not in a dump (no --create): the role's SQL adds them.
        assert services.apply_database_roles(superuser_url) is True
        assert services.apply_database_roles(superuser_url) is False
        with psycopg.connect(postgres.url_for(WORKERS, RESTORED)) as conn:
            conn.execute("INSERT INTO genres (name) VALUES ('restored')")
            conn.execute("CREATE TEMP TABLE scratch (id integer)")
        error = refused(postgres.url_for(WORKERS, RESTORED), "DROP TABLE tracks")
        assert "must be owner" in error, error
    finally:
        db_conn.execute(f"DROP DATABASE IF EXISTS {RESTORED} WITH (FORCE)")
        subprocess.run(["rm", "-rf", str(dump.parent)], check=False)
