"""Every artist a file names, per tag family, read and stored as credits (docs/tags.md): the
track's credits in order with their roles, sub-roles and MusicBrainz ids, the album's artists,
rescans that replace them, orphans that go, and the upgrade of a library without credits."""

from __future__ import annotations

import json

import psycopg
import pytest

from backend_worker import db, library
from backend_worker.stages import fields, insert, walk
from backend_worker.stages.extract import read_record
from testkit import audio_fixtures as af
from testkit import services

pytestmark = pytest.mark.integration

# What SAMPLE_TAGS credits, written out by hand: (role, name, MusicBrainz id or '', sub-role).
ARTIST_IDS = ("f6f2326f-6b25-4170-b89d-e235b25508e8", "0a2b4c6d-8e0f-4a1b-9c2d-3e4f5a6b7c8d")
SAMPLE_CREDITS = [
    ("artist", "Sigur Rós", ARTIST_IDS[0], ""),
    ("artist", "Amiina", ARTIST_IDS[1], ""),
    ("composer", "Jón Þór Birgisson", "", ""),
    ("composer", "Kjartan Sveinsson", "", ""),
    ("lyricist", "Jón Þór Birgisson", "", ""),
    ("lyricist", "Georg Hólm", "", ""),
    ("conductor", "Anna Þorvaldsdóttir", "", ""),
    ("remixer", "Ólafur Arnalds", "", ""),
    ("remixer", "Nils Frahm", "", ""),
    ("arranger", "Kjartan Sveinsson", "", ""),
    ("producer", "Ken Thomas", "", ""),
    ("producer", "Sigur Rós", "", ""),
    ("engineer", "Birgir Jón Birgisson", "", ""),
    ("mixer", "Ken Thomas", "", ""),
    ("djmixer", "DJ Flugvél og Geimskip", "", ""),
    ("performer", "Jónsi", "", "vocals"),
    ("performer", "Orri Páll Dýrason", "", "drums"),
    ("performer", "Amiina", "", ""),
]
SAMPLE_ALBUM_ARTISTS = [
    ("Sigur Rós", "89ad4ac3-39f7-470e-963a-56509c546377"),
    ("Friends of Ásbyrgi", "1b3d5f7a-9c0e-4b2d-8f1a-3c5e7a9b0d2f"),
]
# Every tag family, ID3 in both versions (mp3: v2.4 and v2.3, wav: ID3 in RIFF).
FAMILIES = [("mp3", 4), ("mp3", 3), ("wav", 3), ("m4a", 4), ("flac", 4), ("ogg", 4), ("opus", 4),
            ("wv", 4), ("ape", 4), ("wma", 4)]  # fmt: skip


def credits_of(conn, path: str) -> list[tuple]:
    """The track's credits in the database: (role, name, mb_key, sub-role) in role order, then position."""
    return conn.execute(
        "SELECT c.role::text, a.name, a.mb_key, c.subrole FROM track_credits c "
        "JOIN tracks t ON t.id = c.track_id JOIN artists a ON a.id = c.artist_id "
        "WHERE t.path = %s ORDER BY c.role, c.position",
        (path,),
    ).fetchall()


def album_artists_of(conn, path: str) -> list[tuple]:
    return conn.execute(
        "SELECT a.name, a.mb_key FROM album_credits c JOIN tracks t ON t.album_id = c.album_id "
        "JOIN artists a ON a.id = c.artist_id WHERE t.path = %s ORDER BY c.position",
        (path,),
    ).fetchall()


def upsert(conn, records) -> None:
    with conn.transaction():
        insert.upsert_records(conn, records, None)


def role_order(credits: list[tuple]) -> list[tuple]:
    """The credits sorted as the database's enum orders roles (stable: positions kept)."""
    return sorted(credits, key=lambda credit: fields.TRACK_ROLES.index(credit[0]))


@pytest.mark.parametrize(("fmt", "id3_version"), FAMILIES, ids=[f"{f}-v2.{v}" for f, v in FAMILIES])
def test_every_credit_of_every_family_is_stored_in_order_with_roles_and_ids(
    db_conn, tmp_path, fmt, id3_version
):
    path = af.make_seed(fmt, tmp_path)
    af.write_tags(path, af.SAMPLE_TAGS, replace=True, id3_version=id3_version)
    record = read_record(str(path))
    for key in ("artists", "albumartists", "composers", "performers", "mb_artistids", "mb_albumartistids"):
        assert record[key] == af.SAMPLE_TAGS[key], key
    upsert(db_conn, [record])
    assert credits_of(db_conn, str(path)) == role_order(SAMPLE_CREDITS)
    assert album_artists_of(db_conn, str(path)) == SAMPLE_ALBUM_ARTISTS
    # The display strings as tagged stay on the track.
    row = db_conn.execute("SELECT artist, albumartist, composer FROM tracks WHERE path = %s", (str(path),))
    assert row.fetchone() == ("Sigur Rós", "Sigur Rós & Friends", "Jón Þór Birgisson")


def test_the_database_roles_are_the_field_tables(db_conn):
    labels = db_conn.execute("SELECT unnest(enum_range(NULL::credit_role))::text").fetchall()
    assert tuple(label for (label,) in labels) == fields.TRACK_ROLES


def test_single_tags_are_split_and_a_retag_replaces_the_credits_and_drops_orphans(db_conn, tmp_path):
    path = af.make_seed("flac", tmp_path)
    af.write_tags(path, {"title": "T", "artist": "Daft Punk feat. Pharrell Williams; Nile Rodgers",
                         "albumartist": "Daft Punk", "composer": "AC/DC / Thomas Bangalter"},
                  replace=True)  # fmt: skip
    record = read_record(str(path))
    assert record["artists"] == ["Daft Punk", "Pharrell Williams", "Nile Rodgers"]
    assert record["composers"] == ["AC/DC", "Thomas Bangalter"]  # a name kept whole (the default list)
    upsert(db_conn, [record])
    assert credits_of(db_conn, str(path)) == [
        ("artist", "Daft Punk", "", ""),
        ("artist", "Pharrell Williams", "", ""),
        ("artist", "Nile Rodgers", "", ""),
        ("composer", "AC/DC", "", ""),
        ("composer", "Thomas Bangalter", "", ""),
    ]
    assert album_artists_of(db_conn, str(path)) == [("Daft Punk", "")]

    af.write_tags(path, {"artist": "Daft Punk feat. Pharrell Williams", "composer": None})
    upsert(db_conn, [read_record(str(path))])
    assert credits_of(db_conn, str(path)) == [
        ("artist", "Daft Punk", "", ""),
        ("artist", "Pharrell Williams", "", ""),
    ]
    with db_conn.transaction():
        insert.remove_orphans(db_conn)
    names = {name for (name,) in db_conn.execute("SELECT name FROM artists")}
    # The display artists as tagged stay artists (as before); the dropped credits' artists are gone.
    assert "Nile Rodgers" not in names and "Thomas Bangalter" not in names and "AC/DC" not in names
    assert {"Daft Punk", "Pharrell Williams", "Daft Punk feat. Pharrell Williams"} <= names

    with db_conn.transaction():
        insert.remove_tracks(db_conn, [str(path)])
        insert.remove_orphans(db_conn)
    assert db_conn.execute("SELECT count(*) FROM track_credits").fetchone() == (0,)
    assert db_conn.execute("SELECT count(*) FROM album_credits").fetchone() == (0,)
    assert db_conn.execute("SELECT count(*) FROM artists").fetchone() == (0,)


def test_credited_artists_survive_an_older_releases_orphan_clean_up(db_conn, tmp_path):
    """A worker of the release before (during a rolling upgrade) deletes artists no track or album
    points at; an artist only credited stays, and a track it deletes takes its credits along."""
    path = af.make_seed("ogg", tmp_path)
    af.write_tags(path, {"title": "T", "artist": "A feat. B", "artists": ["A", "B"]}, replace=True)
    upsert(db_conn, [read_record(str(path))])
    with db_conn.transaction():  # the clean-up of releases <= 0.4.0, as it was
        db_conn.execute(
            "DELETE FROM artists ar WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.artist_id = ar.id) "
            "AND NOT EXISTS (SELECT 1 FROM albums al WHERE al.albumartist_id = ar.id)"
        )
    assert credits_of(db_conn, str(path)) == [("artist", "A", "", ""), ("artist", "B", "", "")]
    with db_conn.transaction():  # and its removal of a track: genres and the row, nothing else
        db_conn.execute("DELETE FROM tracks WHERE path = %s", (str(path),))
        db_conn.execute("DELETE FROM albums")
    assert db_conn.execute("SELECT count(*) FROM track_credits").fetchone() == (0,)
    assert db_conn.execute("SELECT count(*) FROM album_credits").fetchone() == (0,)


def test_names_and_ids_pair_only_when_the_counts_agree(db_conn, tmp_path):
    path = af.make_seed("m4a", tmp_path)
    tags = {"title": "T", "artist": "A & B", "artists": ["A", "B"], "mb_artistids": [ARTIST_IDS[0]]}
    af.write_tags(path, tags, replace=True)
    upsert(db_conn, [read_record(str(path))])
    assert credits_of(db_conn, str(path)) == [("artist", "A", "", ""), ("artist", "B", "", "")]


def test_the_upgrade_keeps_every_row_and_the_next_scan_reads_each_file_again(postgres, tmp_path):
    """A library of the release before (migrations up to 0009): 0010 keeps each track's artist as
    its credit and each album's artist, and marks the rows for one more read."""
    name = "soniquebay_credits_upgrade"
    postgres.create_database(name)
    url = postgres.url_for(services.OWNER_ROLE, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, migration, sql in db.migrations():
                if version < 10:
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, migration))
            conn.execute("INSERT INTO artists (name) VALUES ('Old Artist'), ('Old Album Artist')")
            conn.execute("INSERT INTO albums (title, albumartist_id) VALUES ('Old Album', 2)")
            conn.execute(
                "INSERT INTO tracks (path, dir, size, mtime_ns, artist_id, album_id, dev, ino, audio_key) "
                "VALUES ('/m/a/1.flac', '/m/a', 10, 123, 1, 1, 5, 6, gen_random_uuid())"
            )
            before = conn.execute("SELECT id, artist_id, album_id FROM tracks").fetchall()
        assert db.upgrade(url) == ["0010_credits.sql"]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT id, artist_id, album_id FROM tracks").fetchall() == before
            assert conn.execute(
                "SELECT track_id, role::text, position, artist_id, subrole FROM track_credits"
            ).fetchall() == [(before[0][0], "artist", 0, 1, "")]
            assert conn.execute("SELECT album_id, position, artist_id FROM album_credits").fetchall() == [
                (1, 0, 2)
            ]
            known = library.known_files(conn, ["/m/a"])
            plan = walk.compare([walk.FileStat("/m/a/1.flac", "/m/a", 123, 10, 5, 6)], known)
            assert [f.path for f in plan.changed] == ["/m/a/1.flac"]  # read again, at its path
            conn.execute("UPDATE tracks SET record_version = %s", (fields.RECORD_VERSION,))
            plan = walk.compare(
                [walk.FileStat("/m/a/1.flac", "/m/a", 123, 10, 5, 6)], library.known_files(conn, ["/m/a"])
            )
            assert (plan.changed, plan.unchanged) == ([], 1)
    finally:
        with psycopg.connect(postgres.url_for("postgres", "postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_the_pipeline_stores_credits_and_a_retag_rescanned_drops_one(pipeline, library):
    """Real workers: a scan stores the credits; the file retagged without its featured artist and
    rescanned loses the credit, and the artist, credited nowhere else, goes at the session's end.
    `soniquebay extract --json` shows the lists."""
    album = library / "Daft Punk" / "Random Access Memories"
    album.mkdir(parents=True)
    lucky = af.make_seed("mp3", album, name="08 - Get Lucky.mp3")
    af.write_tags(lucky, {"title": "Get Lucky", "artist": "Daft Punk feat. Pharrell Williams; Nile Rodgers",
                          "album": "Random Access Memories", "albumartist": "Daft Punk",
                          "performers": [["Nile Rodgers", "guitar"]]}, replace=True)  # fmt: skip
    other = af.make_seed("flac", album, name="01 - Give Life Back to Music.flac")
    own_album = {"album": "Random Access Memories", "albumartist": "Daft Punk", "albumartists": [],
                 "mb_albumartistids": [], "mb_albumartistid": None}  # fmt: skip
    af.write_tags(other, {**af.SAMPLE_TAGS, **own_album}, replace=True)
    first = pipeline.scan(library)
    assert first["status"] == "completed", first
    assert credits_of(pipeline.conn, str(lucky)) == [
        ("artist", "Daft Punk", "", ""),
        ("artist", "Pharrell Williams", "", ""),
        ("artist", "Nile Rodgers", "", ""),
        ("performer", "Nile Rodgers", "", "guitar"),
    ]
    assert credits_of(pipeline.conn, str(other)) == role_order(SAMPLE_CREDITS)

    af.write_tags(lucky, {"artist": "Daft Punk feat. Nile Rodgers"})
    session = pipeline.scan(library)
    assert (session["status"], session["counts"]["extracted"], session["counts"]["unchanged"]) == (
        "completed", 1, 1,
    ), session  # fmt: skip
    assert credits_of(pipeline.conn, str(lucky)) == [
        ("artist", "Daft Punk", "", ""),
        ("artist", "Nile Rodgers", "", ""),
        ("performer", "Nile Rodgers", "", "guitar"),
    ]
    assert pipeline.rows("SELECT count(*) FROM artists WHERE name = 'Pharrell Williams'") == [(0,)]
    assert pipeline.rows(services.DANGLING_REFERENCES_SQL) == [(0, 0, 0)]

    shown = json.loads(pipeline.cli("extract", "--json", str(other)).stdout)
    for key in ("artists", "composers", "lyricists", "performers", "mb_artistids"):
        assert shown[key] == af.SAMPLE_TAGS[key], key
    assert shown["albumartists"] == ["Daft Punk"]  # no list: the single tag
