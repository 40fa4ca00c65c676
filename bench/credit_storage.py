"""`python -m bench.credit_storage`: what PostgreSQL spends on a track's credits stored as rows
(track_credits with its primary key and artist index, as migration 0010 made it) against arrays on
the track row with one GIN index, above the track row alone.

200,000 tracks in transactions of 2,000 (an insert batch), 2.1 credits per track as in the bench
library (every track an artist, every fourth a featured one, every third a performer with an
instrument), a durable cluster; the server's CPU time of the one connection, a closing `VACUUM
ANALYZE` included (it merges GIN's pending list: that deferred cost counts too). Best of 3.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.stack import cpu_seconds
from testkit import services

TRACKS, BATCH, REPEATS = 200_000, 2_000, 3
_ROLES = "CREATE TYPE credit_role AS ENUM ('artist', 'performer');"
LAYOUTS = {
    "track rows alone": "CREATE TABLE tracks (id bigint PRIMARY KEY, payload text);",
    "credit rows (0010)": _ROLES + "CREATE TABLE tracks (id bigint PRIMARY KEY, payload text);"
    " CREATE TABLE track_credits (track_id bigint NOT NULL, role credit_role NOT NULL,"
    " position smallint NOT NULL, artist_id bigint NOT NULL, subrole text NOT NULL DEFAULT '',"
    " PRIMARY KEY (track_id, role, position));"
    " CREATE INDEX track_credits_artist ON track_credits (artist_id, role);",
    "arrays + GIN": _ROLES
    + "CREATE TABLE tracks (id bigint PRIMARY KEY, payload text, credit_artists bigint[],"
    " credit_roles credit_role[], credit_subroles text[]);"
    " CREATE INDEX tracks_credit_artists ON tracks USING gin (credit_artists);",
}
PAYLOAD = "x" * 600  # about a track row's other columns


def credits_of(track: int) -> list[tuple[str, int, int, str]]:
    found = [("artist", 0, track // 100 % 200, "")]
    if track % 4 == 0:
        found.append(("artist", 1, 200 + track % 97, ""))
    if track % 3 == 0:
        found.append(("performer", 0, 300 + track % 50, "guitar"))
    return found


def write(conn: psycopg.Connection, layout: str) -> float:
    conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
    conn.execute("CREATE SCHEMA bench")
    conn.execute("SET search_path = bench")
    conn.execute(LAYOUTS[layout])
    conn.execute("CHECKPOINT")
    pid = conn.info.backend_pid
    before = cpu_seconds(pid)
    cur = conn.cursor()
    for start in range(0, TRACKS, BATCH):
        tracks = range(start, start + BATCH)
        with conn.transaction():
            if layout == "arrays + GIN":
                columns = "id, payload, credit_artists, credit_roles, credit_subroles"
                with cur.copy(f"COPY tracks ({columns}) FROM STDIN") as copy:
                    for track in tracks:
                        roles, _positions, artists, subroles = map(list, zip(*credits_of(track), strict=True))
                        copy.write_row((track, PAYLOAD, artists, roles, subroles))
                continue
            with cur.copy("COPY tracks (id, payload) FROM STDIN") as copy:
                for track in tracks:
                    copy.write_row((track, PAYLOAD))
            if layout == "credit rows (0010)":
                columns = "track_id, role, position, artist_id, subrole"
                with cur.copy(f"COPY track_credits ({columns}) FROM STDIN") as copy:
                    for track in tracks:
                        for role, position, artist, subrole in credits_of(track):
                            copy.write_row((track, role, position, artist, subrole))
    conn.execute("VACUUM ANALYZE")
    return cpu_seconds(pid) - before


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("the bench starts PostgreSQL as the postgres user: run it as root")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
        postgres = services.Postgres(Path(workdir), services.free_port(), durable=True)
        postgres.start()
        try:
            best: dict[str, float] = {}
            with psycopg.connect(postgres.url, autocommit=True) as conn:
                for _ in range(REPEATS):
                    for layout in LAYOUTS:
                        started = time.perf_counter()
                        cpu = write(conn, layout)
                        best[layout] = min(best.get(layout, cpu), cpu)
                        print(
                            f"{layout}: server {cpu:.2f} CPU-s, {time.perf_counter() - started:.2f} s",
                            flush=True,
                        )
        finally:
            postgres.stop()
    alone = best["track rows alone"]
    for layout in list(LAYOUTS)[1:]:
        print(
            f"{layout}: {(best[layout] - alone) / TRACKS * 1e6:.1f} us of server CPU per track",
            "above the track row alone",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
