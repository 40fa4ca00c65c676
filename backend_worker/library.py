"""What the tasks read of the library (tracks, albums) and the file error records they write: plain
functions of a connection. The tracks themselves are written by backend_worker.stages.insert."""

from __future__ import annotations

import os

import psycopg

from backend_worker.stages import fields, insert, moves, walk

TOTAL_NAMES = ("tracks", "missing", "albums", "artists", "genres", "errors")


def totals(conn: psycopg.Connection) -> dict[str, int]:
    """What the library holds: tracks whose file is present, tracks marked missing, albums,
    artists, genres, and file error records ("errors")."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM tracks WHERE missing_since IS NULL), "
        "(SELECT count(*) FROM tracks WHERE missing_since IS NOT NULL), (SELECT count(*) FROM albums), "
        "(SELECT count(*) FROM artists), (SELECT count(*) FROM genres), (SELECT count(*) FROM file_errors)"
    ).fetchone()
    return dict(zip(TOTAL_NAMES, row, strict=True))


def known_files(conn: psycopg.Connection, dirs: list[str]) -> dict[str, tuple]:
    """path -> (mtime_ns, size, dev, ino) of the tracks and failed files in these folders, as
    walk.compare takes them: a track's dev is walk.MISSING_TRACK when it is marked missing and
    walk.NO_AUDIO_KEY when it has no audio key yet; a failed file's dev and ino are None. A track
    written by an older record layout (fields.RECORD_VERSION) has no mtime, so its file is read
    again."""
    rows = conn.execute(
        "SELECT path, CASE WHEN record_version < %(layout)s THEN NULL ELSE mtime_ns END, size, "
        "  CASE WHEN missing_since IS NOT NULL THEN %(missing)s "
        "  WHEN audio_key IS NULL THEN %(keyless)s ELSE dev END, ino FROM tracks WHERE dir = ANY(%(d)b) "
        "UNION ALL SELECT path, mtime_ns, size, NULL, NULL FROM file_errors "
        "WHERE stage <> 'scan' AND dir = ANY(%(d)b)",
        {
            "d": dirs,
            "missing": walk.MISSING_TRACK,
            "keyless": walk.NO_AUDIO_KEY,
            "layout": fields.RECORD_VERSION,
        },
    ).fetchall()
    # An error row comes last: it is the newer fact.
    return {path: (mtime_ns, size, dev, ino) for path, mtime_ns, size, dev, ino in rows}


def tracks_below(conn: psycopg.Connection, root: str) -> int:
    """How many tracks whose file is present the library holds in this folder or below it."""
    return conn.execute(
        "SELECT count(*) FROM tracks WHERE (dir = %s OR starts_with(dir, %s)) AND missing_since IS NULL",
        (root, root + "/"),
    ).fetchone()[0]


# ---------------------------------------------------------------------------------------------
# Identity: tracks whose file moved, came back, or is gone (docs/architecture.md).

_CANDIDATE_COLUMNS = (
    "t.id, t.path, t.dev, t.ino, t.size, t.mtime_ns, t.audio_key::text, t.missing_since IS NOT NULL"
)


# Tracks this session wrote are left out: it read their files present, so they are duplicates of
# what it finds now (a library of copies, hard-linked or not), and checking each path for nothing
# would cost a first ingest of such a library a stat per copy.
_NOT_WRITTEN_BY = "t.session_id IS DISTINCT FROM %(s)s::uuid"


def _candidates(conn: psycopg.Connection, session_id: str, column: str, sql_type: str, values: list):
    """Tracks (not written by this session) whose `column` holds one of `values`."""
    if not values:
        return []
    rows = conn.execute(
        f"SELECT {_CANDIDATE_COLUMNS} FROM unnest(%(v)b::{sql_type}[]) AS v({column}) "
        f"JOIN tracks t USING ({column}) WHERE {_NOT_WRITTEN_BY}",
        {"v": sorted(set(values)), "s": session_id},
        prepare=False,  # planned for the table as it is (see stages.insert._known_paths)
    ).fetchall()
    return [moves.Candidate(*row) for row in rows]


def tracks_by_inode(conn: psycopg.Connection, session_id: str, inodes: list[int]) -> list[moves.Candidate]:
    """Tracks whose file had one of these inode numbers (on any device: the caller compares)."""
    return _candidates(conn, session_id, "ino", "bigint", inodes)


def tracks_by_audio_key(conn: psycopg.Connection, session_id: str, keys: list[str]) -> list[moves.Candidate]:
    """Tracks whose audio key is one of these."""
    return _candidates(conn, session_id, "audio_key", "uuid", keys)


def move_tracks(conn: psycopg.Connection, found: list[moves.Move]) -> list[moves.Move]:
    """Give tracks their files' new paths (and identity). A move whose file is not the same file
    keeps the track's old size and time, so that the file is read (and the track updated) even if
    this session ends before: the caller reads it now. A track another session moved or removed
    meanwhile is left alone (its file then stays a new file). Returns the moves made."""
    if not found:
        return []
    found = sorted(found, key=lambda m: m.track.id)  # rows locked in one order by every session
    insert.lock_library(conn, exclusive=False)
    rows = conn.execute(
        "UPDATE tracks t SET path = m.path, dir = m.dir, dev = m.dev, ino = m.ino, "
        "  size = coalesce(m.size, t.size), mtime_ns = coalesce(m.mtime_ns, t.mtime_ns), "
        "  missing_since = NULL, updated_at = now() "
        "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], "
        "            %b::bigint[], %b::bigint[]) AS m(id, old, path, dir, dev, ino, size, mtime_ns) "
        "WHERE t.id = m.id AND t.path = m.old "
        "  AND NOT EXISTS (SELECT FROM tracks n WHERE n.path = m.path) "
        "RETURNING t.id",
        (
            [m.track.id for m in found],
            [m.track.path for m in found],
            [m.path for m in found],
            [os.path.dirname(m.path) for m in found],
            [m.dev for m in found],
            [m.ino for m in found],
            [m.size if m.same_file else None for m in found],
            [m.mtime_ns if m.same_file else None for m in found],
        ),
    ).fetchall()
    done = {track_id for (track_id,) in rows}
    made = [m for m in found if m.track.id in done]
    conn.execute(
        "DELETE FROM file_errors e USING unnest(%b::text[]) AS p(path) WHERE e.path = p.path",
        ([m.path for m in made],),
    )
    return made


def refresh_identity(conn: psycopg.Connection, files: list, audio_keys: dict[str, str]) -> int:
    """Unchanged files whose track's identity was stale (walk.Plan.restat): their dev and inode,
    their audio key where one was read (path -> key), and a track marked missing is present again.
    Returns how many tracks came back."""
    if not files:
        return 0
    row = conn.execute(
        # Joined to itself: `was` is the row as it was before this update.
        "WITH u AS (UPDATE tracks t SET dev = f.dev, ino = f.ino, "
        "  audio_key = coalesce(f.audio_key, t.audio_key), missing_since = NULL "
        "FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::uuid[]) AS f(path, dev, ino, audio_key), "
        "  tracks was WHERE t.path = f.path AND was.id = t.id RETURNING was.missing_since) "
        "SELECT count(missing_since) FROM u",
        (
            [f.path for f in files],
            [f.dev for f in files],
            [f.ino for f in files],
            [audio_keys.get(f.path) for f in files],
        ),
    ).fetchone()
    return row[0]


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


def mark_missing(conn: psycopg.Connection, session_id: str, roots: list[str]) -> int:
    """At the end of a session: mark missing the tracks of files that vanished and of folders the
    session did not reach (and forget their error records). A missing track keeps its id, album
    and artists, and is present again when its file comes back (at its path, or moved: the walk
    and the extract units find it); purge_missing deletes it after the retention."""
    # Taken first: the files found gone are then chosen after every batch in flight has committed.
    insert.lock_library(conn, exclusive=True)
    gone = [
        r[0]
        for r in conn.execute(
            "SELECT path FROM session_vanished v WHERE session_id = %(s)s AND NOT EXISTS "
            f"  (SELECT 1 FROM tracks n WHERE n.path = v.path AND n.updated_at > ({_STARTED})) "
            "UNION SELECT t.path FROM tracks t "
            f"JOIN ({_UNREACHED_DIRS.format(table='tracks')}) AS g ON g.dir = t.dir "
            f"WHERE {_NOT_BELOW_UNLISTED.format(alias='t')} AND t.updated_at < ({_STARTED}) "
            "  AND t.missing_since IS NULL",
            {"s": session_id, "roots": roots},
        ).fetchall()
    ]
    missing = 0
    if gone:
        missing = conn.execute(
            "UPDATE tracks SET missing_since = now() WHERE path = ANY(%s) AND missing_since IS NULL", (gone,)
        ).rowcount
        conn.execute("DELETE FROM file_errors WHERE path = ANY(%s)", (gone,))
    conn.execute(
        f"DELETE FROM file_errors e USING ({_UNREACHED_DIRS.format(table='file_errors')}) AS g "
        f"WHERE e.dir = g.dir AND {_NOT_BELOW_UNLISTED.format(alias='e')}",
        {"s": session_id, "roots": roots},
    )
    return missing


def expired_missing(conn: psycopg.Connection, older_than: float | None) -> list[tuple[int, str, object]]:
    """(id, path, missing since) of the tracks missing for more than `older_than` seconds (None:
    every missing track), by path."""
    return conn.execute(
        "SELECT id, path, missing_since FROM tracks WHERE missing_since IS NOT NULL "
        "AND (%(s)s::float8 IS NULL OR missing_since <= now() - make_interval(secs => %(s)s::float8)) "
        "ORDER BY path",
        {"s": older_than},
    ).fetchall()


def purge_missing(conn: psycopg.Connection, older_than: float | None) -> list[tuple[int, str, object]]:
    """Delete the tracks missing for more than `older_than` seconds (None: every missing track),
    then albums, artists and genres left without tracks. Returns the tracks deleted."""
    insert.lock_library(conn, exclusive=True)
    expired = expired_missing(conn, older_than)
    insert.remove_tracks(conn, [path for _, path, _ in expired])
    insert.remove_orphans(conn)
    return expired


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
