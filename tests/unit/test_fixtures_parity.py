"""read_record agrees with beets' mediafile; the audio fixtures are real, cached and exact."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import mediafile
import pytest
from mutagen.apev2 import APEv2
from mutagen.mp3 import MP3

from backend_worker.stages import fields
from backend_worker.stages.extract import read_record
from testkit import audio_fixtures as af
from testkit.mediafile_parity import split_single_artists

# Every format mediafile reads (ADTS .aac is the one it refuses: FileTypeError).
MEDIAFILE_FORMATS = [fmt for fmt in af.FORMATS if fmt != "aac"]
APE_FAMILY = {"wv", "mpc", "ape"}

# Credits mediafile does not read as we do: roles it has no field for, and two whose MP4/ASF keys
# it names otherwise (REMIXERS, WM/REMIXERS, beets/Arranger; we read Picard's, and theirs after).
NOT_IN_MEDIAFILE = {"conductors", "producers", "engineers", "mixers", "djmixers", "performers", "remixers",
                    "arrangers"}  # fmt: skip
# Every other tag and stream field has mediafile's name; the length is compared apart (within 1e-6).
SHARED_FIELDS = (
    *(name for name in fields.TAG_NAMES if name not in NOT_IN_MEDIAFILE),
    *(name for name in fields.STREAM_NAMES if name != "length"),
)
LIST_FIELDS = [field.name for field in fields.TAG_FIELDS if isinstance(field.type.default, list)]


def mediafile_view(path: Path, fmt: str, ours: dict) -> dict:
    """mediafile's values, normalised only in the documented ways (see tags.py's docstring):

    - absent lists (genres, artists, credits) / comp: mediafile None, we [] / False;
    - artists / albumartists without a multi-valued tag: mediafile None, we the single tag split
      on the separators (docs/tags.md);
    - APEv2 (WavPack, Musepack, Monkey's Audio) as Picard writes it: mediafile ignores the total
      in Track/Disc "n/total" and a full date in Year, we read both. Where mediafile has nothing
      there, our value must equal what was written (checked by the caller against the tags).
    """
    mf = mediafile.MediaFile(str(path))
    view = {name: getattr(mf, name) for name in SHARED_FIELDS}
    view["length"] = mf.length
    for name in LIST_FIELDS:
        if name in view and view[name] is None:
            view[name] = []
    split_single_artists(mf, view)
    if view["comp"] is None:
        view["comp"] = False
    if fmt in APE_FAMILY:
        for name in ("tracktotal", "disctotal", "year"):
            if view[name] is None:
                view[name] = ours[name]
    return view


def ours_view(path: Path) -> dict:
    record = read_record(str(path))
    return {name: record[name] for name in (*SHARED_FIELDS, "length")}


TAG_SETS = {
    "full": af.SAMPLE_TAGS,
    "sparse": {"title": "Only", "artist": "Some", "track": 1, "genres": ["Jazz"], "rg_track_gain": 0.0},
    "plain_year": {**af.SAMPLE_TAGS, "date": None, "year": 1987, "comp": False, "tracktotal": None},
    "none": {},
}


@pytest.mark.parametrize("tagset", list(TAG_SETS))
@pytest.mark.parametrize("fmt", MEDIAFILE_FORMATS)
def test_read_record_agrees_with_mediafile(tmp_path, fmt, tagset):
    path = af.make_seed(fmt, tmp_path)
    af.write_tags(path, {k: v for k, v in TAG_SETS[tagset].items() if v is not None}, replace=True)
    ours = ours_view(path)
    theirs = mediafile_view(path, fmt, ours)
    assert ours["length"] == pytest.approx(theirs.pop("length"), abs=1e-6)
    ours.pop("length")
    assert ours == theirs
    written = TAG_SETS[tagset]
    for name in ("tracktotal", "disctotal"):  # the APE normalisation above hides nothing
        assert ours[name] == written.get(name)
    assert ours["year"] == (int(written["date"][:4]) if written.get("date") else written.get("year"))


def test_mediafile_parity_over_a_built_library(tmp_path):
    expected = af.build_library(
        tmp_path, artists=3, albums_per_artist=3, tracks_per_album=2, formats=af.FORMATS
    )
    fmt_by_name = {name: fmt for fmt, name in af.FORMAT_NAMES.items() if fmt not in ("aac", "alac")}
    fmt_by_name["ALAC"] = "alac"
    for e in expected:
        if e["format"] == "AAC" and e["path"].endswith(".aac"):
            continue
        fmt = "m4a" if e["format"] == "AAC" else fmt_by_name[e["format"]]
        ours = ours_view(Path(e["path"]))
        theirs = mediafile_view(Path(e["path"]), fmt, ours)
        assert ours.pop("length") == pytest.approx(theirs.pop("length"), abs=1e-6)
        assert ours == theirs, e["path"]


def test_mediafile_would_return_raw_id3v1_genres_we_translate_them(tmp_path):
    """The one ID3 shape where we differ on purpose: mutagen only translates "(17)" while it
    upgrades a tag on load; text that survives (e.g. "17") stays raw in mediafile."""
    path = af.make_seed("mp3", tmp_path)
    f = MP3(path)
    f.add_tags()
    from mutagen.id3 import TCON

    f.tags.add(TCON(encoding=3, text=["17"]))
    f.save()
    assert read_record(str(path))["genres"] == ["Rock"]
    assert mediafile.MediaFile(str(path)).genres in (["17"], ["Rock"])


# --- the fixtures themselves ------------------------------------------------------------------------


def test_build_library_lays_out_a_realistic_library_and_returns_exact_records(tmp_path):
    expected = af.build_library(tmp_path, artists=4, albums_per_artist=3, tracks_per_album=5, seed=7)
    assert len(expected) == 60

    for e in expected:
        record = read_record(e["path"])
        assert {k: record[k] for k in af.EXPECTED_KEYS} == e, e["path"]
        rel = Path(e["path"]).relative_to(tmp_path)
        assert len(rel.parts) == 3 and rel.parts[0] in (e["albumartist"], f"{e['albumartist']} (2)")
        assert rel.parts[1] == e["album"] and rel.name.endswith(f" - {e['title']}{Path(e['path']).suffix}")
        assert (Path(e["path"]).parent / "cover.jpg").is_file()

    assert Counter(e["format"] for e in expected) == {"MP3": 15, "FLAC": 15, "OGG": 10, "Opus": 10, "AAC": 10}
    comp = [e for e in expected if e["comp"]]
    assert len(comp) == 5 and {e["albumartist"] for e in comp} == {af.VARIOUS_ARTISTS}
    assert {e["mb_albumartistid"] for e in comp} == {af.VARIOUS_ARTISTS_MBID}
    assert len({e["artist"] for e in comp}) > 1 and len({e["mb_albumid"] for e in comp}) == 1
    # Names are not identities: one artist name for two MusicBrainz artists; repeated album titles.
    artists = {(e["albumartist"], e["mb_albumartistid"]) for e in expected if not e["comp"]}
    assert len(artists) == 4 and len({name for name, _ in artists}) == 3
    titles = Counter((e["album"], e["mb_albumid"]) for e in expected)
    assert len({album for album, _ in titles}) < len(titles)
    assert any(len(e["genres"]) > 1 for e in expected)
    assert any(e["disctotal"] == 2 for e in expected) and any(e["disc"] == 2 for e in expected)
    embedded = {e["mb_albumid"] for e in expected if e["has_cover"]}
    assert 0 < len(embedded) < len({e["mb_albumid"] for e in expected})
    assert len({(Path(e["path"]).parent / "cover.jpg").read_bytes() for e in expected}) == 12
    assert len({e["mb_trackid"] for e in expected}) == 60

    # Deterministic for a seed, different for another.
    again = af.build_library(tmp_path / "again", artists=4, albums_per_artist=3, tracks_per_album=5, seed=7)
    strip = [{k: v for k, v in e.items() if k not in ("path", "size")} for e in expected]
    assert [{k: v for k, v in e.items() if k not in ("path", "size")} for e in again] == strip
    other = af.build_library(tmp_path / "other", artists=1, albums_per_artist=1, tracks_per_album=2, seed=8)
    assert other[0]["mb_trackid"] not in {e["mb_trackid"] for e in expected}


def test_build_library_without_covers_and_with_every_format(tmp_path):
    expected = af.build_library(tmp_path, artists=2, albums_per_artist=7, tracks_per_album=1, covers=False,
                                formats=af.FORMATS)  # fmt: skip
    assert sorted(e["format"] for e in expected) == sorted(af.FORMAT_NAMES.values())
    assert not any(e["has_cover"] for e in expected)
    assert not list(tmp_path.rglob("cover.jpg"))
    for e in expected:
        record = read_record(e["path"])
        assert {k: record[k] for k in af.EXPECTED_KEYS} == e, e["path"]


def test_write_tags_changes_only_the_fields_given(tmp_path):
    for fmt in [f for f in af.FORMATS if f not in af.UNTAGGABLE]:
        path = af.make_seed(fmt, tmp_path)
        af.write_tags(path, {**af.SAMPLE_TAGS, "cover": af.cover_jpeg()}, replace=True)
        af.write_tags(
            path, {"title": "Remaster", "track": 90, "disctotal": None, "cover": None, "comp": False}
        )
        record = read_record(str(path))
        expected = {k: v for k, v in af.SAMPLE_TAGS.items() if k in record}
        expected.update(title="Remaster", track=90, disctotal=None, comp=False, has_cover=False)
        assert {k: record[k] for k in expected} == expected, fmt
    with pytest.raises(ValueError, match="unknown tag keys"):
        af.write_tags(path, {"titel": "typo"})


def test_ape_tags_use_picards_shapes(tmp_path):
    path = af.make_seed("wv", tmp_path)
    af.write_tags(path, af.SAMPLE_TAGS, replace=True)
    tags = APEv2(path)
    assert (str(tags["Track"]), str(tags["Disc"]), str(tags["Year"])) == ("3/10", "1/2", "1999-06-12")
    assert list(tags["Genre"]) == ["Post-Rock", "Ambient"]


def test_seeds_are_cached_and_copied(tmp_path):
    cached = af.cached_seed("flac")
    before = cached.stat().st_mtime_ns
    one, two = af.make_seed("flac", tmp_path / "a"), af.make_seed("flac", tmp_path / "b")
    assert af.cached_seed("flac").stat().st_mtime_ns == before
    assert one.read_bytes() == two.read_bytes() == cached.read_bytes() and one != cached
    assert cached.parent == af.cache_dir()
    with pytest.raises(ValueError, match="unknown fixture format"):
        af.make_seed("mp5", tmp_path)


@pytest.mark.parametrize("fmt", ["ape", "dsf"])
def test_hand_built_seeds_are_valid_streams_ffmpeg_decodes(tmp_path, fmt):
    path = af.make_seed(fmt, tmp_path)
    af.write_tags(path, {"title": "decodable", "cover": af.cover_jpeg()}, replace=True)
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a", "-f", "s16le", "-ac", "2",
         "-ar", str(af.SAMPLE_RATE), "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    seconds = af.seed_seconds(fmt)
    assert len(pcm) == pytest.approx(seconds * af.SAMPLE_RATE * 4, rel=0.02)
    if fmt == "ape":
        assert pcm == bytes(len(pcm))  # frames of "stereo silence"
    record = read_record(str(path))
    assert record["title"] == "decodable" and record["length"] == pytest.approx(seconds)


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SONIQUEBAY_FIXTURE_CACHE", str(tmp_path / "cache"))
    assert af.cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()
    seed = af.make_seed("wav", tmp_path / "out")
    assert read_record(str(seed))["format"] == "WAVE"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"seed-v{af.RECIPE_VERSION}-wav-1s.wav"]
    assert os.access(seed, os.R_OK)
