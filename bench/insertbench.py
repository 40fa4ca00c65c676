"""Insert stage alone vs. a plain COPY of the same rows, on a database of its own.

Stage: what one ``insert.records`` task does, batch after batch (``SONIQUEBAY_INSERT_BATCH_ROWS``
records each, one transaction per batch): check the unit, take the batch's records out of
``record_buffer``, upsert artists, albums and genres, write the tracks (COPY for new paths,
INSERT ... ON CONFLICT for known ones), write their genres and credits, clear their error rows, mark the unit
done. The buffer is filled beforehand (the extract stage's work), untimed.

COPY: the same track rows (all columns, ids already known) and the same track_genres and
track_credits rows COPYed into empty tables defined like them (same columns, indexes and
unique keys; neither has foreign keys), in the same batches, one transaction per batch: the least
any importer must do to get those rows into PostgreSQL.
"""

from __future__ import annotations

import time
import uuid

import psycopg

from backend_worker import db, ledger, pipeline, record_buffer, sessions
from backend_worker.config import settings
from backend_worker.stages import fields, insert
from backend_worker.units.insert import collector_paused
from bench import stack

# The record's fields as tracks stores them (uuids read back as text), then the genres and credits.
_STORED = [name for name, _ in fields.COLUMNS]
RECORD_QUERY = f"""
SELECT {", ".join(f"t.{name}::text" if sql == "uuid" else f"t.{name}" for name, sql in fields.COLUMNS)},
       coalesce((SELECT array_agg(g.name ORDER BY tg.position) FROM track_genres tg
                 JOIN genres g ON g.id = tg.genre_id WHERE tg.track_id = t.id), '{{}}'),
       coalesce((SELECT json_agg(json_build_array(c.role, a.name, a.mb_key, c.subrole)
                                 ORDER BY c.role, c.position)
                 FROM track_credits c JOIN artists a ON a.id = c.artist_id
                 WHERE c.track_id = t.id), '[]'),
       coalesce((SELECT json_agg(json_build_array(a.name, a.mb_key) ORDER BY c.position)
                 FROM album_credits c JOIN artists a ON a.id = c.artist_id
                 WHERE c.album_id = t.album_id), '[]')
FROM tracks t ORDER BY t.path
"""
_CREDIT_FIELDS = {field.role: field for field in fields.CREDIT_FIELDS}


def _credit_lists(credits: list, album_artists: list) -> dict:
    """A record's credit lists (and their MusicBrainz ids) back from its stored credits."""
    lists: dict = {field.name: [] for field in fields.CREDIT_FIELDS}
    lists.update({field.ids: [] for field in fields.CREDIT_FIELDS if field.ids})
    rows = [(role, name, mb, subrole) for role, name, mb, subrole in credits]
    rows += [(fields.ALBUM_ROLE, name, mb, "") for name, mb in album_artists]
    for role, name, mb, subrole in rows:
        field = _CREDIT_FIELDS[role]
        lists[field.name].append([name, subrole] if field.type is fields.PERFORMERS else name)
        if field.ids and mb:
            lists[field.ids].append(mb)
    return lists


def records_from_library(conn: psycopg.Connection) -> list[dict]:
    """The records the pipeline stored (as extract produces them) from a filled library."""
    out = []
    for row in conn.execute(RECORD_QUERY):
        stored = dict(zip([*_STORED, "genres", "credits", "album_artists"], row, strict=True))
        stored["genres"] = list(stored["genres"])
        stored["mtime"] = stored["mtime_ns"] / 1e9
        stored.update(_credit_lists(stored.pop("credits"), stored.pop("album_artists")))
        out.append({key: stored[key] for key in fields.RECORD_KEYS})
    return out


_TABLES = (
    "track_genres, track_credits, album_credits, tracks, albums, artists, genres, file_errors, "
    "record_buffer, scan_units, scan_sessions"
)
# The rows that hang off a track, COPYed after it by the reference: (table, columns).
_LINKS = (
    ("track_genres", "track_id, genre_id, position"),
    ("track_credits", "track_id, role, position, artist_id, subrole"),
)


def _reset(conn: psycopg.Connection) -> None:
    copies = ", ".join(f"copy_{table}" for table, _ in _LINKS)
    conn.execute(f"TRUNCATE {_TABLES}, copy_tracks, {copies} RESTART IDENTITY CASCADE")
    conn.execute("CHECKPOINT")


class _Clock:
    """Wall time, this process's CPU time and the PostgreSQL backend's CPU time."""

    def __init__(self, conn: psycopg.Connection):
        self.backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def __enter__(self):
        self.wall = time.perf_counter()
        self.client = time.process_time()
        self.server = stack.cpu_seconds(self.backend)
        return self

    def __exit__(self, *exc_info):
        self.wall = time.perf_counter() - self.wall
        self.client = time.process_time() - self.client
        self.server = stack.cpu_seconds(self.backend) - self.server
        return False


def _stage(conn: psycopg.Connection, records: list[dict], batch_rows: int) -> tuple[_Clock, int, list]:
    chunk_files = settings().extract_chunk_files  # records per buffered extract chunk
    session_id = sessions.create_session(conn, ["/bench"])
    for i in range(0, len(records), chunk_files):
        chunk = records[i : i + chunk_files]
        ledger.register_units(conn, session_id, [pipeline.Unit(f"x{i}/c", "collect")])
        record_buffer.buffer_records(conn, session_id, f"x{i}/c", chunk)
    batch_ids = [b.id for b in record_buffer.cut_batches(conn, session_id, batch_rows, flush=True)]
    conn.execute("CHECKPOINT")
    written = 0
    with _Clock(conn) as clock:
        for batch_id in batch_ids:  # the body of units.insert.insert_batch
            with collector_paused(), conn.transaction():
                if ledger.unit_done(conn, session_id, batch_id) or not sessions.is_running(conn, session_id):
                    continue
                rows = record_buffer.take_batch(conn, session_id, batch_id)
                n = insert.upsert_records(conn, rows, session_id)
                ledger.finish_unit(conn, session_id, batch_id, {"inserted": n})
                written += n
    columns = ", ".join(insert.TRACK_COLUMNS)
    tracks = conn.execute(f"SELECT id, {columns} FROM tracks ORDER BY path").fetchall()
    links = [conn.execute(f"SELECT {cols} FROM {table} ORDER BY 1, 3").fetchall() for table, cols in _LINKS]
    return clock, written, [tracks, links, len(batch_ids)]


def _copy(conn: psycopg.Connection, tracks: list[tuple], links: list[list[tuple]], batch_rows: int) -> _Clock:
    by_track: list[dict[int, list[tuple]]] = [{} for _ in _LINKS]
    for rows, grouped in zip(links, by_track, strict=True):
        for row in rows:
            grouped.setdefault(row[0], []).append(row)
    conn.execute("CHECKPOINT")
    columns = ", ".join(insert.TRACK_COLUMNS)
    with _Clock(conn) as clock:
        for i in range(0, len(tracks), batch_rows):
            batch = tracks[i : i + batch_rows]
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY copy_tracks (id, {columns}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
                for (table, cols), grouped in zip(_LINKS, by_track, strict=True):
                    with cur.copy(f"COPY copy_{table} ({cols}) FROM STDIN") as copy:
                        for row in batch:
                            for link_row in grouped.get(row[0], ()):
                                copy.write_row(link_row)
    return clock


def run(admin_url: str, records: list[dict], batch_rows: int, repeat: int = 2) -> dict:
    """Stage and COPY, alternately, `repeat` times each on emptied tables; best of each."""
    name = f"insertbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        db.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            # Like the real tables, which have no foreign keys either (migration 0006).
            conn.execute("CREATE TABLE copy_tracks (LIKE tracks INCLUDING ALL)")
            for table, _ in _LINKS:
                conn.execute(f"CREATE TABLE copy_{table} (LIKE {table} INCLUDING ALL)")
            stages, copies = [], []
            shape: list = []
            for _ in range(repeat):
                _reset(conn)
                clock, written, shape = _stage(conn, records, batch_rows)
                stages.append(clock)
                tracks, links, batches = shape
                conn.execute("TRUNCATE copy_tracks, " + ", ".join(f"copy_{table}" for table, _ in _LINKS))
                conn.execute("CHECKPOINT")
                copies.append(_copy(conn, tracks, links, batch_rows))
            tracks, links, batches = shape
            stage = min(stages, key=lambda c: c.wall)
            copy = min(copies, key=lambda c: c.wall)
            return {
                "rows": written,
                "genre_rows": len(links[0]),
                "credit_rows": len(links[1]),
                "batches": batches,
                "batch_rows": batch_rows,
                "stage_seconds": stage.wall,
                "copy_seconds": copy.wall,
                "stage_cpu": {"client": stage.client, "server": stage.server},
                "copy_cpu": {"client": copy.client, "server": copy.server},
                "stage_all": [c.wall for c in stages],
                "copy_all": [c.wall for c in copies],
            }
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
