"""The `soniquebay` command: start and follow scans, inspect the library, read single files."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from backend_worker import __version__
from backend_worker.config import ConfigError, settings, url_without_credentials
from backend_worker.failures import one_line
from backend_worker.sessions import ORIGINS, normalise_roots

EXIT_FAILED = 1  # the scan session failed
EXIT_UNAVAILABLE = 2  # a service is unreachable or a setting is wrong


def fail(message: str, code: int = EXIT_UNAVAILABLE):
    click.echo(f"soniquebay: {message}", err=True)
    sys.exit(code)


class Cli(click.Group):
    """Turns unreachable services and bad settings into one line on stderr, not a traceback."""

    def invoke(self, ctx):
        import kombu.exceptions
        import psycopg
        import redis.exceptions

        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail(f"configuration error: {exc}")
        except psycopg.OperationalError as exc:
            database = url_without_credentials(settings().database_url)
            fail(f"cannot use PostgreSQL at {database}: {one_line(exc)}")
        except (kombu.exceptions.OperationalError, redis.exceptions.RedisError, ConnectionError) as exc:
            broker = url_without_credentials(settings().broker_url)
            fail(f"cannot use the broker at {broker}: {one_line(exc)}")


@click.group(cls=Cli)
@click.version_option(version=__version__, prog_name="soniquebay")
def main():
    """SoniqueBay library ingest. Settings come from SONIQUEBAY_* environment variables."""


@main.group()
def db():
    """Database schema."""


@db.command()
def upgrade():
    """Apply pending schema migrations (safe to run again)."""
    import psycopg

    from backend_worker import db as database

    try:
        applied = database.upgrade()
    except psycopg.errors.InsufficientPrivilege as exc:
        # The workers' role (the env file's) owns nothing: the schema is the owner role's.
        fail(
            f"{one_line(exc)}: migrations run as the database's owner role (soniquebay_owner), with "
            "SONIQUEBAY_DATABASE_URL naming it; the deployment's playbooks run them"
        )
    click.echo(f"applied {', '.join(applied)}" if applied else "schema is up to date")


def _check_broker() -> None:
    from backend_worker.app import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)


_WAIT_OPTION = click.option(
    "--wait", is_flag=True, help="Follow the session with progress bars until it closes."
)
_JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="With --wait, print the closed session as JSON."
)


@main.command()
@click.argument("paths", nargs=-1)
@_WAIT_OPTION
@_JSON_OPTION
@click.option(
    "--skip-busy",
    is_flag=True,
    help="Leave out folders a running session already scans; exit 0 when none is left.",
)
@click.option(
    "--origin",
    type=click.Choice(ORIGINS),
    default="manual",
    show_default=True,
    help="What started the scan, shown by `soniquebay status` (soniquebay-scan.timer passes timer).",
)
def scan(paths, wait, as_json, skip_busy, origin):
    """Scan library folders PATHS (default: SONIQUEBAY_LIBRARY_ROOTS) into the database."""
    roots = normalise_roots(paths or settings().library_roots)
    if not roots:
        fail("give at least one folder to scan, or set SONIQUEBAY_LIBRARY_ROOTS", EXIT_FAILED)
    _run_session(roots, wait, as_json, origin, skip_busy)


@main.command("retry-failed")
@_WAIT_OPTION
@_JSON_OPTION
def retry_failed(wait, as_json):
    """Read again the files that failed (after fixing permissions, or upgrading): forgets their
    error records and rescans the library folders that hold them (unchanged files are skipped)."""
    from backend_worker import db as database
    from backend_worker import library, sessions

    with database.connect() as conn:
        _require_schema(conn)
        failed = library.unreadable_files(conn)
        known_roots = sessions.scanned_roots(conn) + list(settings().library_roots)
    roots = normalise_roots(
        tuple(
            {
                next((r for r in known_roots if p.startswith(r.rstrip("/") + "/")), os.path.dirname(p))
                for p in failed
            }
        )
    )
    if not roots:
        click.echo("no failed files to retry")
        return
    with database.connect() as conn:
        library.forget_file_errors(conn, failed)
    click.echo(f"retrying {len(failed)} files under {', '.join(roots)}", err=True)
    _run_session(roots, wait, as_json)


def _run_session(
    roots: list[str], wait: bool, as_json: bool, origin: str = "manual", skip_busy: bool = False
) -> None:
    from backend_worker import db as database
    from backend_worker import ledger, sessions

    _check_broker()
    with database.connect() as conn:
        _require_schema(conn)
    started = sessions.start(roots, origin, skip_busy)
    for stale in started.stale:
        click.echo(f"session {stale} was abandoned (no progress); marked failed", err=True)
    for root, other in started.busy.items():
        click.echo(f"{root}: session {other} is already scanning it; not scanning it again", err=True)
    session_id = started.session_id
    if session_id is None:
        return
    if not wait:
        click.echo(session_id)
        return
    session = _follow(session_id, quiet=as_json)
    if as_json:
        click.echo(json.dumps(session, default=str))
    else:
        counts = " ".join(f"{k}={session['counts'][k]}" for k in ledger.COUNT_NAMES)
        click.echo(f"session {session_id} {session['status']}: {counts}")
        if session.get("message"):
            click.echo(f"  {session['message']}")
    _exit_now(EXIT_FAILED if session["status"] != "completed" else 0)


def _exit_now(code: int) -> None:
    """Exit without tearing the interpreter down: the session is closed and printed, every
    connection is closed, and unloading Celery, kombu and psycopg took longer (0.1-0.3 s) than
    an unchanged rescan of a 20,000-file library spends scanning."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _require_schema(conn) -> None:
    from backend_worker import db as database

    missing = database.pending_migrations(conn)
    if missing:
        fail(
            f"the database schema is not up to date ({len(missing)} migrations pending): run "
            "`soniquebay db upgrade`"
        )


class _NoProgress:
    """Stands in for rich's Progress with --json (importing rich costs a noticeable start-up time)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        pass


def _progress(quiet: bool):
    if quiet:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, transient=False)


def _follow(session_id: str, quiet: bool) -> dict:
    import psycopg

    from backend_worker import db as database
    from backend_worker import sessions

    conn = None
    outage_since = None
    next_stall_check = time.monotonic() + 10
    with _progress(quiet) as bar:
        found = bar.add_task("found", total=None)
        read = bar.add_task("extract", total=None)
        stored = bar.add_task("insert", total=None)
        while True:
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = database.connect(autocommit=True)
                    conn.execute(f"LISTEN {sessions.CLOSED_CHANNEL}")
                if time.monotonic() > next_stall_check:
                    # A session nothing can finish any more (its work was lost) ends here, failed,
                    # instead of being waited for forever.
                    next_stall_check = time.monotonic() + 10
                    sessions.fail_stale_sessions(conn)
                session = _session(conn, session_id)
                outage_since = None
            except psycopg.OperationalError as exc:
                # The workers retry through a database restart; so does the one watching them.
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > 600:
                    raise
                if not quiet:
                    bar.console.print(f"database unavailable, still waiting: {one_line(exc)}")
                time.sleep(2)
                continue
            c = session["counts"]
            to_read = max(c["discovered"] - c["unchanged"], 0)
            bar.update(found, completed=c["discovered"], description=f"found ({c['unchanged']} unchanged)")
            bar.update(read, completed=c["extracted"] + c["errors"], total=to_read or None)
            bar.update(stored, completed=c["inserted"], total=c["extracted"] or None)
            if session["status"] != "running":
                bar.update(found, total=c["discovered"])
                conn.close()
                return session
            # Quiet (--json), nothing shows progress: wake for the close's announcement, and look
            # now and then in case it was missed (a reconnect), without reading the counts 5x a second.
            _wait_for_close(conn, session_id, 2.0 if quiet else 0.2)


def _wait_for_close(conn, session_id: str, timeout: float) -> None:
    """Sleep until the next progress refresh, or until the session's close is announced (so the
    command ends as soon as the session does, not up to one refresh later)."""
    import psycopg

    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            for note in conn.notifies(timeout=left, stop_after=1):
                if note.payload == session_id:
                    return
    except psycopg.OperationalError:
        pass  # the next query reconnects


def _session(conn, session_id: str) -> dict:
    from backend_worker import sessions

    return _session_dict(conn, sessions.session_row(conn, session_id))


def _session_dict(conn, row) -> dict:
    from backend_worker import ledger

    session_id, roots, origin, status, phase, message, started, ended, *totals = row
    counts = dict(zip(ledger.COUNT_NAMES, totals, strict=True))
    if status == "running":
        counts = ledger.progress(conn, str(session_id))
    return {
        # Units sent again because their message was lost (backend_worker.delivery).
        "resent": ledger.resent_units(conn, str(session_id)),
        "id": str(session_id),
        "roots": list(roots),
        "origin": origin,
        "status": status,
        "phase": phase,
        "message": message,
        "started_at": started.isoformat(),
        "ended_at": ended.isoformat() if ended else None,
        "counts": counts,
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--limit", default=10, show_default=True, help="How many recent sessions to show.")
def status(as_json, limit):
    """Recent scan sessions and what the library holds."""
    from backend_worker import db as database
    from backend_worker import sessions
    from backend_worker.library import totals

    with database.connect(autocommit=True) as conn:
        _require_schema(conn)
        recent = [_session_dict(conn, row) for row in sessions.recent_session_rows(conn, limit)]
        library = totals(conn)
    if as_json:
        click.echo(json.dumps({"sessions": recent, "library": library}))
        return
    click.echo("library: " + ", ".join(f"{v} {k}" for k, v in library.items()))
    for s in recent:
        counts = " ".join(f"{k}={v}" for k, v in s["counts"].items())
        resent = f" resent={s['resent']}" if s["resent"] else ""
        line = (
            f"{s['started_at'][:19]} {s['id']} {s['status']:<9} {s['origin']:<6} {counts}{resent} "
            + " ".join(s["roots"])
        )
        click.echo(line)
        if s["message"]:
            click.echo(f"    {s['message']}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def errors(as_json):
    """Files (and folders) that could not be read, and why."""
    from backend_worker import db as database
    from backend_worker import library

    with database.connect(autocommit=True) as conn:
        _require_schema(conn)
        rows = library.file_errors(conn)
    for path, stage, reason, at, session_id in rows:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "path": path,
                        "stage": stage,
                        "error": reason,
                        "at": at.isoformat(),
                        "session": str(session_id) if session_id else None,
                    }
                )
            )
        else:
            click.echo(f"{path}\t{stage}: {reason}")


@main.command()
@click.option("--dry-run", is_flag=True, help="List the tracks that would be purged; change nothing.")
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Only tracks missing for longer than this (30d, 12h, 90m, 45s). Default: every missing track.",
)
def purge(dry_run, older_than):
    """Delete the tracks marked missing (their files gone) now, with their genres, and the albums
    and artists left without tracks. Scan sessions purge by themselves the tracks missing for
    longer than SONIQUEBAY_MISSING_RETENTION (30 days by default)."""
    from backend_worker import db as database
    from backend_worker import library
    from backend_worker.config import parse_duration

    try:
        seconds = parse_duration(older_than) if older_than else None
    except ValueError as exc:
        fail(f"--older-than {older_than!r}: {exc}", EXIT_FAILED)
    with database.connect() as conn:
        _require_schema(conn)
        if dry_run:
            tracks = library.expired_missing(conn, seconds)
        else:
            tracks = library.purge_missing(conn, seconds)
            conn.commit()
    for track_id, path, since in tracks:
        click.echo(f"{track_id}\t{path}\tmissing since {since.isoformat(timespec='seconds')}")
    click.echo(f"{'would purge' if dry_run else 'purged'} {len(tracks)} missing tracks", err=True)


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9808, show_default=True, help="Port to listen on.")
def exporter(address, port):
    """Serve Prometheus metrics (queue depth and age, stalled sessions, library totals) on /metrics."""
    from backend_worker.exporter import serve

    click.echo(f"serving metrics on http://{address}:{port}/metrics", err=True)
    serve(address, port)


@main.command()
def watch():
    """Follow the library roots (SONIQUEBAY_LIBRARY_ROOTS) with inotify: folders that changed are
    scanned once nothing changed for SONIQUEBAY_WATCH_QUIET_SECONDS (10 by default)."""
    import logging

    from backend_worker import watch as watcher

    conf = settings()
    if not conf.library_roots:
        fail("set SONIQUEBAY_LIBRARY_ROOTS to the folders to watch", EXIT_FAILED)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    watcher.run(list(conf.library_roots), conf.watch_quiet_seconds)


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per file (the default).")
def extract(files, as_json):
    """Read FILES as the pipeline would and print the records; broken files give an error line."""
    from backend_worker.stages.extract import ExtractError, read_record
    from backend_worker.stages.tags import name_splitter
    from backend_worker.stages.walk import printable

    name_splitter()  # bad separators settings: one configuration error, before any file
    for path in files:
        path = os.path.abspath(path)
        if not os.path.lexists(path):
            record = {"path": path, "error": "no such file"}
        else:
            try:
                record = read_record(path)
            except ExtractError as exc:
                record = {"path": path, "error": str(exc)}
        record["path"] = printable(record["path"])  # names on disk are bytes; JSON wants UTF-8
        click.echo(json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
