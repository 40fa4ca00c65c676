"""A track keeps its id (and its album's and artist's) when its file is moved, renamed, copied to
another disk and deleted, retagged and moved, or gone for a while; duplicates stay two tracks.
Real Redis, PostgreSQL and workers; real files in every family of tags."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testkit import audio_fixtures

pytestmark = pytest.mark.integration

FORMATS = ("mp3", "flac", "ogg", "opus", "m4a")  # ID3, Vorbis comments (FLAC, Ogg), MP4


def identities(pipeline) -> dict[str, tuple[int, int, int]]:
    """path -> (track id, album id, artist id) of the tracks whose file is present."""
    rows = pipeline.rows("SELECT path, id, album_id, artist_id FROM present_tracks ORDER BY path")
    return {path: (track, album, artist) for path, track, album, artist in rows}


def moved(before: dict, old: Path, new: Path) -> dict:
    """`before` with the paths below `old` now below `new`."""
    prefix = str(old) + "/"
    return {
        (str(new) + "/" + path[len(prefix) :] if path.startswith(prefix) else path): ids
        for path, ids in before.items()
    }


def build(root: Path, albums: int = 5, tracks: int = 2) -> list[dict]:
    return audio_fixtures.build_library(
        root, artists=1, albums_per_artist=albums, tracks_per_album=tracks, formats=FORMATS
    )


def artist_folder(root: Path) -> Path:
    """The library's artist folder (build_library puts its last album under Various Artists)."""
    (folder,) = [p for p in root.iterdir() if p.is_dir() and p.name != audio_fixtures.VARIOUS_ARTISTS]
    return folder


def copy_keeping_times(source: Path, target: Path) -> None:
    """`cp -a`: a new file (new inode) with the same bytes and modification time."""
    shutil.copytree(source, target, copy_function=shutil.copy2)


def test_a_file_folder_or_tree_moved_in_the_library_keeps_its_ids_and_is_not_read_again(pipeline, library):
    build(library / "music")
    assert pipeline.scan(library)["counts"]["inserted"] == 10
    before = identities(pipeline)
    artist = artist_folder(library / "music")
    album = sorted(p for p in artist.iterdir() if p.is_dir())[0]
    one_file = sorted(album.iterdir())[0]

    one_file.rename(one_file.with_name("renamed " + one_file.name))  # a file renamed
    expected = {
        (str(one_file.with_name("renamed " + one_file.name)) if p == str(one_file) else p): ids
        for p, ids in before.items()
    }
    album.rename(album.with_name(album.name + " (2019)"))  # a folder renamed
    expected = moved(expected, album, album.with_name(album.name + " (2019)"))
    session = pipeline.scan(library)
    assert session["status"] == "completed"
    assert (session["counts"]["moved"], session["counts"]["extracted"]) == (2, 0)
    assert identities(pipeline) == expected

    (library / "music").rename(library / "reorganised")  # the whole tree
    session = pipeline.scan(library)
    assert (session["counts"]["moved"], session["counts"]["extracted"]) == (10, 0)
    assert session["counts"]["missing"] == 0
    assert identities(pipeline) == moved(expected, library / "music", library / "reorganised")
    assert pipeline.rows("SELECT count(*) FROM tracks") == [(10,)]


@pytest.mark.parametrize("sessions", ["one session", "new root first", "old root first"])
def test_a_copy_to_another_root_then_deleted_keeps_its_ids_and_is_not_read_again(pipeline, library, sessions):
    disk1, disk2 = library / "disk1", library / "disk2"
    build(disk1)
    disk2.mkdir()
    assert pipeline.scan(disk1, disk2)["counts"]["inserted"] == 10
    before = identities(pipeline)
    for child in list(disk1.iterdir()):
        copy_keeping_times(child, disk2 / child.name)
        shutil.rmtree(child)
    # What else the old disk holds (a root left empty is refused: it looks unmounted).
    (disk1 / "Other").mkdir()

    if sessions == "one session":
        counts = [pipeline.scan(disk1, disk2)["counts"]]
    elif sessions == "new root first":  # the old files' tracks are still present: their paths are gone
        counts = [pipeline.scan(disk2)["counts"], pipeline.scan(disk1)["counts"]]
    else:  # the old files' tracks are marked missing first, then found again
        counts = [pipeline.scan(disk1)["counts"], pipeline.scan(disk2)["counts"]]
        assert counts[0]["missing"] == 10
        assert counts[1]["returned"] == 10
    assert sum(c["moved"] for c in counts) == 10
    assert sum(c["extracted"] for c in counts) == 0
    assert identities(pipeline) == moved(before, disk1, disk2)
    assert pipeline.rows("SELECT count(*) FROM tracks") == [(10,)]


def test_a_file_retagged_and_moved_as_picard_does_keeps_its_id(pipeline, library):
    expected = build(library / "music")
    assert pipeline.scan(library)["counts"]["inserted"] == 10
    before = identities(pipeline)
    want = {}
    for n, e in enumerate(expected):
        source = Path(e["path"])
        # Picard saves the new tags (a large picture makes mutagen rewrite the file: Ogg pages are
        # renumbered, MP4 atoms move), then renames the file into its new folder.
        audio_fixtures.write_tags(
            source, {"title": f"Retitled {n}", "cover": audio_fixtures.cover_jpeg(f"big {n}") * 40}
        )
        target = library / "picard" / source.parent.name / f"{n:02d} Retitled{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        want[str(target)] = (before[e["path"]], f"Retitled {n}")
    session = pipeline.scan(library)
    assert session["status"] == "completed"
    assert session["counts"]["moved"] == 10
    assert session["counts"]["extracted"] == 10  # the new tags are read
    assert session["counts"]["missing"] == 0
    titles = dict(pipeline.rows("SELECT path, title FROM present_tracks"))
    assert {path: (ids, titles[path]) for path, ids in identities(pipeline).items()} == want
    assert pipeline.rows("SELECT count(*) FROM tracks") == [(10,)]


def test_a_folder_gone_for_a_while_is_missing_then_comes_back_with_its_ids(pipeline, library, tmp_path):
    build(library)
    assert pipeline.scan(library)["counts"]["inserted"] == 10
    before = identities(pipeline)
    artist = artist_folder(library)
    away = sorted(p for p in artist.iterdir() if p.is_dir())[:2]  # 4 files, as an unmounted disk
    shutil.move(away[0], tmp_path / "away-0")
    shutil.move(away[1], tmp_path / "away-1")
    session = pipeline.scan(library)
    assert (session["counts"]["missing"], session["counts"]["extracted"]) == (4, 0)
    gone = {p: ids for p, ids in before.items() if p.startswith((str(away[0]) + "/", str(away[1]) + "/"))}
    assert identities(pipeline) == {p: ids for p, ids in before.items() if p not in gone}
    assert sorted(pipeline.rows("SELECT path FROM tracks WHERE missing_since IS NOT NULL")) == sorted(
        (p,) for p in gone
    )
    status = pipeline.cli("status", "--json").stdout
    assert '"missing": 4' in status

    # One comes back where it was (another file system: a new inode), the other elsewhere.
    copy_keeping_times(tmp_path / "away-0", away[0])
    shutil.move(tmp_path / "away-1", artist / "moved back")
    session = pipeline.scan(library)
    assert session["counts"]["returned"] == 4
    assert session["counts"]["extracted"] == 0
    assert identities(pipeline) == moved(before, away[1], artist / "moved back")
    assert pipeline.rows("SELECT count(*) FROM tracks WHERE missing_since IS NOT NULL") == [(0,)]


def test_a_duplicate_is_a_track_of_its_own_and_keeps_its_id_when_the_original_goes(pipeline, library):
    build(library / "music", albums=2, tracks=3)
    assert pipeline.scan(library)["counts"]["inserted"] == 6
    original = identities(pipeline)
    copy_keeping_times(library / "music", library / "copy")  # the same audio, both kept
    session = pipeline.scan(library)
    assert (session["counts"]["inserted"], session["counts"]["moved"]) == (6, 0)
    both = identities(pipeline)
    assert len(both) == 12 and len({ids[0] for ids in both.values()}) == 12
    copies = {p: ids for p, ids in both.items() if p.startswith(str(library / "copy") + "/")}
    # Same tags, so the same album and artist rows; distinct tracks.
    assert {ids[1:] for ids in copies.values()} <= {ids[1:] for ids in original.values()}

    shutil.rmtree(library / "music")
    session = pipeline.scan(library)
    assert (session["counts"]["missing"], session["counts"]["moved"]) == (6, 0)
    assert identities(pipeline) == copies


def test_missing_tracks_are_purged_after_the_retention_or_by_the_purge_command(pipeline, library):
    build(library, albums=2, tracks=2)
    assert pipeline.scan(library)["counts"]["inserted"] == 4
    artist = artist_folder(library)
    gone = sorted(p for p in artist.iterdir() if p.is_dir())[0]
    shutil.rmtree(gone)
    assert pipeline.scan(library)["counts"]["missing"] == 2

    dry = pipeline.cli("purge", "--dry-run")
    assert dry.stderr.strip() == "would purge 2 missing tracks"
    assert len(dry.stdout.splitlines()) == 2 and str(gone) in dry.stdout
    assert pipeline.rows("SELECT count(*) FROM tracks") == [(4,)]
    assert pipeline.cli("purge", "--older-than", "1d").stderr.strip() == "purged 0 missing tracks"
    assert pipeline.rows("SELECT count(*) FROM tracks") == [(4,)]

    # The retention as the deployment sets it, short: the next session purges them.
    pipeline.workers.restart(["deferred"], extra_env={"SONIQUEBAY_MISSING_RETENTION": "1s"})
    try:
        pipeline.workers.wait_ready(["deferred"])
        assert pipeline.rows("SELECT min(now() - missing_since) > interval '1 second' FROM tracks") == [
            (True,)
        ]
        session = pipeline.scan(library)
        assert (session["counts"]["purged"], session["counts"]["missing"]) == (2, 0)
    finally:
        pipeline.workers.restart(["deferred"])
        pipeline.workers.wait_ready(["deferred"])
    assert pipeline.rows("SELECT count(*), count(missing_since) FROM tracks") == [(2, 0)]
    orphans = (
        "SELECT count(*) FROM albums a WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.album_id = a.id)"
    )
    assert pipeline.rows(orphans) == [(0,)]

    # And the command, for the tracks missing now (the default retention keeps them).
    shutil.rmtree(library / audio_fixtures.VARIOUS_ARTISTS)
    assert pipeline.scan(library)["counts"]["missing"] == 2
    purged = pipeline.cli("purge")
    assert purged.stderr.strip() == "purged 2 missing tracks"
    assert pipeline.rows("SELECT count(*) FROM tracks") == [(0,)]
    assert pipeline.rows("SELECT count(*) FROM albums") == [(0,)]
