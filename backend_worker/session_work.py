"""A running session's working tables, as plain functions of a connection: the folders it listed
(session_dirs), the files it found gone (session_vanished) and the albums each cover unit looks
at (cover_plans). sessions.close_session deletes their rows (sessions.SESSION_WORK_TABLES)."""

from __future__ import annotations

import psycopg


def add_dirs(conn: psycopg.Connection, session_id: str, listed: list[str], unlisted: list[str]) -> None:
    """Folders the session listed, and those it could not list (what is below them is kept)."""
    conn.execute(
        "INSERT INTO session_dirs (session_id, dir, listed) SELECT %s, d, l "
        "FROM unnest(%b::text[], %b::boolean[]) AS t(d, l) ON CONFLICT DO NOTHING",
        (session_id, listed + unlisted, [True] * len(listed) + [False] * len(unlisted)),
    )


def add_vanished(conn: psycopg.Connection, session_id: str, paths: list[str]) -> None:
    """Files the library holds that are gone: removed when the session ends."""
    if paths:
        conn.execute(
            "INSERT INTO session_vanished (session_id, path) SELECT %s, unnest(%b::text[]) "
            "ON CONFLICT DO NOTHING",
            (session_id, paths),
        )


def plan_covers(conn: psycopg.Connection, session_id: str, album_ids_by_unit: dict[str, list[int]]) -> None:
    if album_ids_by_unit:
        conn.execute(
            "INSERT INTO cover_plans (session_id, unit_id, album_ids) "
            "SELECT %s, u, ids FROM unnest(%b::text[], %b::text[]) AS t(u, ids) ON CONFLICT DO NOTHING",
            (
                session_id,
                list(album_ids_by_unit),
                [",".join(map(str, ids)) for ids in album_ids_by_unit.values()],
            ),
        )


def planned_albums(conn: psycopg.Connection, session_id: str, unit_id: str) -> list[int]:
    """The albums of a cover unit."""
    plan = conn.execute(
        "SELECT album_ids FROM cover_plans WHERE session_id = %s AND unit_id = %s", (session_id, unit_id)
    ).fetchone()
    return [int(a) for a in plan[0].split(",")] if plan else []
