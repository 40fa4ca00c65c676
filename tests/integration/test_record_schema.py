"""The field table against a real migrated PostgreSQL: the migrations' tracks table, insert's temp
table and rows written and read back all agree with backend_worker/stages/fields.py."""

from __future__ import annotations

import json
import zlib

import pytest

from backend_worker import ledger, pipeline, record_buffer, sessions
from backend_worker.stages import fields, insert
from backend_worker.stages.extract import read_record
from testkit import audio_fixtures as af

pytestmark = pytest.mark.integration

# Columns of tracks that belong to no record and are not written by insert.
TABLE_OWN = {
    "id": "bigint",
    "updated_at": "timestamp with time zone",
    "missing_since": "timestamp with time zone",
}


def column_types(conn, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    return dict(rows.fetchall())


def stored_row(conn, path: str) -> dict:
    """The tracks row of ``path`` as a record holds it (uuids as text, genres in order)."""
    selected = ", ".join(f"{name}::text" if sql == "uuid" else name for name, sql in fields.COLUMNS)
    cur = conn.execute(f"SELECT {selected} FROM tracks WHERE path = %s", (path,))
    row = dict(zip([name for name, _ in fields.COLUMNS], cur.fetchone(), strict=True))
    genres = conn.execute(
        "SELECT g.name FROM track_genres tg JOIN genres g ON g.id = tg.genre_id "
        "JOIN tracks t ON t.id = tg.track_id WHERE t.path = %s ORDER BY tg.position",
        (path,),
    )
    row["genres"] = [name for (name,) in genres]
    return row


def assert_stored(conn, record: dict) -> None:
    row = stored_row(conn, record["path"])
    assert row == {key: record[key] for key in row}, record["path"]


def upsert(conn, records) -> int:
    with conn.transaction():
        return insert.upsert_records(conn, records, None)


def test_the_migrated_tracks_table_has_the_tables_columns(db_conn):
    wanted = {name: sql for name, sql in fields.COLUMNS}
    tracks = column_types(db_conn, "tracks")
    assert {name: sql for name, sql in tracks.items() if name in fields.RECORD_KEYS} == wanted
    # Every other column is the table's own or one insert fills in itself.
    others = {name: sql for name, sql in tracks.items() if name not in wanted and name not in TABLE_OWN}
    assert set(others) == set(insert.TRACK_COLUMNS) - set(wanted)
    # The app's view of the present tracks has every column (a migration adding one recreates it).
    assert column_types(db_conn, "present_tracks") == tracks


def test_read_records_round_trip_through_tracks_rows_on_both_insert_paths(db_conn, tmp_path):
    paths = []
    for fmt in ("flac", "mp3", "m4a"):
        path = af.make_seed(fmt, tmp_path)
        af.write_tags(path, {**af.SAMPLE_TAGS, "cover": af.cover_jpeg()}, replace=True)
        paths.append(str(path))
    records = [read_record(path) for path in paths]
    assert upsert(db_conn, records) == 3  # new paths: COPY straight into tracks
    for record in records:
        assert_stored(db_conn, record)

    af.write_tags(paths[0], {"title": "Remaster", "genres": ["Jazz"], "bpm": None, "cover": None})
    records[0] = read_record(paths[0])
    assert upsert(db_conn, records) == 3  # known paths: the temp table and INSERT ... ON CONFLICT
    for record in records:
        assert_stored(db_conn, record)
    assert stored_row(db_conn, paths[0])["title"] == "Remaster"
    # The temp table the upsert used has the tracks columns insert writes, with their types.
    tracks = column_types(db_conn, "tracks")
    assert column_types(db_conn, "pg_temp.incoming_tracks") == {
        name: tracks[name] for name in insert.TRACK_COLUMNS
    }


def test_every_integer_no_column_can_hold_is_stored_as_unknown(db_conn, tmp_path):
    path = af.make_seed("flac", tmp_path)
    af.write_tags(path, af.SAMPLE_TAGS, replace=True)
    record = read_record(str(path))
    integers = [name for name, sql in fields.COLUMNS if sql == "integer"]
    upsert(db_conn, [{**record, **dict.fromkeys(integers, 2**40)}])
    assert_stored(db_conn, {**record, **dict.fromkeys(integers)})


# A record as the code before the field table buffered it (ledger's {"keys", "rows"} JSON,
# zlib-compressed): frozen here, so a buffer left by that version must still insert.
OLD_BUFFERED = {
    "keys": [
        "path", "size", "mtime", "mtime_ns", "title", "artist", "album", "albumartist", "composer",
        "initial_key", "genres", "year", "track", "tracktotal", "disc", "disctotal", "comp", "bpm",
        "length", "bitrate", "samplerate", "bitdepth", "channels", "format", "mb_trackid", "mb_albumid",
        "mb_artistid", "mb_albumartistid", "mb_releasegroupid", "rg_track_gain", "rg_track_peak",
        "rg_album_gain", "rg_album_peak", "has_cover",
    ],
    "rows": [
        [
            "/m/old/1.flac", 18009, 1796012581.06, 1796012581064886797, "Old", "Artist", "Album", None,
            None, "Am", ["Rock", "Pop"], 1999, 3, 10, 1, 2, True, 92, 1.0, 99248, 44100, 16, 2, "FLAC",
            "6b2a4f35-2f0d-4a25-9f4e-2a3d4c1b0e91", None, None, None, None, -6.5, 0.988553, None, None,
            True,
        ]
    ],
}  # fmt: skip


def test_a_record_buffered_before_the_field_table_still_inserts(db_conn):
    with db_conn.transaction():
        session = sessions.create_session(db_conn, ["/m"])
        ledger.register_units(db_conn, session, [pipeline.Unit("x0/c", "collect")])
        db_conn.execute(
            "INSERT INTO record_buffer (session_id, unit_id, sort_key, rows, payload) "
            "VALUES (%s, 'x0/c', '/m/old/1.flac', 1, %s)",
            (session, zlib.compress(json.dumps(OLD_BUFFERED).encode(), 1)),
        )
        (batch,) = record_buffer.cut_batches(db_conn, session, 100, flush=True)
        records = record_buffer.take_batch(db_conn, session, batch.id)
        assert insert.upsert_records(db_conn, records, session) == 1
    old = dict(zip(OLD_BUFFERED["keys"], OLD_BUFFERED["rows"][0], strict=True))
    assert_stored(db_conn, {**dict.fromkeys(fields.RECORD_KEYS), **old})  # fields added since: unknown
