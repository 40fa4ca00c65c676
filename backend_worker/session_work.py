"""A running session's working tables, as plain functions of a connection: the folders it listed
(session_dirs), the files it found gone (session_vanished) and the albums each cover unit looks
at, with where their covers are (cover_plans). ledger.close_session deletes their rows
(ledger.SESSION_WORK_TABLES)."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb


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


def plan_covers(
    conn: psycopg.Connection, session_id: str, sources_by_unit: dict[str, list[tuple[int, str, str | None]]]
) -> None:
    """Each cover unit's albums and where their covers are looked for (library.cover_sources)."""
    if sources_by_unit:
        conn.execute(
            "INSERT INTO cover_plans (session_id, unit_id, album_ids, sources) "
            "SELECT %s, u, ids, src FROM unnest(%b::text[], %b::text[], %b::jsonb[]) AS t(u, ids, src) "
            "ON CONFLICT DO NOTHING",
            (
                session_id,
                list(sources_by_unit),
                [",".join(str(album_id) for album_id, *_ in sources) for sources in sources_by_unit.values()],
                [Jsonb(sources) for sources in sources_by_unit.values()],
            ),
        )


def planned_covers(
    conn: psycopg.Connection, session_id: str, unit_id: str
) -> tuple[list[int], list[tuple[int, str, str | None]] | None]:
    """A cover unit's albums, and where their covers are looked for (None: a plan made before
    migration 0008, which the unit looks up)."""
    plan = conn.execute(
        "SELECT album_ids, sources FROM cover_plans WHERE session_id = %s AND unit_id = %s",
        (session_id, unit_id),
    ).fetchone()
    if not plan:
        return [], []
    album_ids, sources = plan
    return [int(a) for a in album_ids.split(",")], None if sources is None else [tuple(s) for s in sources]
