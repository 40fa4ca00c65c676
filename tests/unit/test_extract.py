"""The extract stage on real encoded files: tags written with mutagen, read back by read_record."""

from __future__ import annotations

import base64
import json
import os
import random
import struct
import threading
import zlib
from collections import Counter

import mediafile
import pytest
from mutagen.apev2 import APEv2
from mutagen.asf import ASF, ASFBoolAttribute, ASFDWordAttribute
from mutagen.flac import FLAC, Picture, StrictFileObject
from mutagen.id3 import APIC, COMM, ID3, TBPM, TCMP, TCON, TDAT, TDRC, TIT2, TPOS, TRCK, TXXX, TYER, UFID
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm
from mutagen.oggvorbis import OggVorbis

from backend_worker.stages import fields
from backend_worker.stages.extract import (
    RECORD_KEYS,
    ExtractError,
    embedded_cover,
    extract_paths,
    read_record,
)
from testkit import audio_fixtures as af

TAGGABLE = [fmt for fmt in af.FORMATS if fmt not in af.UNTAGGABLE]
TAG_FIELDS = fields.TAG_NAMES
DEFAULTS = {field.name: field.type.default for field in fields.TAG_FIELDS}


def expected_tags(written: dict) -> dict:
    """What read_record reports for tags written with af.write_tags."""
    out = {name: value for name, value in af.expected_tags(written).items() if name in TAG_FIELDS}
    if written.get("date"):
        out["year"] = int(written["date"][:4])
    return out


def tag_subset(record: dict) -> dict:
    return {name: record[name] for name in TAG_FIELDS}


def png_bytes() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


# --- every format: written tags read back exactly, stream info sane --------------------------------


@pytest.mark.parametrize("fmt", TAGGABLE)
def test_every_field_reads_back_exactly(tmp_path, fmt):
    path = af.make_seed(fmt, tmp_path)
    cover = af.cover_jpeg("round trip")
    af.write_tags(path, {**af.SAMPLE_TAGS, "cover": cover}, replace=True)

    record = read_record(str(path))

    assert tuple(record) == RECORD_KEYS
    assert tag_subset(record) == expected_tags(af.SAMPLE_TAGS)
    assert record["has_cover"] is True
    assert embedded_cover(str(path)) == (cover, "image/jpeg")
    st = os.stat(path)
    assert (record["path"], record["size"], record["mtime_ns"], record["mtime"]) == (
        str(path),
        st.st_size,
        st.st_mtime_ns,
        st.st_mtime,
    )
    assert json.loads(json.dumps(record)) == record


@pytest.mark.parametrize("fmt", af.FORMATS)
def test_stream_info_is_sane(tmp_path, fmt):
    path = af.make_seed(fmt, tmp_path)
    record = read_record(str(path))

    assert record["format"] == af.FORMAT_NAMES[fmt]
    assert record["length"] == pytest.approx(af.seed_seconds(fmt), abs=0.06)
    assert record["channels"] == af.CHANNELS
    rate = {"opus": 48000, "dsf": af.DSF_RATE}.get(fmt, af.SAMPLE_RATE)
    assert record["samplerate"] == rate
    # bitdepth as beets' mediafile gives it: the stream's sample size where mutagen knows one
    # (lossless; DSD is 1 bit; AAC in MP4 declares 16), else 0.
    bits = {"dsf": 1, "m4a": 16}.get(fmt, 16 if fmt in af.LOSSLESS else 0)
    assert record["bitdepth"] == bits
    pcm = rate * af.CHANNELS * max(bits, 1)
    if fmt in af.LOSSLESS:
        assert 0 < record["bitrate"] <= pcm * 1.1
    else:
        assert 16_000 <= record["bitrate"] <= 400_000
    assert tag_subset(record) == DEFAULTS and record["has_cover"] is False


def test_only_the_fields_written_are_set(tmp_path):
    for fmt in TAGGABLE:
        path = af.make_seed(fmt, tmp_path)
        af.write_tags(path, {"title": "Only A Title", "track": 7}, replace=True)
        assert tag_subset(read_record(str(path))) == {**DEFAULTS, "title": "Only A Title", "track": 7}, fmt


def test_adts_aac_has_stream_info_and_no_tags(tmp_path):
    path = af.make_seed("aac", tmp_path)
    record = read_record(str(path))
    assert record["format"] == "AAC" and record["bitrate"] > 0 and record["samplerate"] == 44100
    assert tag_subset(record) == DEFAULTS
    with pytest.raises(ValueError, match="no tags"):
        af.write_tags(path, {"title": "x"})


# --- the shapes mutagen hands back ------------------------------------------------------------------


def test_id3_shapes(tmp_path):
    path = af.make_seed("mp3", tmp_path)
    f = MP3(path)
    f.add_tags()
    t = f.tags
    t.add(TIT2(encoding=3, text=["First", "Second"]))  # multi-valued text: the first value
    t.add(TCON(encoding=3, text=["(17)", "Shoegaze"]))  # ID3v1 numeric genre + a plain one
    t.add(TRCK(encoding=3, text=["7"]))  # no total
    t.add(TPOS(encoding=3, text=["2/3"]))
    t.add(TDRC(encoding=3, text=["2001-05-02"]))
    t.add(TCMP(encoding=3, text=["1"]))
    t.add(TBPM(encoding=3, text=["120.6"]))
    t.add(UFID(owner="http://example.org", data=b"not ours"))
    t.add(UFID(owner="http://musicbrainz.org", data=b"1A2B3C4D-0000-4000-8000-00000000000A"))
    t.add(TXXX(encoding=3, desc="musicbrainz album id", text=["0E2D8B2C-6C3E-4CA6-8C5D-3B1F1E6A7D42"]))
    t.add(TXXX(encoding=3, desc="MusicBrainz Artist Id", text=["f6f2326f-6b25-4170-b89d-e235b25508e8", "x"]))
    t.add(TXXX(encoding=3, desc="replaygain_track_gain", text=["-6.50 dB"]))
    t.add(TXXX(encoding=3, desc="REPLAYGAIN_ALBUM_GAIN", text=["+1.20 dB"]))
    t.add(TXXX(encoding=3, desc="Replaygain_Track_Peak", text=["0.988553"]))
    f.save()

    record = read_record(str(path))

    assert record["title"] == "First"
    assert record["genres"] == ["Rock", "Shoegaze"]
    assert (record["track"], record["tracktotal"], record["disc"], record["disctotal"]) == (7, None, 2, 3)
    assert record["year"] == 2001 and record["comp"] is True and record["bpm"] == 120
    assert record["mb_trackid"] == "1a2b3c4d-0000-4000-8000-00000000000a"
    assert record["mb_albumid"] == "0e2d8b2c-6c3e-4ca6-8c5d-3b1f1e6a7d42"
    assert record["mb_artistid"] == "f6f2326f-6b25-4170-b89d-e235b25508e8"
    assert (record["rg_track_gain"], record["rg_album_gain"], record["rg_track_peak"]) == (
        -6.5,
        1.2,
        0.988553,
    )
    assert record["rg_album_peak"] is None


@pytest.mark.parametrize("date", ["2001", "2001-05-02", "2001/05/02", "2001-05-02T10:00:00"])
def test_date_shapes(tmp_path, date):
    for fmt in ("mp3", "flac", "m4a", "wv", "wma"):
        path = af.make_seed(fmt, tmp_path)
        af.write_tags(path, {"date": date}, replace=True)
        assert read_record(str(path))["year"] == 2001, (fmt, date)


def test_id3v23_file_reads_like_v24(tmp_path):
    path = af.make_seed("mp3", tmp_path)
    af.write_tags(path, af.SAMPLE_TAGS, replace=True, id3_version=3)
    assert ID3(path).version == (2, 3, 0)
    assert tag_subset(read_record(str(path))) == expected_tags(af.SAMPLE_TAGS)


def test_id3v23_slash_separated_genres_stay_one_value_like_mediafile(tmp_path):
    path = af.make_seed("mp3", tmp_path)
    f = MP3(path)
    f.add_tags()
    f.tags.add(TCON(encoding=3, text=["Rock", "Pop"]))
    f.save(v2_version=3)  # mutagen's default v2.3 separator: "Rock/Pop"
    assert read_record(str(path))["genres"] == ["Rock/Pop"]


def test_itunes_soundcheck_fills_missing_replaygain(tmp_path):
    soundcheck = " 00000A2C 00000A2C 00001D3B 00001D3B 00024CA8 00024CA8 00007FFF 00007FFF 00024CA8 00024CA8"
    mp3 = af.make_seed("mp3", tmp_path)
    f = MP3(mp3)
    f.add_tags()
    f.tags.add(COMM(encoding=3, lang="eng", desc="iTunNORM", text=[soundcheck]))
    f.save()
    m4a = af.make_seed("m4a", tmp_path)
    f = MP4(m4a)
    f.tags["----:com.apple.iTunes:iTunNORM"] = [MP4FreeForm(soundcheck.encode())]
    f.save()
    for path in (mp3, m4a):
        record = read_record(str(path))
        # -10 * log10(0x0A2C / 1000) dB; peak 0x7FFF / 32768 (as beets' mediafile decodes it)
        assert (record["rg_track_gain"], record["rg_track_peak"]) == (-4.16, 0.999969)
        reference = mediafile.MediaFile(str(path))
        assert (reference.rg_track_gain, reference.rg_track_peak) == (-4.16, 0.999969)


def test_vorbis_shapes(tmp_path):
    path = af.make_seed("ogg", tmp_path)
    f = OggVorbis(path)
    f.tags.clear()
    f.tags.extend(
        [
            ("title", "lower-case keys"),
            ("Album Artist", "Spelled With A Space"),
            ("GENRE", "Rock"),
            ("genre", "Jazz"),
            ("genre", "Rock"),  # repeated: kept once
            ("TRACKNUMBER", "3/12"),  # total only in TRACKNUMBER
            ("DISCNUMBER", "1"),
            ("DISCTOTAL", "2"),
            ("DATE", "2001/05/02"),
            ("COMPILATION", "1"),
            ("BPM", "128"),
            ("MUSICBRAINZ_ALBUMID", "0E2D8B2C-6C3E-4CA6-8C5D-3B1F1E6A7D42"),
            ("MUSICBRAINZ_TRACKID", "not-a-uuid"),
            ("REPLAYGAIN_TRACK_GAIN", "-6.50 dB"),
            ("replaygain_album_peak", "1.000000"),
            ("ARTIST", "NUL\x00inside"),
        ]
    )
    f.save()

    record = read_record(str(path))

    assert record["title"] == "lower-case keys" and record["albumartist"] == "Spelled With A Space"
    assert record["genres"] == ["Rock", "Jazz"]
    assert (record["track"], record["tracktotal"], record["disc"], record["disctotal"]) == (3, 12, 1, 2)
    assert record["year"] == 2001 and record["comp"] is True and record["bpm"] == 128
    assert record["mb_albumid"] == "0e2d8b2c-6c3e-4ca6-8c5d-3b1f1e6a7d42" and record["mb_trackid"] is None
    assert (record["rg_track_gain"], record["rg_album_peak"]) == (-6.5, 1.0)
    assert record["artist"] == "NULinside"  # PostgreSQL text cannot hold NUL


def test_numbers_an_integer_column_cannot_hold_become_none(tmp_path):
    path = af.make_seed("flac", tmp_path)
    f = FLAC(path)
    f.add_tags()
    f.tags.extend(
        [
            ("TRACKNUMBER", "99999999999"),
            ("TRACKTOTAL", "-99999999999"),
            ("DISCNUMBER", "2147483647"),
            ("DATE", "123456789012-01-01"),
            ("BPM", "12e3"),
            ("REPLAYGAIN_TRACK_GAIN", "nan dB"),
            ("REPLAYGAIN_TRACK_PEAK", "1" + "0" * 400),  # a float overflows to inf
        ]
    )
    f.save()
    record = read_record(str(path))
    assert (record["track"], record["tracktotal"], record["disc"]) == (None, None, 2147483647)
    assert (record["year"], record["bpm"]) == (None, 12)
    assert (record["rg_track_gain"], record["rg_track_peak"]) == (None, None)


def test_mp4_shapes(tmp_path):
    path = af.make_seed("m4a", tmp_path)
    f = MP4(path)
    t = f.tags
    t["trkn"] = [(5, 0)]  # 0 = no total
    t["disk"] = [(1, 1)]
    t["cpil"] = False
    t["tmpo"] = [140]
    t["\xa9day"] = ["2001-05-02T00:00:00Z"]
    t["\xa9gen"] = ["Rock", "Jazz"]
    t["----:com.apple.iTunes:MUSICBRAINZ ALBUM ID"] = [MP4FreeForm(b"0e2d8b2c-6c3e-4ca6-8c5d-3b1f1e6a7d42")]
    t["----:com.apple.iTunes:MusicBrainz Track Id"] = [MP4FreeForm(b"6b2a4f35-2f0d-4a25-9f4e-2a3d4c1b0e91")]
    t["----:com.apple.iTunes:REPLAYGAIN_TRACK_GAIN"] = [MP4FreeForm(b"-3.10 dB")]
    t["----:com.apple.iTunes:initialkey"] = [MP4FreeForm(b"Am")]
    f.save()

    record = read_record(str(path))

    assert (record["track"], record["tracktotal"], record["disc"], record["disctotal"]) == (5, None, 1, 1)
    assert record["comp"] is False and record["bpm"] == 140 and record["year"] == 2001
    assert record["genres"] == ["Rock", "Jazz"] and record["initial_key"] == "Am"
    assert record["mb_albumid"] == "0e2d8b2c-6c3e-4ca6-8c5d-3b1f1e6a7d42"  # freeform names: any case
    assert record["mb_trackid"] == "6b2a4f35-2f0d-4a25-9f4e-2a3d4c1b0e91"
    assert record["rg_track_gain"] == -3.1


def test_ape_and_asf_shapes(tmp_path):
    wv = af.make_seed("wv", tmp_path)
    t = APEv2()
    t["TITLE"] = "upper-case key"
    t["Track"] = "4"
    t["TRACKTOTAL"] = "9"
    t["Genre"] = ["Rock", "Jazz"]
    t["Year"] = "1999"
    t.save(wv)
    record = read_record(str(wv))
    assert record["title"] == "upper-case key" and record["genres"] == ["Rock", "Jazz"]
    assert (record["track"], record["tracktotal"], record["year"]) == (4, 9, 1999)

    wma = af.make_seed("wma", tmp_path)
    f = ASF(wma)
    f.tags["WM/TrackNumber"] = [ASFDWordAttribute(6)]
    f.tags["WM/IsCompilation"] = [ASFBoolAttribute(True)]
    f.tags["WM/Genre"] = ["Rock", "Jazz"]
    f.save()
    record = read_record(str(wma))
    assert (record["track"], record["comp"], record["genres"]) == (6, True, ["Rock", "Jazz"])


# --- broken files -----------------------------------------------------------------------------------


def expect_error(path, reason: str) -> ExtractError:
    with pytest.raises(ExtractError) as caught:
        read_record(str(path))
    assert str(caught.value) == reason
    return caught.value


def test_broken_files_raise_extract_error_with_a_short_reason(tmp_path):
    zero = tmp_path / "zero.mp3"
    zero.write_bytes(b"")
    err = expect_error(zero, "empty file")
    assert (err.size, err.mtime_ns) == (0, zero.stat().st_mtime_ns)

    flac = af.make_seed("flac", tmp_path)
    af.write_tags(flac, af.SAMPLE_TAGS, replace=True)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(flac.read_bytes()[:60])  # inside the Vorbis comment block
    expect_error(cut, "truncated FLAC stream")

    mp3 = af.make_seed("mp3", tmp_path)
    af.write_tags(mp3, {**af.SAMPLE_TAGS, "cover": af.cover_jpeg()}, replace=True)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(mp3.read_bytes()[:2000])  # inside its ID3 tag: no audio at all
    expect_error(cut, "truncated MP3 stream")

    for name, data in {
        "garbage.mp3": bytes(range(256)) * 40,
        "garbage.ogg": b"\x13\x37" * 3000,
        "text.m4a": b"This is not audio.\n" * 40,
        "text.flac": b"plain text, no magic\n" * 10,
        "noise.dsf": os.urandom(4096),
        "unknown.xyz": b"\x00" * 512,
    }.items():
        (tmp_path / name).write_bytes(data)
        expect_error(tmp_path / name, "not an audio file mutagen can read")

    ogg = tmp_path / "cut.ogg"
    ogg.write_bytes(af.make_seed("ogg", tmp_path).read_bytes()[:50])  # magic intact, pages cut
    assert str(pytest.raises(ExtractError, read_record, str(ogg)).value).startswith(
        ("truncated OGG stream", "corrupt OGG file")
    )


# Without the guard the parser never returns: fail within a minute, not at the suite's 15.
@pytest.mark.timeout(60)
def test_a_parser_going_round_in_circles_is_cut_short(tmp_path):
    seed = af.make_seed("mpc", tmp_path).read_bytes()
    assert seed[:4] == b"MPCK"
    looping = tmp_path / "looping.mpc"
    # An SV8 packet "XX" of size 0: mutagen seeks back onto the same packet, forever.
    looping.write_bytes(seed[:4] + b"XX\x00" + seed[4:])
    expect_error(looping, "corrupt Musepack file (parser did not terminate)")
    assert embedded_cover(str(looping)) is None


def test_corrupted_files_give_records_or_extract_errors_only(tmp_path):
    """Deterministic damage to every format (cuts, flipped bytes, clobbered headers)."""
    rng = random.Random(20261128)
    target = tmp_path / "damaged"
    outcomes = Counter()
    for fmt in af.FORMATS:
        path = af.make_seed(fmt, tmp_path)
        if fmt not in af.UNTAGGABLE:
            af.write_tags(path, {**af.SAMPLE_TAGS, "cover": af.cover_jpeg()}, replace=True)
        data = path.read_bytes()
        for _ in range(25):
            damaged = bytearray(data)
            how = rng.randrange(3)
            if how == 0:
                damaged = damaged[: rng.randrange(len(damaged))]
            elif how == 1:
                for _ in range(rng.randrange(1, 16)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            else:
                at = rng.randrange(min(len(damaged), 512))
                damaged[at : at + 4] = rng.choice([b"\xff" * 4, b"\x00" * 4, b"\x7f\xff\xff\xff"])
            file = target.with_suffix(af.EXTENSIONS[fmt])
            file.write_bytes(bytes(damaged))
            try:
                record = read_record(str(file))
                assert tuple(record) == RECORD_KEYS
                json.dumps(record)
                outcomes["record"] += 1
            except ExtractError as exc:
                assert 0 < len(str(exc)) <= 120
                outcomes["error"] += 1
            cover = embedded_cover(str(file))
            assert cover is None or (isinstance(cover[0], bytes) and cover[1].startswith(("image/", "app")))
    assert outcomes["record"] and outcomes["error"]


def test_a_file_under_the_wrong_extension_is_read_for_what_it_is(tmp_path):
    for fmt, wrong in [
        ("flac", ".mp3"),
        ("ogg", ".flac"),
        ("mp3", ".m4a"),
        ("m4a", ".ogg"),
        ("opus", ".wav"),
    ]:
        path = af.make_seed(fmt, tmp_path)
        af.write_tags(path, {"title": f"a {fmt}"}, replace=True)
        liar = path.rename(tmp_path / f"liar-{fmt}{wrong}")
        record = read_record(str(liar))
        assert (record["format"], record["title"]) == (af.FORMAT_NAMES[fmt], f"a {fmt}")

    # A FLAC with an ID3v2 tag in front (some taggers do that), named .mp3.
    flac = af.make_seed("flac", tmp_path)
    af.write_tags(flac, {"title": "flac behind id3"}, replace=True)
    id3 = ID3()
    id3.add(TIT2(encoding=3, text=["id3 title"]))
    prefixed = tmp_path / "prefixed.mp3"
    id3.save(prefixed)
    with open(prefixed, "ab") as out:
        out.write(flac.read_bytes())
    record = read_record(str(prefixed))
    assert (record["format"], record["title"]) == ("FLAC", "flac behind id3")


def test_vanished_directories_and_fifos_are_errors_not_crashes_or_hangs(tmp_path):
    err = expect_error(tmp_path / "gone.mp3", "file vanished")
    assert (err.size, err.mtime_ns) == (None, None)
    expect_error(tmp_path / "gone" / "deeper.flac", "file vanished")
    (tmp_path / "file").write_bytes(b"x")
    expect_error(tmp_path / "file" / "below-a-file.mp3", "file vanished")

    (tmp_path / "folder.mp3").mkdir()
    expect_error(tmp_path / "folder.mp3", "not a regular file")

    fifo = tmp_path / "pipe.mp3"
    os.mkfifo(fifo)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(extract_paths([str(fifo)])), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert outcome[0][1][0]["error"] == "not a regular file"


def test_extract_paths_splits_records_and_errors_and_never_raises(tmp_path):
    good = af.make_seed("flac", tmp_path)
    af.write_tags(good, {"title": "good"}, replace=True)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"nope" * 100)
    paths = [str(good), str(bad), str(tmp_path / "gone.ogg"), "nul\x00.mp3", None, 42]

    records, errors = extract_paths(iter(paths))

    assert [r["title"] for r in records] == ["good"]
    assert [set(e) for e in errors] == [{"path", "error", "size", "mtime_ns"}] * 5
    assert [(e["path"], e["error"]) for e in errors] == [
        (str(bad), "not an audio file mutagen can read"),
        (str(tmp_path / "gone.ogg"), "file vanished"),
        ("nul\x00.mp3", "invalid path"),
        ("None", "invalid path"),
        ("42", "invalid path"),
    ]
    assert (errors[0]["size"], errors[0]["mtime_ns"]) == (400, bad.stat().st_mtime_ns)
    json.dumps([records, errors])


def test_bad_files_as_the_extract_stage_sees_them(tmp_path):
    """add_bad_files' kinds, read directly by extract as root (the walk decides the rest)."""
    bad = af.add_bad_files(tmp_path)
    assert set(bad.values()) == set(af.BAD_FILE_KINDS)
    # What extract itself says, as root. Where this differs from the kind's outcome, the walk
    # (non-UTF-8 name, symlink, fifo, locked folder) or the worker's privileges (mode 000) decide.
    as_root = {
        "error:zero_byte": "empty file",
        "error:truncated_header": "truncated FLAC stream",
        "track:truncated_audio": "MP3",
        "error:garbage": "not an audio file mutagen can read",
        "error:text_as_audio": "not an audio file mutagen can read",
        "track:flac_named_mp3": "FLAC",
        "track:newline_in_name": "MP3",
        "error:non_utf8_name": "MP3",
        "error:symlink_loop": "not a regular file",
        "track:inside_symlink_loop": "MP3",
        "track:inside_dir_named_like_audio": "FLAC",
        "error:fifo": "not a regular file",
        "error:unreadable_file": "MP3",
        "error:unreadable_dir": "not a regular file",
        "track:ogg_named_mp3": "OGG",
        "error:garbage_named_audio": "not an audio file mutagen can read",
        "track:huge_comment": "MP3",
        "track:huge_picture": "FLAC",
        "track:huge_title": "OGG",
        "error:huge_artist": "MP3",  # read fine: the database refuses to index it (insert)
        "track:latin1_id3v1": "MP3",
        "track:latin1_id3v23": "MP3",
        "track:utf16_id3v23": "MP3",
        "track:nul_in_tag": "OGG",
    }
    records, errors = extract_paths(list(bad))
    seen = {bad[r["path"]]: r["format"] for r in records} | {bad[e["path"]]: e["error"] for e in errors}
    assert seen == as_root
    latin1 = next(p for p, kind in bad.items() if kind == "error:non_utf8_name")
    assert os.fsencode(latin1).endswith(b"/caf\xe9.mp3") and os.path.isfile(latin1)
    assert any(r["title"] == "Café Latin-1" for r in records)
    titles = {bad[r["path"]]: r["title"] for r in records}
    assert {kind: titles[kind] for kind in af.ODD_TITLES} == af.ODD_TITLES
    assert len(titles["track:huge_title"]) == 100_000
    huge = {bad[r["path"]]: r for r in records}
    assert huge["track:huge_picture"]["has_cover"] and len(huge["error:huge_artist"]["artist"]) == 20_000
    garbage = [p for p, kind in bad.items() if kind == "error:garbage_named_audio"]
    assert sorted(os.path.splitext(p)[1] for p in garbage) == [".flac", ".mp3", ".wav"]
    link = next(p for p, kind in bad.items() if kind == "error:symlink_loop")
    assert os.readlink(link) == ".." and os.path.realpath(link) == os.path.dirname(os.path.dirname(link))


# --- covers -----------------------------------------------------------------------------------------


def test_embedded_cover_prefers_the_front_cover_and_sniffs_the_type(tmp_path):
    front, back = png_bytes(), af.cover_jpeg("back")
    mp3 = af.make_seed("mp3", tmp_path)
    f = MP3(mp3)
    f.add_tags()
    f.tags.add(APIC(encoding=3, mime="image/jpeg", type=4, desc="back", data=back))
    f.tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="front", data=front))  # mislabelled
    f.save()
    assert embedded_cover(str(mp3)) == (front, "image/png")

    flac = af.make_seed("flac", tmp_path)
    f = FLAC(flac)
    for kind, data in ((0, back), (3, front)):
        pic = Picture()
        pic.type, pic.mime, pic.data = kind, "", data
        f.add_picture(pic)
    f.save()
    assert embedded_cover(str(flac)) == (front, "image/png")
    assert read_record(str(flac))["has_cover"] is True

    ogg = af.make_seed("ogg", tmp_path)
    f = OggVorbis(ogg)
    f.tags["COVERART"] = [base64.b64encode(back).decode()]  # the legacy field, no type: first wins
    f.save()
    assert embedded_cover(str(ogg)) == (back, "image/jpeg")
    assert read_record(str(ogg))["has_cover"] is True

    plain = af.make_seed("m4a", tmp_path)
    assert embedded_cover(str(plain)) is None
    (tmp_path / "broken.mp3").write_bytes(b"broken")
    assert embedded_cover(str(tmp_path / "broken.mp3")) is None
    assert embedded_cover(str(tmp_path / "gone.flac")) is None


# --- what the extract stage changes in mutagen's loading (MP3, MP4, Vorbis comments, ID3 frames) ---


def frames(tags) -> dict:
    return {key: repr(tags[key]) for key in tags}


@pytest.mark.parametrize("version", [3, 4])
def test_an_id3_tag_loads_as_mutagens_own_class_translates_it(tmp_path, version):
    from backend_worker.stages import extract

    path = af.make_seed("mp3", tmp_path)
    af.write_tags(path, af.SAMPLE_TAGS, replace=True, id3_version=version)
    assert frames(extract.MP3(path).tags) == frames(MP3(path).tags)
    # A v2.4 tag carrying v2.3 date frames (what some taggers write): translated as mutagen does.
    tags = ID3(path)
    tags.delall("TDRC")
    tags.add(TYER(encoding=3, text=["1999"]))
    tags.add(TDAT(encoding=3, text=["0205"]))
    tags.save(path, v2_version=version)
    ours, theirs = extract.MP3(path).tags, MP3(path).tags
    assert frames(ours) == frames(theirs) and str(ours["TDRC"]) == "1999-05-02"
    assert read_record(str(path))["year"] == 1999


def test_id3v1_genre_numbers_in_a_v24_tag_read_as_names(tmp_path):
    path = af.make_seed("mp3", tmp_path)
    tags = ID3()
    tags.add(TCON(encoding=3, text=["(17)Rock", "(8)", "Jazz"]))
    tags.save(path, v2_version=4)
    translated = MP3(path).tags["TCON"].text  # mutagen's own class turns the numbers into names
    assert translated == ["Rock", "Jazz", "Jazz"]
    assert read_record(str(path))["genres"] == ["Rock", "Jazz"]  # a genre once, as always


def test_mp4_tags_load_as_mutagens_own_class_loads_them(tmp_path):
    from backend_worker.stages import extract

    path = af.make_seed("m4a", tmp_path)
    f = MP4(path)
    f.tags["trkn"] = [(5, 12)]
    f.tags["disk"] = [(1, 2)]
    f.tags["cpil"] = True
    f.tags["tmpo"] = [140]
    f.tags["\xa9nam"] = ["Title"]
    f.tags["\xa9gen"] = ["Rock", "Jazz"]
    f.tags["----:com.apple.iTunes:MusicBrainz Track Id"] = [MP4FreeForm(b"6b2a4f35-2f0d-4a25")]
    f.tags["covr"] = [MP4Cover(png_bytes(), imageformat=14)]
    f.save()

    ours, theirs = extract.MP4(path).tags, MP4(path).tags
    assert isinstance(ours, extract.MP4Tags) and type(ours) is not type(theirs)
    assert sorted(ours.keys()) == sorted(theirs.keys()) and len(ours.keys()) == 8
    for key in theirs:
        assert ours[key] == theirs[key] and repr(ours[key]) == repr(theirs[key]), key
    assert ours["covr"][0].imageformat == 14


def test_the_vorbis_key_rule_is_mutagens():
    import mutagen._vorbis

    from backend_worker.stages.extract import is_valid_vorbis_key

    # mutagen's own function: the module's `is_valid_key` is ours once extract is imported, and
    # `istag` is the name mutagen keeps for the original.
    original = mutagen._vorbis.istag
    assert mutagen._vorbis.is_valid_key is is_valid_vorbis_key and original is not is_valid_vorbis_key
    keys = ["", "TITLE", "Album Artist", "a=b", "=", "}", "~", "ÉTÉ", "x\n", "\x00", "tab\there"]
    keys += [chr(c) for c in range(0x300)] + [f"A{chr(c)}Z" for c in range(0x300)]
    for key in keys:
        assert is_valid_vorbis_key(key) is original(key), repr(key)
    for bad in (b"TITLE", 3):
        with pytest.raises(TypeError):
            is_valid_vorbis_key(bad)
        with pytest.raises(TypeError):
            original(bad)


def test_vorbis_comments_load_as_mutagens_own_loader_loads_them():
    import io
    import struct

    import mutagen._vorbis

    from backend_worker.stages import extract

    def block(vendor: bytes, comments: list[bytes], framing: bytes = b"\x01") -> bytes:
        body = struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments))
        return body + b"".join(struct.pack("<I", len(c)) + c for c in comments) + framing

    def load(loader, data: bytes, framing: bool, errors: str = "replace", strict: bool = False):
        """Comments, vendor, exception and position after; ``strict``: read as FLAC reads its
        comment block, from the file behind a reader raising on short reads."""
        comment, fileobj = mutagen._vorbis.VComment(), io.BytesIO(b"head" + data)
        fileobj.seek(4)
        try:
            loader(comment, StrictFileObject(fileobj) if strict else fileobj, errors, framing)
            outcome = None
        except Exception as exc:  # the same exception, whatever it is
            outcome = (type(exc), str(exc))
        return list(comment), comment.vendor, outcome, fileobj.tell()

    comments = [b"TITLE=Song", "ARTIST=Ève".encode(), b"no equals sign", "ÉTÉ=x".encode(), b"a}b=c",
                b"~bad=1", b"=empty name", b"GENRE=Rock=Pop", b"\xff\xfe=bad utf-8", b"TRACK=3"]  # fmt: skip
    blobs = [block(b"Mutagen", comments), block(b"", []), block("vendør".encode(), comments[:2], b"\x00"),
             block(b"v", comments, b""), block(b"v", comments, b"\x03rest of the packet")]  # fmt: skip
    whole = block(b"vendor", comments)
    blobs += [whole[:cut] for cut in range(0, len(whole), 7)]  # truncated anywhere
    blobs.append(struct.pack("<I", 2**31) + b"vendor")  # lengths past the end
    blobs.append(block(b"v", [])[:-1] + b"\xff\xff\xff\xff" + struct.pack("<I", 4) + b"A=bc")
    long = [b"LYRICS=" + b"la " * 3000, *comments, b"COMMENT=" + b"x" * 9000]  # past the first read
    blobs += [block(b"v", long), block(b"v", long) + b"audio" * 5000, block(b"v", long)[:5000]]
    for data in blobs:
        for framing in (True, False):
            for strict in (False, True):
                ours = load(extract.load_vorbis_comment, data, framing, strict=strict)
                theirs = load(extract._mutagen_vcomment_load, data, framing, strict=strict)
                assert ours == theirs, (data[:100], framing, strict)
    assert load(extract.load_vorbis_comment, blobs[0], True)[0][:2] == [("TITLE", "Song"), ("ARTIST", "Ève")]
    # errors="strict" (no mutagen file class asks for it) is mutagen's own loader.
    strict = load(extract.load_vorbis_comment, blobs[0], True, "strict")
    assert strict[2][0] is mutagen._vorbis.VorbisEncodingError
    assert mutagen._vorbis.VComment.load is extract.load_vorbis_comment


def test_flac_and_ogg_files_load_the_comments_mutagens_loader_loads(tmp_path, monkeypatch):
    import mutagen._vorbis

    from backend_worker.stages import extract

    tags = {**af.SAMPLE_TAGS, "title": "la " * 4000}  # a block longer than the first read
    loaded = {}
    for ext in ("flac", "ogg", "opus"):
        path = af.make_seed(ext, tmp_path)
        af.write_tags(path, tags, replace=True)
        for loader in (extract.load_vorbis_comment, extract._mutagen_vcomment_load):
            monkeypatch.setattr(mutagen._vorbis.VComment, "load", loader)
            audio = mutagen.File(path)
            blocks = [(type(b).__name__, len(b.write())) for b in getattr(audio, "metadata_blocks", ())]
            loaded[loader] = (list(audio.tags), audio.tags.vendor, blocks, getattr(audio.tags, "_padding", 0))
        assert loaded[extract.load_vorbis_comment] == loaded[extract._mutagen_vcomment_load], ext
        assert ("TITLE", "la " * 4000) in [(k.upper(), v) for k, v in loaded[extract.load_vorbis_comment][0]]


def _id3_tag(version: int, frames: list[tuple[bytes, bytes, int]], unsynch: bool = False) -> bytes:
    """A raw ID3v2.<version> tag holding (frame id, frame data, frame flags) frames."""

    def syncsafe(n: int) -> bytes:
        return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])

    body = b"".join(
        name + (syncsafe(len(data)) if version == 4 else struct.pack(">I", len(data)))
        + struct.pack(">H", flags) + data
        for name, data, flags in frames
    )  # fmt: skip
    return b"ID3" + bytes([version, 0, 0x80 if unsynch else 0]) + syncsafe(len(body)) + body


def test_id3_frames_load_as_mutagens_own_frame_reader_loads_them(monkeypatch):
    import io

    from mutagen.id3._frames import Frame

    from backend_worker.stages import extract

    texts = [b"", b"\x00", b"a", b"a\x00", b"a\x00b", b"a\x00b\x00", b"a\x00\x00b", b"a\x00\x00", b"\x00\x0a",
             "Sigur Rós".encode(), "Sigur Rós".encode("latin-1"), b"\xff\xfe bad", b"x" * 300]  # fmt: skip
    frames: list[tuple[bytes, bytes, int]] = []
    for encoding in (0, 1, 2, 3, 4):
        for text in texts:
            frames.append((b"TIT2", bytes([encoding]) + text, 0))
            frames.append((b"TXXX", bytes([encoding]) + b"desc\x00" + text, 0))
            frames.append((b"TXXX", bytes([encoding]) + text, 0))  # the text is the description
    frames.append((b"TPE1", b"\x01" + "Ève".encode("utf-16") + b"\x00\x00", 0))
    frames.append((b"TRCK", b"\x03" + b"3/12", 0))
    frames.append((b"TDRC", b"\x03" + b"2001-05-02", 0))
    frames.append((b"TALB", b"\x03" + b"flagged", 0x0040))  # grouping: mutagen's own path
    frames.append((b"UFID", b"http://musicbrainz.org\x00" + b"6b2a4f35", 0))

    def load(data: bytes) -> dict:
        tags = extract.ID3(io.BytesIO(data), translate=False)
        return {key: (repr(frame), frame.__dict__) for key, frame in tags.items()}

    tags = []
    for version in (3, 4):
        tags += [_id3_tag(version, [frame]) for frame in frames]  # one each: same ids would merge
        tags.append(_id3_tag(version, frames[-5:]))
        tags.append(_id3_tag(version, frames[:5], unsynch=True))
    ours = [load(data) for data in tags]
    monkeypatch.setattr(Frame, "_fromData", classmethod(extract._mutagen_frame_from_data))
    theirs = [load(data) for data in tags]
    assert ours == theirs
    assert sum(1 for loaded in ours if loaded) > 100  # most of them are frames mutagen keeps
