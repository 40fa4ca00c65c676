"""A small Prometheus exporter for what Flower cannot see: queue depth and the age of the oldest
unfinished work per queue, running scan sessions and how long since they last progressed, and
library totals. Text exposition format, served by the standard library."""

from __future__ import annotations

import logging
import math
import platform
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import redis

from backend_worker import __version__, delivery, library
from backend_worker.config import broker_client, settings
from backend_worker.pipeline import QUEUES, STAGE_QUEUES

log = logging.getLogger(__name__)

HELP = {
    "soniquebay_up": ("gauge", "1 when the exporter could read both Redis and PostgreSQL."),
    "soniquebay_build_info": (
        "gauge",
        "Always 1; the version of SoniqueBay this exporter runs and its Python version, as labels.",
    ),
    "soniquebay_queue_messages": ("gauge", "Messages waiting in the queue (not yet taken by a worker)."),
    "soniquebay_queue_oldest_unfinished_seconds": (
        "gauge",
        "Age of the oldest unit of work sent to the queue and not finished (0 when none).",
    ),
    "soniquebay_scan_sessions_running": ("gauge", "Scan sessions with status running."),
    "soniquebay_scan_session_stalled_seconds": (
        "gauge",
        "Seconds since the least recently progressing running session last progressed (0 when none).",
    ),
    "soniquebay_units_resent_total": (
        "counter",
        "Units of work sent again because their message was lost (a worker killed, a broker restart).",
    ),
    "soniquebay_last_completed_scan_age_seconds": (
        "gauge",
        "Seconds since a session over the whole library root last completed (manual or scheduled; the "
        "watch's sessions over changed folders do not count); +Inf when none did.",
    ),
    "soniquebay_library_items": (
        "gauge",
        "Rows in the library by kind (tracks: files present; missing: tracks whose file is gone).",
    ),
    "soniquebay_tracks_identity_total": (
        "counter",
        "What closed scan sessions did to track identities: moved (a file found at a new path kept its "
        "track), returned (a missing track's file came back), missing (marked missing), purged.",
    ),
    "soniquebay_file_errors": ("gauge", "Files and folders recorded as errors."),
    "soniquebay_backup_last_success_timestamp_seconds": (
        "gauge",
        "When the last good database backup (soniquebay-backup.service) finished, Unix time; 0 when none.",
    ),
    "soniquebay_backup_last_failure_timestamp_seconds": (
        "gauge",
        "When the last failed database backup finished, Unix time; 0 when none.",
    ),
    "soniquebay_backup_age_seconds": (
        "gauge",
        "Age of the last good database backup; when there is none yet, time since backups began "
        "(the schema that records them was applied).",
    ),
    "soniquebay_backup_size_bytes": ("gauge", "Size of the last good database backup's dump."),
    "soniquebay_scrape_duration_seconds": ("gauge", "Time this scrape took."),
}


def build_info_sample() -> tuple[str, dict[str, str], float]:
    """The release this exporter runs (the app's venv on its host) and its Python: always 1, so a
    dashboard or an alert can join on it and an upgrade shows as a change of labels."""
    return ("soniquebay_build_info", {"version": __version__, "python": platform.python_version()}, 1)


def collect(
    broker: redis.Redis, conn: psycopg.Connection, library_roots: tuple[str, ...] = ()
) -> list[tuple[str, dict[str, str], float]]:
    samples: list[tuple[str, dict[str, str], float]] = []
    for queue in QUEUES:
        samples.append(("soniquebay_queue_messages", {"queue": queue}, broker.llen(queue)))
    oldest = dict.fromkeys(QUEUES, 0.0)
    rows = conn.execute(
        "SELECT u.stage, extract(epoch FROM now() - min(u.created_at)) FROM scan_units u "
        "JOIN scan_sessions s ON s.id = u.session_id AND s.status = 'running' "
        "WHERE u.done_at IS NULL GROUP BY u.stage"
    ).fetchall()
    for stage, age in rows:
        queue = STAGE_QUEUES.get(stage)
        if queue:
            oldest[queue] = max(oldest[queue], float(age))
    for queue, age in oldest.items():
        samples.append(("soniquebay_queue_oldest_unfinished_seconds", {"queue": queue}, age))
    running, stalled = conn.execute(
        "SELECT count(*), coalesce(max(extract(epoch FROM now() - last)), 0) FROM ("
        "  SELECT greatest(s.started_at, max(u.done_at), max(u.created_at)) AS last"
        "  FROM scan_sessions s LEFT JOIN scan_units u ON u.session_id = s.id"
        "  WHERE s.status = 'running' GROUP BY s.id, s.started_at) AS r"
    ).fetchone()
    samples.append(("soniquebay_scan_sessions_running", {}, running))
    samples.append(("soniquebay_scan_session_stalled_seconds", {}, float(stalled)))
    resent = delivery.resent_counts(conn)
    for stage in [*STAGE_QUEUES, delivery.NEXT_STEP]:
        samples.append(("soniquebay_units_resent_total", {"stage": stage}, resent.get(stage, 0)))
    # A session over the root or a folder holding it; sessions over folders below it do not count.
    ages = conn.execute(
        "SELECT r.root, extract(epoch FROM now() - max(s.ended_at)) FROM unnest(%s::text[]) AS r(root) "
        "LEFT JOIN scan_sessions s ON s.status = 'completed' AND EXISTS "
        "  (SELECT 1 FROM unnest(s.roots) AS x(root) "
        "   WHERE r.root = x.root OR starts_with(r.root, x.root || '/')) "
        "GROUP BY r.root ORDER BY r.root",
        (list(library_roots),),
    ).fetchall()
    for root, age in ages:
        age = math.inf if age is None else float(age)
        samples.append(("soniquebay_last_completed_scan_age_seconds", {"root": root}, age))
    moved, returned, missing, purged = conn.execute(
        "SELECT coalesce(sum(moved), 0), coalesce(sum(returned), 0), coalesce(sum(missing), 0), "
        "coalesce(sum(purged), 0) FROM scan_sessions"
    ).fetchone()
    for event, total in (("moved", moved), ("returned", returned), ("missing", missing), ("purged", purged)):
        samples.append(("soniquebay_tracks_identity_total", {"event": event}, total))
    counts = library.totals(conn)
    errors = counts.pop("errors")
    for kind, value in counts.items():
        samples.append(("soniquebay_library_items", {"kind": kind}, value))
    samples.append(("soniquebay_file_errors", {}, errors))
    samples += backup_samples(conn)
    return samples


def backup_samples(conn: psycopg.Connection) -> list[tuple[str, dict[str, str], float]]:
    """The database host's backups, as its backup unit recorded them in `backups`."""
    good, size, failed, age = conn.execute(
        "SELECT extract(epoch FROM g.finished_at), g.bytes, "
        "  extract(epoch FROM (SELECT max(finished_at) FROM backups WHERE NOT ok)), "
        "  extract(epoch FROM now() - coalesce(g.finished_at, "
        "    (SELECT applied_at FROM schema_migrations WHERE name = '0009_backups.sql'), now())) "
        "FROM (SELECT 1) AS one LEFT JOIN LATERAL "
        "  (SELECT finished_at, bytes FROM backups WHERE ok ORDER BY finished_at DESC LIMIT 1) AS g ON true"
    ).fetchone()
    return [
        ("soniquebay_backup_last_success_timestamp_seconds", {}, float(good or 0)),
        ("soniquebay_backup_last_failure_timestamp_seconds", {}, float(failed or 0)),
        ("soniquebay_backup_age_seconds", {}, float(age)),
        ("soniquebay_backup_size_bytes", {}, float(size or 0)),
    ]


def render(samples: list[tuple[str, dict[str, str], float]]) -> str:
    lines, seen = [], set()
    for name, labels, value in samples:
        if name not in seen:
            kind, text = HELP[name]
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            seen.add(name)
        label_text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        number = _number(value)
        lines.append(f"{name}{{{label_text}}} {number}" if labels else f"{name} {number}")
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    """A sample value in full: timestamps and byte counts keep every digit (`:g` keeps six)."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def _label(value) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exporter:
    def __init__(self):
        conf = settings()
        self.broker = broker_client(conf, socket_timeout=5, socket_connect_timeout=5)
        self.database_url = conf.database_url
        self.library_roots = conf.library_roots
        self.conn: psycopg.Connection | None = None

    def scrape(self) -> str:
        started = time.monotonic()
        try:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self.conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)
            samples = collect(self.broker, self.conn, self.library_roots)
            samples[:0] = [("soniquebay_up", {}, 1), build_info_sample()]
        except (psycopg.Error, redis.RedisError) as exc:
            log.warning("scrape failed: %s", exc)
            samples = [("soniquebay_up", {}, 0), build_info_sample()]
        samples.append(("soniquebay_scrape_duration_seconds", {}, time.monotonic() - started))
        return render(samples)


def serve(address: str, port: int) -> None:
    exporter = Exporter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = exporter.scrape().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes every 15 s would flood the journal
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    server.serve_forever()
