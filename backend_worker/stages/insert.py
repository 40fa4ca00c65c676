"""Insert stage: idempotent bulk upsert of extracted records into the normalised library.

One call is one transaction's worth of work on the given connection: the caller owns the
transaction, so a redelivered batch either finds its work done or redoes all of it.
Keys are always taken in sorted order so concurrent batches lock rows in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from operator import itemgetter

import psycopg

from backend_worker.stages import fields

# The tracks columns, shared by the temp table, COPY and the upsert: the record's own (the field
# table's, path first), then those this stage fills in.
_FILLED_HERE = (
    ("dir", "text"),
    ("artist_id", "bigint"),
    ("album_id", "bigint"),
    ("session_id", "uuid"),
    ("record_version", "smallint"),
)
_COLUMN_TYPES = (*fields.COLUMNS, *_FILLED_HERE)
TRACK_COLUMNS = tuple(name for name, _ in _COLUMN_TYPES)
_RECORD_COLUMNS = tuple(name for name, _ in fields.COLUMNS)  # taken from the record as they are
_record_values = itemgetter(*_RECORD_COLUMNS)
assert TRACK_COLUMNS[0] == "path"  # the upsert's conflict key, the COPY rows' first value

_TEMP_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS incoming_tracks ("
    + ", ".join(f"{name} {sql_type}" for name, sql_type in _COLUMN_TYPES)
    + ") ON COMMIT DELETE ROWS"
)

_UPSERT_TRACKS = (
    f"INSERT INTO tracks ({', '.join(TRACK_COLUMNS)}) "
    f"SELECT {', '.join(TRACK_COLUMNS)} FROM incoming_tracks ORDER BY path "
    "ON CONFLICT (path) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in TRACK_COLUMNS[1:])
    + ", missing_since = NULL, updated_at = now() RETURNING id, path"
)


# Albums: keyed by (album artist, title, MusicBrainz id or ''); the facts come from the records.
_ALBUM_KEY = (("albumartist_id", "bigint"), ("title", "text"), ("mb_key", "text"))
_ALBUM_COLUMNS = (*_ALBUM_KEY, *((name, dict(fields.COLUMNS)[name]) for name in fields.ALBUM_FACTS))
_UPSERT_ALBUMS = (
    f"INSERT INTO albums ({', '.join(name for name, _ in _ALBUM_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%b::{sql_type}[]' for _, sql_type in _ALBUM_COLUMNS)}) "
    "ORDER BY 1, 2, 3 "
    f"ON CONFLICT ({', '.join(name for name, _ in _ALBUM_KEY)}) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in fields.ALBUM_FACTS)
    + f" WHERE ({', '.join(f'albums.{name}' for name in fields.ALBUM_FACTS)}) "
    f"IS DISTINCT FROM ({', '.join(f'EXCLUDED.{name}' for name in fields.ALBUM_FACTS)})"
)

# tracks and track_genres keep no foreign keys (migration 0006: their per-row checks were most of
# PostgreSQL's work in a bulk insert). What they protected is kept by this lock instead: a batch
# writing rows that point at artists, albums and genres holds it shared; removing tracks, albums,
# artists or genres holds it exclusively, so a clean-up never deletes an album a batch is about to
# point at, and sees every batch committed before it.
LIBRARY_LOCK = 0x53_42_4C_42  # "SBLB"


def lock_library(conn: psycopg.Connection, *, exclusive: bool) -> None:
    """Take the library lock (see LIBRARY_LOCK) until the transaction ends."""
    if exclusive:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LIBRARY_LOCK,))
    else:
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (LIBRARY_LOCK,))


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INTEGER_COLUMNS = fields.INTEGER_COLUMNS


def _storable(record: dict) -> dict:
    """A tag number no integer column can hold (a year of 99999999999) is stored as unknown."""
    get = record.get
    bad = [c for c in _INTEGER_COLUMNS if (v := get(c)) is not None and not _INT32_MIN <= v <= _INT32_MAX]
    return {**record, **dict.fromkeys(bad)} if bad else record


def _dedupe_by_path(records: list[dict]) -> list[dict]:
    by_path = {}
    for r in records:
        by_path[r["path"]] = r
    return [by_path[p] for p in sorted(by_path)]


def upsert_records(
    conn: psycopg.Connection, records: list[dict], session_id: str | None, tally: dict | None = None
) -> int:
    """Write records (as `extract` produces them); returns the number of tracks written. `tally`
    gets "returned" added: tracks marked missing whose file is back (read again, at their path)."""
    records = _dedupe_by_path([_storable(r) for r in records])
    if not records:
        return 0
    lock_library(conn, exclusive=False)
    cur = conn.cursor()

    # Artists: the display ones and every credited one.
    keys_of = [fields.artist_keys(r) for r in records]
    credits_of = [fields.track_credits(r) for r in records]
    album_credits_of = [fields.album_credits(r) for r in records]
    wanted = {key for keys in keys_of for key in keys}
    for credits, album_keys in zip(credits_of, album_credits_of, strict=True):
        wanted.update([credit[2] for credit in credits])
        wanted.update(album_keys)
    wanted_artists = sorted(wanted)
    names, mbs = [k[0] for k in wanted_artists], [k[1] for k in wanted_artists]
    cur.execute(
        "INSERT INTO artists (name, mb_key) SELECT * FROM unnest(%b::text[], %b::text[]) "
        "ORDER BY 1, 2 ON CONFLICT (name, mb_key) DO NOTHING",
        (names, mbs),
    )
    # Ids only, in the keys' order: every key is there now (the library lock keeps clean-ups out).
    cur.execute(
        "SELECT a.id FROM unnest(%b::text[], %b::text[]) WITH ORDINALITY AS w(name, mb_key, n) "
        "JOIN artists a USING (name, mb_key) ORDER BY w.n",
        (names, mbs),
        prepare=False,  # planned for the table as it is now (see _known_paths)
    )
    artist_ids = dict(zip(wanted_artists, [id_ for (id_,) in cur.fetchall()], strict=True))

    # Albums: one row per key; attributes (and artists) from the last record of the batch that has them.
    albums: dict[tuple[int, str, str], dict] = {}
    album_artists: dict[tuple[int, str, str], list[int]] = {}
    for r, (_, albumartist_key), album_keys in zip(records, keys_of, album_credits_of, strict=True):
        title, mb_key = fields.album_title_and_key(r)
        key = (artist_ids[albumartist_key], title, mb_key)
        albums[key] = fields.merge_album_facts(albums.get(key), r)
        credited = [artist_ids[k] for k in album_keys]
        if credited or key not in album_artists:
            album_artists[key] = credited or [key[0]]
    keys = sorted(albums)
    # (albumartist_id, title, mb_key) then the facts, in the order of fields.ALBUM_FACTS.
    columns = tuple(list(column) for column in zip(*(key + albums[key] for key in keys), strict=True))
    cur.execute(_UPSERT_ALBUMS, columns)
    cur.execute(
        "SELECT a.id FROM unnest(%b::bigint[], %b::text[], %b::text[]) WITH ORDINALITY "
        "AS w(albumartist_id, title, mb_key, n) JOIN albums a USING (albumartist_id, title, mb_key) "
        "ORDER BY w.n",
        columns[:3],
        prepare=False,  # planned for the table as it is now (see _known_paths)
    )
    album_ids = dict(zip(keys, [id_ for (id_,) in cur.fetchall()], strict=True))
    _write_album_credits(cur, {album_ids[key]: artists for key, artists in album_artists.items()})

    # Genres.
    genre_names = sorted({g for r in records for g in fields.genres(r)})
    genre_ids = {}
    if genre_names:
        cur.execute(
            "INSERT INTO genres (name) SELECT * FROM unnest(%b::text[]) ORDER BY 1 "
            "ON CONFLICT (name) DO NOTHING",
            (genre_names,),
        )
        cur.execute("SELECT id, name FROM genres WHERE name = ANY(%b)", (genre_names,))
        genre_ids = {name: id_ for id_, name in cur.fetchall()}

    # Tracks. New paths (an initial scan: nearly all) are COPYed straight into the table with ids
    # taken from its sequence; paths already there go through a temp table and INSERT ... ON
    # CONFLICT, which also serves when a concurrent session added one of the new paths meanwhile.
    paths = [r["path"] for r in records]
    known = _known_paths(cur, paths)
    if tally is not None:
        tally["returned"] = tally.get("returned", 0) + sum(known.values())

    def rows(selected: list[tuple[dict, tuple]]) -> Iterator[tuple]:
        """Track rows, made while COPY sends the ones before to the server."""
        dirname = os.path.dirname
        for r, (artist_key, albumartist_key) in selected:
            try:
                values = _record_values(r)
            except KeyError:  # a record missing some keys: absent means unknown
                values = tuple(map(r.get, _RECORD_COLUMNS))
            yield (
                *values,
                dirname(r["path"]),
                artist_ids[artist_key],
                album_ids[(artist_ids[albumartist_key], *fields.album_title_and_key(r))],
                session_id,
                fields.RECORD_VERSION,
            )

    pairs = list(zip(records, keys_of, strict=True))
    fresh = [pair for pair in pairs if pair[0]["path"] not in known]
    track_ids: dict[str, int] = {}
    if fresh:
        try:
            with conn.transaction():  # a savepoint: on a unique violation, upsert them all instead
                track_ids = _copy_new_tracks(cur, rows(fresh), len(fresh))
        except psycopg.errors.UniqueViolation:
            known = dict.fromkeys(paths, False)
    if known:
        updated = _upsert_tracks(cur, rows([pair for pair in pairs if pair[0]["path"] in known]))
        for table in ("track_genres", "track_credits"):  # written afresh below
            cur.execute(
                f"DELETE FROM {table} g USING unnest(%b::bigint[]) AS u(id) WHERE g.track_id = u.id",
                (list(updated.values()),),
            )
        track_ids.update(updated)

    if genre_ids:
        with cur.copy("COPY track_genres (track_id, genre_id, position) FROM STDIN") as copy:
            for r in records:
                genres = fields.genres(r)
                if genres:
                    track_id = track_ids[r["path"]]
                    for pos, g in enumerate(dict.fromkeys(genres)):
                        copy.write_row((track_id, genre_ids[g], pos))
    with cur.copy("COPY track_credits (track_id, role, position, artist_id, subrole) FROM STDIN") as copy:
        for r, credits in zip(records, credits_of, strict=True):
            if credits:
                track_id = track_ids[r["path"]]
                for role, position, key, subrole in credits:
                    copy.write_row((track_id, role, position, artist_ids[key], subrole))
    cur.execute(
        "DELETE FROM file_errors e USING unnest(%b::text[]) AS p(path) WHERE e.path = p.path", (paths,)
    )
    return len(records)


def _write_album_credits(cur: psycopg.Cursor, artists_of: dict[int, list[int]]) -> None:
    """Set each album's artists (album id -> artist ids in order). An upsert, in key order, then
    the positions past the new count: batches of one album may run at once (a delete and insert
    would make the second fail on the first's rows)."""
    rows = sorted(
        (album, pos, artist) for album, artists in artists_of.items() for pos, artist in enumerate(artists)
    )
    cur.execute(
        "INSERT INTO album_credits (album_id, position, artist_id) "
        "SELECT * FROM unnest(%b::bigint[], %b::smallint[], %b::bigint[]) "
        "ON CONFLICT (album_id, position) DO UPDATE SET artist_id = EXCLUDED.artist_id "
        "WHERE album_credits.artist_id <> EXCLUDED.artist_id",
        tuple(list(column) for column in zip(*rows, strict=True)),
    )
    cur.execute(
        "DELETE FROM album_credits c USING unnest(%b::bigint[], %b::smallint[]) AS n(album_id, count) "
        "WHERE c.album_id = n.album_id AND c.position >= n.count",
        (list(artists_of), [len(artists) for artists in artists_of.values()]),
    )


def _known_paths(cur: psycopg.Cursor, paths: list[str]) -> dict[str, bool]:
    """The paths already in `tracks`, each with whether its track is marked missing. Their
    folders are probed first, then only the paths of the folders that have tracks: a batch of new
    albums (an initial scan: all of them) costs one index probe per folder instead of one per path
    (~1.6 s of PostgreSQL per 200,000 new files)."""
    dirname = os.path.dirname
    # Joins with unnest, not "= ANY(array)": a generic plan may scan the table and search the
    # whole array for each row (4.5 s per 20,000 rows, seen). Never prepared either: once psycopg
    # prepares a statement, PostgreSQL may settle on a generic plan and keep it for the connection
    # until the table is next analysed; one made while the table held a few rows (a first scan, a
    # small folder tried first) hashes the whole table at every batch as the library grows (43 ms
    # per probe at 100,000 tracks instead of 0.3; 1.9 s per 200,000-file ingest, seen).
    # Binary parameters (%b): no text quoting of thousands of paths.
    cur.execute(
        "SELECT d.dir FROM unnest(%b::text[]) AS d(dir) "
        "WHERE EXISTS (SELECT FROM tracks t WHERE t.dir = d.dir)",
        (sorted({dirname(path) for path in paths}),),
        prepare=False,
    )
    known_dirs = {dir_ for (dir_,) in cur.fetchall()}
    if not known_dirs:
        return {}
    candidates = [path for path in paths if dirname(path) in known_dirs]
    cur.execute(
        "SELECT t.path, t.missing_since IS NOT NULL FROM unnest(%b::text[]) AS p(path) "
        "JOIN tracks t USING (path)",
        (candidates,),
        prepare=False,
    )
    return dict(cur.fetchall())


def _copy_new_tracks(cur: psycopg.Cursor, rows: Iterable[tuple], count: int) -> dict[str, int]:
    """COPY rows of paths not in the table yet, ids drawn from the table's sequence; path -> id."""
    # The sequence looked up once (an init plan), not for each id: 0.3 µs per id instead of 2.7.
    cur.execute(
        "SELECT nextval((SELECT pg_get_serial_sequence('tracks', 'id')::regclass)) "
        "FROM generate_series(1, %s)",
        (count,),
    )
    ids = [id_ for (id_,) in cur.fetchall()]
    track_ids = {}
    with cur.copy(f"COPY tracks (id, {', '.join(TRACK_COLUMNS)}) FROM STDIN") as copy:
        for id_, row in zip(ids, rows, strict=True):
            copy.write_row((id_, *row))
            track_ids[row[0]] = id_
    return track_ids


def _upsert_tracks(cur: psycopg.Cursor, rows: Iterable[tuple]) -> dict[str, int]:
    """COPY rows into a temp table, then one INSERT ... ON CONFLICT; path -> id."""
    cur.execute(_TEMP_TABLE)
    with cur.copy(f"COPY incoming_tracks ({', '.join(TRACK_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cur.execute(_UPSERT_TRACKS)
    return {path: id_ for id_, path in cur.fetchall()}


def remove_tracks(conn: psycopg.Connection, paths: list[str]) -> int:
    """Remove tracks (their genres, and error records) for files that are gone; their credits go
    with them (a trigger of migration 0010)."""
    if not paths:
        return 0
    lock_library(conn, exclusive=True)
    conn.execute(
        "DELETE FROM track_genres g USING tracks t WHERE g.track_id = t.id AND t.path = ANY(%s)", (paths,)
    )
    cur = conn.execute("DELETE FROM tracks WHERE path = ANY(%s)", (paths,))
    removed = cur.rowcount
    conn.execute("DELETE FROM file_errors WHERE path = ANY(%s)", (paths,))
    return removed


def remove_orphans(conn: psycopg.Connection) -> None:
    """Albums (their credits go with them, by trigger), artists and genres no track or album refers
    to or credits any more."""
    lock_library(conn, exclusive=True)
    conn.execute("DELETE FROM albums a WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.album_id = a.id)")
    conn.execute(
        "DELETE FROM artists ar WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.artist_id = ar.id) "
        "AND NOT EXISTS (SELECT 1 FROM albums al WHERE al.albumartist_id = ar.id) "
        "AND NOT EXISTS (SELECT 1 FROM track_credits tc WHERE tc.artist_id = ar.id) "
        "AND NOT EXISTS (SELECT 1 FROM album_credits ac WHERE ac.artist_id = ar.id)"
    )
    conn.execute(
        "DELETE FROM genres g WHERE NOT EXISTS (SELECT 1 FROM track_genres tg WHERE tg.genre_id = g.id)"
    )
