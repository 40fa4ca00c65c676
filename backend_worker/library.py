"""What the tasks read of the library (tracks, albums) and the file error records they write: plain
functions of a connection. The tracks themselves are written by backend_worker.stages.insert."""

from __future__ import annotations

import os

import psycopg

from backend_worker.stages import insert


def totals(conn: psycopg.Connection) -> dict[str, int]:
    """What the library holds: tracks, albums, artists, genres, and file error records ("errors")."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM tracks), (SELECT count(*) FROM albums), "
        "(SELECT count(*) FROM artists), (SELECT count(*) FROM genres), (SELECT count(*) FROM file_errors)"
    ).fetchone()
    return dict(zip(("tracks", "albums", "artists", "genres", "errors"), row, strict=True))


def known_files(conn: psycopg.Connection, dirs: list[str]) -> dict[str, tuple[int, int]]:
    """path -> (mtime_ns, size) of the tracks and failed files in these folders."""
    rows = conn.execute(
        "SELECT path, mtime_ns, size FROM tracks WHERE dir = ANY(%(d)b) "
        "UNION ALL SELECT path, mtime_ns, size FROM file_errors "
        "WHERE stage <> 'scan' AND dir = ANY(%(d)b)",
        {"d": dirs},
    ).fetchall()
    # An error row comes last: it is the newer fact.
    return {path: (mtime_ns, size) for path, mtime_ns, size in rows}


def tracks_below(conn: psycopg.Connection, root: str) -> int:
    """How many tracks the library holds in this folder or below it."""
    return conn.execute(
        "SELECT count(*) FROM tracks WHERE dir = %s OR starts_with(dir, %s)", (root, root + "/")
    ).fetchone()[0]


def save_file_errors(conn: psycopg.Connection, session_id: str, stage: str, errors: list[dict]) -> None:
    """Record why these files could not be read or stored ({"path", "error"}, optionally "dir",
    "size", "mtime_ns"); a file's newer error replaces its older one."""
    if not errors:
        return
    conn.execute(
        "INSERT INTO file_errors (path, dir, size, mtime_ns, reason, stage, session_id) "
        "SELECT *, %s, %s FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::text[]) "
        "ON CONFLICT (path) DO UPDATE SET dir = EXCLUDED.dir, size = EXCLUDED.size, "
        "mtime_ns = EXCLUDED.mtime_ns, stage = EXCLUDED.stage, reason = EXCLUDED.reason, "
        "session_id = EXCLUDED.session_id, at = now()",
        (
            stage,
            session_id,
            [e["path"] for e in errors],
            [e.get("dir") or os.path.dirname(e["path"]) for e in errors],
            [e.get("size") for e in errors],
            [e.get("mtime_ns") for e in errors],
            [e["error"] for e in errors],
        ),
    )


def file_errors(conn: psycopg.Connection) -> list[tuple]:
    """(path, stage, reason, at, session_id) of every error record, by path."""
    return conn.execute(
        "SELECT path, stage, reason, at, session_id FROM file_errors ORDER BY path"
    ).fetchall()


def unreadable_files(conn: psycopg.Connection) -> list[str]:
    """Files that could not be read or stored (not the problems found while listing folders)."""
    return [path for (path,) in conn.execute("SELECT path FROM file_errors WHERE stage <> 'scan'")]


def forget_file_errors(conn: psycopg.Connection, paths: list[str]) -> None:
    conn.execute("DELETE FROM file_errors WHERE path = ANY(%b)", (paths,))


def forget_listing_errors(conn: psycopg.Connection, dirs: list[str]) -> None:
    """Problems found while listing these folders: every scan of a folder finds them afresh."""
    conn.execute("DELETE FROM file_errors WHERE stage = 'scan' AND dir = ANY(%b)", (dirs,))


# Folders under the session's roots that hold rows of `table` but were not reached by the session.
# A set difference (hashed or sorted), not an anti-join: the planner cannot know how many folders
# the running session listed (its rows are newer than the statistics), guessed one, and picked a
# nested loop that compared every track with every listed folder (3.8 s for 20,000 tracks).
# Over all the table's folders, unfiltered: an index-only scan of tracks_dir once the table is
# vacuumed (a rescan: 21 ms per 200,000 tracks); leaving out the session's own tracks would read
# the table instead (120 ms), to save 40 ms in a first scan only.
_UNREACHED_DIRS = (
    "SELECT k.dir FROM (SELECT DISTINCT dir FROM {table}) AS k, unnest(%(roots)s::text[]) AS root "
    " WHERE k.dir = root OR starts_with(k.dir, root || '/') "
    "EXCEPT SELECT dir FROM session_dirs WHERE session_id = %(s)s"
)
# ... and not below a folder that could not be listed (its contents are unknown, so kept).
_NOT_BELOW_UNLISTED = (
    "NOT EXISTS (SELECT 1 FROM session_dirs d WHERE d.session_id = %(s)s AND NOT d.listed "
    "            AND starts_with({alias}.dir, d.dir || '/'))"
)
# A track written after this session started was written by another session that saw the file
# later than this one did (a watched folder scanned while a full scan ran): it stays.
_STARTED = "SELECT started_at FROM scan_sessions WHERE id = %(s)s"


def remove_gone(conn: psycopg.Connection, session_id: str, roots: list[str]) -> int:
    """At the end of a session: remove the tracks of files that vanished and of folders the session
    did not reach (and their error records), then albums and artists left without tracks."""
    # Taken first: the files found gone are then chosen after every batch in flight has committed.
    insert.lock_library(conn, exclusive=True)
    gone = [
        r[0]
        for r in conn.execute(
            "SELECT path FROM session_vanished v WHERE session_id = %(s)s AND NOT EXISTS "
            f"  (SELECT 1 FROM tracks n WHERE n.path = v.path AND n.updated_at > ({_STARTED})) "
            "UNION SELECT t.path FROM tracks t "
            f"JOIN ({_UNREACHED_DIRS.format(table='tracks')}) AS g ON g.dir = t.dir "
            f"WHERE {_NOT_BELOW_UNLISTED.format(alias='t')} AND t.updated_at < ({_STARTED})",
            {"s": session_id, "roots": roots},
        ).fetchall()
    ]
    removed = insert.remove_tracks(conn, gone)
    conn.execute(
        f"DELETE FROM file_errors e USING ({_UNREACHED_DIRS.format(table='file_errors')}) AS g "
        f"WHERE e.dir = g.dir AND {_NOT_BELOW_UNLISTED.format(alias='e')}",
        {"s": session_id, "roots": roots},
    )
    insert.remove_orphans(conn)
    return removed


def session_album_ids(conn: psycopg.Connection, session_id: str) -> list[int]:
    """The albums of the tracks this session wrote."""
    rows = conn.execute(
        "SELECT DISTINCT album_id FROM tracks WHERE session_id = %s ORDER BY 1", (session_id,)
    ).fetchall()
    return [album_id for (album_id,) in rows]


def cover_sources(conn: psycopg.Connection, album_ids: list[int]) -> list[tuple[int, str, str | None]]:
    """(album id, a folder of its tracks, a track with an embedded picture or None) per album."""
    return conn.execute(
        "SELECT album_id, min(dir), min(path) FILTER (WHERE has_cover) FROM tracks "
        "WHERE album_id = ANY(%b) GROUP BY album_id ORDER BY album_id",
        (album_ids,),
    ).fetchall()


def set_album_covers(conn: psycopg.Connection, covers: dict[int, str | None]) -> None:
    """album id -> the file name of its cover in the covers folder (None: it has none)."""
    conn.execute(
        "UPDATE albums a SET cover_hash = v.name FROM unnest(%b::bigint[], %b::text[]) AS v(id, name) "
        "WHERE a.id = v.id AND a.cover_hash IS DISTINCT FROM v.name",
        (list(covers), list(covers.values())),
    )
