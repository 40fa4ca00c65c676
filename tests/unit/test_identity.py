"""identity.audio_key on real encoded files: copies and retags keep the key, other audio changes it."""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from mutagen.apev2 import APEv2
from mutagen.oggflac import OggFLAC
from mutagen.oggspeex import OggSpeex

from backend_worker.stages import identity
from testkit import audio_fixtures as af

SECONDS = 2.0
RULES = {
    "mp3": "id3",
    "flac": "flac",
    "ogg": "ogg",
    "opus": "ogg",
    "m4a": "mp4",
    "alac": "mp4",
    "aac": "id3",
    "wav": "riff",
    "aiff": "aiff",
    "wma": "asf",
    "wv": "id3",
    "mpc": "id3",
    "ape": "id3",
    "dsf": "dsf",
}
# "m4a-faststart": the AAC seed remuxed with moov before mdat, so that a bigger tag moves mdat.
TAGGABLE = [fmt for fmt in af.FORMATS if fmt not in af.UNTAGGABLE]
RETAG_CASES = [("mp3", 3), *((fmt, 4) for fmt in TAGGABLE), ("m4a-faststart", 4)]
HEX32 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # a UUID's form


def key(path: Path | str) -> str:
    return identity.audio_key(str(path))


def region(path: Path) -> tuple[int, int, str]:
    with open(path, "rb") as f:
        return identity.audio_region(f, os.fstat(f.fileno()).st_size)


def make_seed(fmt: str, folder: Path, seconds: float = SECONDS) -> Path:
    if fmt != "m4a-faststart":
        return af.make_seed(fmt, folder, seconds=seconds)
    seed = af.make_seed("m4a", folder, seconds=seconds, name="plain.m4a")
    out = folder / "faststart.m4a"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(seed), "-c", "copy"]
        + ["-map_metadata", "-1", "-fflags", "+bitexact", "-movflags", "+faststart", str(out)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    return out


def other_recording(fmt: str, folder: Path) -> Path:
    """A recording of ``fmt`` as long as its seed, of other audio (an 880 Hz sine, other DSD bits)."""
    out = folder / f"other{af.EXTENSIONS[fmt]}"
    sine = f"sine=frequency=880:sample_rate={af.SAMPLE_RATE}:duration={SECONDS}"
    bitexact = [
        "-ac",
        str(af.CHANNELS),
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
    ]
    if fmt == "dsf":
        data = bytearray(af.make_seed("dsf", folder).read_bytes())
        start = data.index(b"data") + 12
        data[start:] = data[start:].replace(b"\x69", b"\x96")  # silence the other way round
        out.write_bytes(data)
    elif fmt == "mpc":
        wav = folder / "other-source.wav"
        af._ffmpeg_lavfi(sine, wav, [*bitexact, "-c:a", "pcm_s16le"])
        subprocess.run(
            ["mpcenc", "--silent", "--overwrite", str(wav), str(out)], check=True, capture_output=True
        )
    else:
        af._ffmpeg_lavfi(sine, out, [*bitexact, *af._FFMPEG[fmt][1]])
    return out


@pytest.fixture(scope="module")
def big_tags() -> dict:
    """Tags that outgrow any padding: a 200 KB cover and long text fields."""
    rng = random.Random(7)
    words = "".join(rng.choices("abcdefghij klmnopqrstuvwxyz", k=20_000))
    return {
        "title": words[:5000],
        "album": words[5000:10000],
        "artist": words[10000:13000],
        "composer": words[13000:],
        "cover": af.cover_jpeg("identity") + rng.randbytes(200_000),
    }


# --------------------------------------------------------------------------------------------
# Real files


@pytest.mark.parametrize("fmt", af.FORMATS)
def test_each_format_has_its_rule_and_a_copy_has_the_same_key(fmt, tmp_path):
    path = make_seed(fmt, tmp_path)
    start, end, how = region(path)
    assert how == RULES[fmt]
    assert 0 <= start < end <= path.stat().st_size
    original = key(path)
    assert HEX32.fullmatch(original)
    copy = tmp_path / "copies" / f"moved and renamed{path.suffix}"
    copy.parent.mkdir()
    shutil.copy2(path, copy)
    assert key(copy) == original


@pytest.mark.parametrize(("fmt", "id3_version"), RETAG_CASES, ids=lambda v: str(v))
def test_retag_keeps_the_key(fmt, id3_version, tmp_path, big_tags):
    path = make_seed(fmt, tmp_path)
    untagged = key(path)

    af.write_tags(path, af.SAMPLE_TAGS, replace=True, id3_version=id3_version)
    tagged = path.read_bytes()
    assert key(path) == untagged

    # A small change: a title of the same length is rewritten in place, within the padding.
    title = af.SAMPLE_TAGS["title"]
    af.write_tags(path, {"title": title.upper()}, id3_version=id3_version)
    small = path.read_bytes()
    assert small != tagged and len(small) == len(tagged)
    assert key(path) == untagged

    # A big change: mutagen rewrites the file (tags grow past the padding, Ogg pages are
    # renumbered, mdat moves behind a grown moov).
    before = region(path)
    af.write_tags(path, big_tags, id3_version=id3_version)
    big = path.read_bytes()
    assert len(big) >= len(small) + 200_000
    after = region(path)
    assert after[2] == RULES.get(fmt, "mp4")
    assert after[1] - after[0] == before[1] - before[0]
    assert key(path) == untagged
    if fmt in ("ogg", "opus"):
        # The audio pages' headers changed (sequence numbers, CRCs), their bodies did not.
        assert small[before[0] : before[1]] != big[after[0] : after[1]]
    if fmt in ("mp3", "flac", "ogg", "opus", "wma", "m4a-faststart"):
        assert after[0] > before[0]  # the audio moved behind the bigger tags


@pytest.mark.parametrize("fmt", af.FORMATS)
def test_other_audio_of_the_same_length_has_another_key(fmt, tmp_path):
    path = make_seed(fmt, tmp_path)
    if fmt == "ape":
        # Monkey's Audio seeds are digital silence written by hand: other audio means another length.
        other = make_seed(fmt, tmp_path / "longer", seconds=SECONDS * 2)
    else:
        other = other_recording(fmt, tmp_path)
        assert region(other)[2] == RULES[fmt]
    assert key(other) != key(path)


@pytest.mark.parametrize("fmt", af.FORMATS)
def test_other_length_has_another_key(fmt, tmp_path):
    path = make_seed(fmt, tmp_path)
    if fmt == "dsf":  # DSF seeds have one length whatever is asked
        shorter = tmp_path / "shorter.dsf"
        shorter.write_bytes(af._dsf_bytes(af.DSF_SECONDS / 2))
    else:
        shorter = make_seed(fmt, tmp_path / "shorter", seconds=SECONDS / 2)
    assert key(shorter) != key(path)


def test_every_seed_has_its_own_key(tmp_path):
    keys = {fmt: key(make_seed(fmt, tmp_path)) for fmt in af.FORMATS}
    assert len(set(keys.values())) == len(keys)


@pytest.mark.parametrize(
    ("codec", "args", "kind"),
    [
        ("flac", ["-ac", "2", "-c:a", "flac", "-f", "ogg"], OggFLAC),
        ("speex", ["-ar", "16000", "-ac", "1", "-c:a", "libspeex", "-f", "ogg"], OggSpeex),
    ],
)
def test_other_ogg_codecs_keep_their_key(codec, args, kind, tmp_path, big_tags):
    """FLAC in Ogg (1 + n header packets) and Speex (2 + extra headers), which the kit does not make."""
    path = tmp_path / f"{codec}.oga"
    sine = f"sine=frequency=440:sample_rate={af.SAMPLE_RATE}:duration={SECONDS}"
    af._ffmpeg_lavfi(sine, path, ["-map_metadata", "-1", "-fflags", "+bitexact", *args])
    assert region(path)[2] == "ogg"
    untagged = key(path)
    f = kind(path)
    f["TITLE"] = [big_tags["title"] * 40]  # 200 KB of comment pages
    f.save()
    assert key(path) == untagged
    assert region(path)[0] > 200_000


def test_moving_mdat_as_a_whole_keeps_the_key(tmp_path):
    path = make_seed("m4a", tmp_path)
    faststart = make_seed("m4a-faststart", tmp_path)
    assert region(faststart)[0] > region(path)[0]
    assert key(faststart) == key(path)


# --------------------------------------------------------------------------------------------
# Tags at the end of a stream, short regions, the key's recipe


def _apev2(path: Path) -> None:
    tag = APEv2()
    tag["Title"] = "Appended"
    tag["Cover Art (Front)"] = b"cover.jpg\x00" + bytes(range(256)) * 40  # a binary item, ~10 KB
    tag.save(path)


def _lyrics3v2(text: str) -> bytes:
    field = b"LYR" + b"%05d" % len(text) + text.encode("latin-1")
    body = b"LYRICSBEGIN" + b"IND00002" + b"10" + field
    return body + b"%06d" % len(body) + b"LYRICS200"


def _id3v1(title: str) -> bytes:
    return b"TAG" + title.encode("latin-1").ljust(30, b"\0") + bytes(94) + b"\xff"


def test_tags_at_the_end_of_a_stream_are_cut_off(tmp_path):
    path = make_seed("mp3", tmp_path)
    untagged = key(path)
    _apev2(path)
    with open(path, "ab") as f:
        f.write(_lyrics3v2("la la la\r\nla") + b"TAG+" + bytes(223) + _id3v1("Old Title"))
    assert key(path) == untagged
    af.write_tags(path, af.SAMPLE_TAGS, replace=True)  # ID3v2 in front too
    assert key(path) == untagged
    for fmt in ("wv", "mpc", "ape"):  # APEv2 behind (what write_tags writes), ID3v1 after it
        path = make_seed(fmt, tmp_path)
        untagged = key(path)
        af.write_tags(path, af.SAMPLE_TAGS)
        with open(path, "ab") as f:
            f.write(_id3v1("Old Title"))
        assert key(path) == untagged, fmt
    for fmt in ("flac", "m4a"):  # ID3v1 appended by an old tagger
        path = make_seed(fmt, tmp_path)
        untagged = key(path)
        with open(path, "ab") as f:
            f.write(_id3v1("Old Title"))
        assert region(path)[2] == RULES[fmt]
        assert key(path) == untagged, fmt


def test_zeros_after_an_id3v2_tag_are_padding(tmp_path):
    path = make_seed("mp3", tmp_path)
    untagged = key(path)
    audio = path.read_bytes()
    size = 500  # an empty ID3v2.3 tag, then 3,000 zeros outside its size
    header = b"ID3\x03\x00\x00" + bytes([size >> 21 & 127, size >> 14 & 127, size >> 7 & 127, size & 127])
    path.write_bytes(header + bytes(size) + bytes(3000) + audio)
    assert key(path) == untagged


def test_id3v2_in_front_of_a_flac_stream_is_skipped(tmp_path):
    path = make_seed("flac", tmp_path)
    untagged = key(path)
    tag = b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128)  # 128 bytes of padding
    path.write_bytes(tag + path.read_bytes())
    assert region(path)[2] == "flac"
    assert key(path) == untagged


def _wav(samples: bytes, extra_chunks: bytes = b"") -> bytes:
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, 44100, 44100 * 4, 4, 16)
    data = b"data" + struct.pack("<I", len(samples)) + samples + b"\0" * (len(samples) & 1)
    body = b"WAVE" + fmt + extra_chunks + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _atom(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I", 8 + len(content)) + kind + content


def test_the_largest_mdat_is_the_audio(tmp_path):
    audio = random.Random(4).randbytes(50_000)
    ftyp = _atom(b"ftyp", b"M4A \x00\x00\x02\x00")
    path = tmp_path / "two.m4a"
    path.write_bytes(ftyp + _atom(b"mdat", b"small") + _atom(b"mdat", audio) + _atom(b"moov", bytes(64)))
    start = len(ftyp) + 13 + 8
    assert region(path) == (start, start + len(audio), "mp4")
    original = key(path)
    path.write_bytes(ftyp + _atom(b"moov", bytes(9000)) + _atom(b"free", bytes(100)) + _atom(b"mdat", audio))
    assert key(path) == original
    # a 64-bit size, and a size of 0 (to the end of the file)
    path.write_bytes(ftyp + struct.pack(">I4sQ", 1, b"mdat", 16 + len(audio)) + audio)
    assert key(path) == original
    path.write_bytes(ftyp + _atom(b"moov", bytes(10)) + struct.pack(">I4s", 0, b"mdat") + audio)
    assert key(path) == original


def test_a_short_region_is_hashed_whole(tmp_path):
    samples = bytes(random.Random(1).randbytes(3 * identity.WINDOW))
    path = tmp_path / "short.wav"
    path.write_bytes(_wav(samples))
    original = key(path)
    path.write_bytes(_wav(samples, extra_chunks=b"LIST" + struct.pack("<I", 12) + b"INFOINAM\0\0\0\0"))
    assert key(path) == original  # a tag chunk in front of the data
    for index in range(0, len(samples), 97):  # any changed byte changes the key
        changed = bytearray(samples)
        changed[index] ^= 1
        path.write_bytes(_wav(bytes(changed)))
        assert key(path) != original, index


def test_a_long_region_is_sampled_at_its_start_thirds_and_end(tmp_path):
    length = 100 * identity.WINDOW
    samples = random.Random(2).randbytes(length)
    path = tmp_path / "long.wav"
    path.write_bytes(_wav(samples))
    original = key(path)
    step = (length - identity.WINDOW) // 3
    for index in (0, step + 5, 2 * step + identity.WINDOW - 1, length - 1):
        changed = bytearray(samples)
        changed[index] ^= 1
        path.write_bytes(_wav(bytes(changed)))
        assert key(path) != original, index


def test_the_key_version_is_part_of_the_key(tmp_path, monkeypatch):
    path = make_seed("mp3", tmp_path)
    original = key(path)
    monkeypatch.setattr(identity, "KEY_VERSION", identity.KEY_VERSION + 1)
    assert key(path) != original


def test_audio_region_reads_a_descriptor_a_file_or_bytes(tmp_path):
    path = make_seed("flac", tmp_path)
    af.write_tags(path, af.SAMPLE_TAGS, replace=True)
    size = path.stat().st_size
    expected = region(path)
    assert expected[2] == "flac" and expected[0] > 0
    with open(path, "rb") as f:
        assert identity.audio_region(f.fileno(), size) == expected
        assert f.tell() == 0  # read at offsets, the position is left alone
    assert identity.audio_region(io.BytesIO(path.read_bytes()), size) == expected


# --------------------------------------------------------------------------------------------
# Malformed, unknown and unreadable files


def test_empty_and_random_files_are_keyed_whole(tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    assert region(empty) == (0, 0, "whole")
    assert HEX32.fullmatch(key(empty))
    rng = random.Random(3)
    keys = set()
    for index in range(3):
        noise = tmp_path / f"noise{index}.flac"
        noise.write_bytes(b"\0" + rng.randbytes(20_000))  # no magic, no frame sync
        assert region(noise) == (0, 20_001, "whole")
        keys.add(key(noise))
        copy = tmp_path / f"copy{index}.flac"
        shutil.copyfile(noise, copy)
        assert key(copy) == key(noise)
    assert len(keys) == 3


@pytest.mark.parametrize("fmt", af.FORMATS)
def test_truncated_files_return_a_key(fmt, tmp_path, big_tags):
    path = make_seed(fmt, tmp_path)
    if fmt not in af.UNTAGGABLE:
        af.write_tags(path, big_tags)
    data = path.read_bytes()
    for cut in (5, 12, 60, 1000, 100_000, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        start, end, how = region(path)
        assert 0 <= start <= end <= cut
        assert HEX32.fullmatch(key(path))
    path.write_bytes(data[:60])
    if fmt in ("flac", "ogg", "opus", "m4a", "alac", "wma", "wav", "aiff", "dsf"):
        assert region(path)[2] == "whole"  # cut inside its headers


ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
MP3_FRAME = b"\xff\xfb\x90\x00" + bytes(100)
GARBAGE = {
    "flac block past the end": b"fLaC\x00\x7f\xff\xff" + bytes(100),
    "flac without a last block": b"fLaC" + b"\x01\x00\x00\x00" * 20_000,
    "atom past the end": b"\x00\x00\x00\x18ftypM4A " + bytes(12) + b"\x7f\x00\x00\x00mdat" + bytes(100),
    "atoms without mdat": b"\x00\x00\x00\x10ftypM4A \x00\x00\x00\x00" + b"\x00\x00\x00\x08free" * 20_000,
    "atom of size 4": b"\x00\x00\x00\x10ftypM4A \x00\x00\x00\x00\x00\x00\x00\x04mdat" + bytes(100),
    "ogg of an unknown codec": b"OggS\x00\x02" + bytes(20) + b"\x01\x1e" + b"\x01theora" + bytes(100),
    "ogg page past the end": b"OggS\x00\x02" + bytes(20) + b"\x01\xff" + b"\x01vorbis" + bytes(100),
    "riff without data": b"RIFF\x00\x00\x00\x00WAVE" + b"junk\x00\x00\x00\x00" * 20_000,
    "riff data past the end": b"RIFF\x00\x00\x00\x00WAVEdata\xff\xff\x00\x00" + bytes(100),
    "asf without data object": ASF_HEADER + struct.pack("<Q", 30) + bytes(200),
    "dsf of zero-sized chunks": b"DSD \x1c" + bytes(27) + b"fmt " + bytes(200),
    "id3v2 past the end": b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + bytes(100),
    "apev2 footer past the start": MP3_FRAME + b"APETAGEX" + struct.pack("<4I", 2000, 9999, 1, 0) + bytes(8),
}  # fmt: skip


@pytest.mark.parametrize("name", GARBAGE)
def test_malformed_structures_are_keyed_whole(name, tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(GARBAGE[name])
    assert region(path) == (0, len(GARBAGE[name]), "whole")
    assert HEX32.fullmatch(key(path))


def test_unreadable_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        key(tmp_path / "missing.mp3")
    with pytest.raises(IsADirectoryError):
        key(tmp_path)
    fifo = tmp_path / "pipe.mp3"
    os.mkfifo(fifo)
    result: list = []
    # A named pipe must neither block nor pass for an empty file.
    thread = threading.Thread(target=lambda: result.append(pytest.raises(OSError, key, fifo)), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive() and result
