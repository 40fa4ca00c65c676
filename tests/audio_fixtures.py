"""Real encoded audio for tests and benchmarks: seeds, tagging, whole libraries, bad files.

- ``make_seed(fmt, dest_dir)``: a short untagged file per format (ffmpeg sine; mpcenc for
  Musepack; Monkey's Audio and DSF are written by hand, see ``_ape_bytes`` / ``_dsf_bytes``).
  Seeds are cached in ``cache_dir()`` so repeated runs don't re-encode.
- ``write_tags(path, tags)``: the file's tags become exactly ``tags`` (beets' field names), in
  each tag family's usual shape (ID3 UFID/TXXX, MP4 freeform, Vorbis comments, APEv2, ASF).
- ``build_library(root, ...)``: ``root/<Artist>/<Album>/<NN - Title>.<ext>`` with realistic tags;
  returns the expected record subset per file.
- ``add_bad_files(root)``: the awkward cases; ``BAD_FILE_OUTCOMES`` says what each must become.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import struct
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import mutagen
from mutagen.aiff import AIFF
from mutagen.apev2 import BINARY, APEv2, APEValue
from mutagen.asf import ASF, ASFByteArrayAttribute
from mutagen.dsf import DSF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import (
    APIC,
    TALB,
    TBPM,
    TCMP,
    TCOM,
    TCON,
    TDRC,
    TIT2,
    TKEY,
    TPE1,
    TPE2,
    TPOS,
    TRCK,
    TXXX,
    UFID,
)
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

RECIPE_VERSION = 1  # bump when a seed recipe changes: cached seeds are keyed by it

# fmt -> (extension, ffmpeg output arguments). "mpc", "ape", "dsf" are made otherwise.
_FFMPEG: dict[str, tuple[str, list[str]]] = {
    "mp3": (".mp3", ["-c:a", "libmp3lame", "-b:a", "96k"]),
    "flac": (".flac", ["-c:a", "flac", "-sample_fmt", "s16"]),
    "ogg": (".ogg", ["-c:a", "libvorbis", "-q:a", "1"]),
    "opus": (".opus", ["-c:a", "libopus", "-b:a", "32k"]),
    "m4a": (".m4a", ["-c:a", "aac", "-b:a", "64k"]),
    "alac": (".m4a", ["-c:a", "alac", "-sample_fmt", "s16p"]),
    "aac": (".aac", ["-c:a", "aac", "-b:a", "64k", "-f", "adts"]),
    "wav": (".wav", ["-c:a", "pcm_s16le"]),
    "aiff": (".aiff", ["-c:a", "pcm_s16be"]),
    "wma": (".wma", ["-c:a", "wmav2", "-b:a", "64k"]),
    "wv": (".wv", ["-c:a", "wavpack"]),
}
EXTENSIONS: dict[str, str] = {fmt: ext for fmt, (ext, _) in _FFMPEG.items()} | {
    "mpc": ".mpc",
    "ape": ".ape",
    "dsf": ".dsf",
}
FORMATS: tuple[str, ...] = tuple(EXTENSIONS)
LOSSLESS = frozenset({"flac", "alac", "wav", "aiff", "wv", "ape", "dsf"})
# The format name read_record (and beets' mediafile) report for each seed format.
FORMAT_NAMES: dict[str, str] = {
    "mp3": "MP3",
    "flac": "FLAC",
    "ogg": "OGG",
    "opus": "Opus",
    "m4a": "AAC",
    "alac": "ALAC",
    "aac": "AAC",
    "wav": "WAVE",
    "aiff": "AIFF",
    "wma": "Windows Media",
    "wv": "WavPack",
    "mpc": "Musepack",
    "ape": "APE",
    "dsf": "DSD Stream File",
}
# Formats whose files carry no tags mutagen can write (ADTS AAC: a bare stream).
UNTAGGABLE = frozenset({"aac"})

SAMPLE_RATE = 44100
CHANNELS = 2
DSF_SECONDS = 0.1  # DSD64 is ~700 KB per stereo second: DSF seeds stay this short whatever is asked
DSF_RATE = 2_822_400

# --------------------------------------------------------------------------------------------
# Cache and seeds


def cache_dir() -> Path:
    """$SONIQUEBAY_FIXTURE_CACHE, else /var/cache/soniquebay/fixtures, else a per-user cache."""
    candidates = []
    if os.environ.get("SONIQUEBAY_FIXTURE_CACHE"):
        candidates.append(Path(os.environ["SONIQUEBAY_FIXTURE_CACHE"]))
    candidates.append(Path("/var/cache/soniquebay/fixtures"))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates.append(Path(xdg) / "soniquebay" / "fixtures")
    candidates.append(Path(tempfile.gettempdir()) / f"soniquebay-fixtures-{os.getuid()}")
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    raise RuntimeError(f"no writable fixture cache among {candidates}")


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        hint = "apt-get install musepack-tools" if cmd[0] == "mpcenc" else "apt-get install ffmpeg"
        raise RuntimeError(f"{cmd[0]} is not installed ({hint}; see scripts/apt-packages.txt)") from None
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(cmd)} failed: {exc.stderr.decode(errors='replace')[-800:]}") from None


def _ffmpeg_sine(out: Path, seconds: float, args: list[str]) -> None:
    _run(
        [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate={SAMPLE_RATE}:duration={seconds}",
            "-ac",
            str(CHANNELS),
            "-map_metadata",
            "-1",
            "-fflags",
            "+bitexact",
            "-flags:a",
            "+bitexact",
            *args,
            str(out),
        ]
    )


def _ape_bytes(seconds: float) -> bytes:
    """A minimal valid Monkey's Audio 3.99 file (no encoder is packaged for Debian).

    APE_DESCRIPTOR (52 bytes) + APE_HEADER (24) + seek table + frames. Each frame is what the real
    encoder emits for digital silence: a CRC word with the high bit set, then the special-codes
    word 3 (left and right channel silent), padded to whole 32-bit words. ffmpeg decodes it to
    ``seconds`` of 16-bit stereo silence; mutagen reads version, rate, channels, bits and length.
    The descriptor's MD5 is left zero (decoders only check it on request).
    """
    blocks = round(seconds * SAMPLE_RATE)
    blocks_per_frame = 73728 * 4  # the value for version >= 3.95
    total_frames = max(1, -(-blocks // blocks_per_frame))
    final_frame_blocks = blocks - (total_frames - 1) * blocks_per_frame
    descriptor_bytes, header_bytes, seek_bytes = 52, 24, 4 * total_frames
    frame = struct.pack("<II", 0x80000000, 3) + bytes(8)
    first = descriptor_bytes + header_bytes + seek_bytes
    seek_table = b"".join(struct.pack("<I", first + i * len(frame)) for i in range(total_frames))
    frames = frame * total_frames
    descriptor = (
        b"MAC "
        + struct.pack("<HH", 3990, 0)
        + struct.pack("<7I", descriptor_bytes, header_bytes, seek_bytes, 0, len(frames), 0, 0)
        + bytes(16)
    )
    # compression 2000 (normal), flags 0x20 (WAV header created on decode, none stored)
    header = struct.pack(
        "<HHIIIHHI", 2000, 0x20, blocks_per_frame, final_frame_blocks, total_frames, 16, CHANNELS, SAMPLE_RATE
    )
    return descriptor + header + seek_table + frames


def _dsf_bytes(seconds: float) -> bytes:
    """A valid stereo DSD64 DSF file: DSD chunk, fmt chunk, data chunk of DSD silence (0x69).

    The data is laid out as the format requires, in 4096-byte blocks per channel, interleaved by
    block, with the last blocks zero-padded; the metadata pointer is 0 (no tag) until
    ``write_tags`` appends an ID3v2 chunk (mutagen updates the pointer and total size).
    """
    block = 4096
    samples = round(seconds * DSF_RATE)  # per channel, 1 bit each
    blocks_per_channel = -(-samples // (block * 8))
    data = bytearray()
    for index in range(blocks_per_channel):
        used = min(block, (samples - index * block * 8 + 7) // 8)
        chunk = b"\x69" * used + bytes(block - used)
        data += chunk * CHANNELS
    fmt = b"fmt " + struct.pack("<QIIIIIIQII", 52, 1, 0, 2, CHANNELS, DSF_RATE, 1, samples, block, 0)
    data_chunk = b"data" + struct.pack("<Q", 12 + len(data)) + bytes(data)
    total = 28 + len(fmt) + len(data_chunk)
    return b"DSD " + struct.pack("<QQQ", 28, total, 0) + fmt + data_chunk


def _strip_tags(path: Path) -> None:
    f = mutagen.File(path)
    if f is not None and f.tags is not None:
        f.delete()


def _encode_seed(fmt: str, out: Path, seconds: float) -> None:
    if fmt in _FFMPEG:
        _ffmpeg_sine(out, seconds, _FFMPEG[fmt][1])
        if fmt != "aac":
            _strip_tags(out)  # ffmpeg's encoder tags (vorbis "encoder", mp4 "\xa9too", ...)
    elif fmt == "mpc":
        wav = out.with_suffix(".src.wav")
        try:
            _ffmpeg_sine(wav, seconds, ["-c:a", "pcm_s16le"])
            _run(["mpcenc", "--silent", "--overwrite", str(wav), str(out)])
        finally:
            wav.unlink(missing_ok=True)
    elif fmt == "ape":
        out.write_bytes(_ape_bytes(seconds))
    elif fmt == "dsf":
        out.write_bytes(_dsf_bytes(DSF_SECONDS))
    else:
        raise ValueError(f"unknown fixture format {fmt!r}; known: {', '.join(FORMATS)}")


def seed_seconds(fmt: str, seconds: float = 1.0) -> float:
    """The duration a seed of ``fmt`` really has."""
    return DSF_SECONDS if fmt == "dsf" else seconds


def cached_seed(fmt: str, seconds: float = 1.0) -> Path:
    """The cached, untagged seed file for ``fmt`` (encoded on first use)."""
    if fmt not in EXTENSIONS:
        raise ValueError(f"unknown fixture format {fmt!r}; known: {', '.join(FORMATS)}")
    cache = cache_dir()
    target = cache / f"seed-v{RECIPE_VERSION}-{fmt}-{seconds:g}s{EXTENSIONS[fmt]}"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{fmt}-", suffix=EXTENSIONS[fmt])
        os.close(fd)
        try:
            _encode_seed(fmt, Path(tmp), seconds)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)  # atomic: concurrent runs may both encode, never half-read
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def make_seed(fmt: str, dest_dir: Path | str, *, seconds: float = 1.0, name: str | None = None) -> Path:
    """A fresh untagged copy of the ``fmt`` seed in ``dest_dir`` (default name ``seed-<fmt>.<ext>``)."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / (name or f"seed-{fmt}{EXTENSIONS[fmt]}")
    shutil.copyfile(cached_seed(fmt, seconds), dest)
    return dest


def cover_jpeg(label: str = "") -> bytes:
    """A small real JPEG (ffmpeg, cached); ``label`` makes the bytes distinct (a COM segment)."""
    cache = cache_dir()
    base = cache / f"cover-v{RECIPE_VERSION}.jpg"
    if not base.exists():
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".cover-", suffix=".jpg")
        os.close(fd)
        try:
            _run(
                [
                    "ffmpeg",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=size=96x96:rate=1",
                    "-frames:v",
                    "1",
                    "-q:v",
                    "5",
                    tmp,
                ]
            )
            os.chmod(tmp, 0o644)
            os.replace(tmp, base)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    data = base.read_bytes()
    if not label:
        return data
    comment = label.encode("utf-8")[:60000]
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


# --------------------------------------------------------------------------------------------
# Writing tags

TAG_KEYS = frozenset(
    {
        "title",
        "artist",
        "album",
        "albumartist",
        "composer",
        "initial_key",
        "genres",
        "year",
        "date",
        "track",
        "tracktotal",
        "disc",
        "disctotal",
        "comp",
        "bpm",
        "mb_trackid",
        "mb_albumid",
        "mb_artistid",
        "mb_albumartistid",
        "mb_releasegroupid",
        "rg_track_gain",
        "rg_track_peak",
        "rg_album_gain",
        "rg_album_peak",
        "cover",
        "cover_mime",
    }
)

# Description (TXXX, MP4 freeform, ASF) / field (Vorbis, APE) names per field, as Picard writes.
_MB_TXXX = {
    "mb_albumid": "MusicBrainz Album Id",
    "mb_artistid": "MusicBrainz Artist Id",
    "mb_albumartistid": "MusicBrainz Album Artist Id",
    "mb_releasegroupid": "MusicBrainz Release Group Id",
}
_MB_VORBIS = {
    "mb_trackid": "MUSICBRAINZ_TRACKID",
    "mb_albumid": "MUSICBRAINZ_ALBUMID",
    "mb_artistid": "MUSICBRAINZ_ARTISTID",
    "mb_albumartistid": "MUSICBRAINZ_ALBUMARTISTID",
    "mb_releasegroupid": "MUSICBRAINZ_RELEASEGROUPID",
}
_MB_ASF = {
    "mb_trackid": "MusicBrainz/Track Id",
    "mb_albumid": "MusicBrainz/Album Id",
    "mb_artistid": "MusicBrainz/Artist Id",
    "mb_albumartistid": "MusicBrainz/Album Artist Id",
    "mb_releasegroupid": "MusicBrainz/Release Group Id",
}
_RG = ("rg_track_gain", "rg_track_peak", "rg_album_gain", "rg_album_peak")


def _rg_text(field: str, value: float) -> str:
    return f"{value:.2f} dB" if field.endswith("gain") else f"{value:.6f}"


def _rg_name(field: str) -> str:
    return "replaygain_" + field[3:]  # rg_track_gain -> replaygain_track_gain


def _pair(number: int | None, total: int | None) -> str | None:
    if number is None:
        return None
    return f"{number}/{total}" if total else str(number)


def _date(tags: dict) -> str | None:
    if tags.get("date"):
        return str(tags["date"])
    return str(tags["year"]) if tags.get("year") else None


def _present(tags: dict, key: str) -> bool:
    value = tags.get(key)
    return value is not None and value != [] and value != ""


def _write_id3(f, tags: dict, version: int) -> None:
    if f.tags is None:
        f.add_tags()
    t = f.tags
    t.clear()
    for key, frame in (
        ("title", TIT2),
        ("artist", TPE1),
        ("album", TALB),
        ("albumartist", TPE2),
        ("composer", TCOM),
        ("initial_key", TKEY),
    ):
        if _present(tags, key):
            t.add(frame(encoding=3, text=[tags[key]]))
    if _present(tags, "genres"):
        t.add(TCON(encoding=3, text=list(tags["genres"])))  # several values: NUL-separated
    if _date(tags):
        t.add(TDRC(encoding=3, text=[_date(tags)]))
    if _pair(tags.get("track"), tags.get("tracktotal")):
        t.add(TRCK(encoding=3, text=[_pair(tags.get("track"), tags.get("tracktotal"))]))
    if _pair(tags.get("disc"), tags.get("disctotal")):
        t.add(TPOS(encoding=3, text=[_pair(tags.get("disc"), tags.get("disctotal"))]))
    if tags.get("comp"):
        t.add(TCMP(encoding=3, text=["1"]))
    if tags.get("bpm") is not None:
        t.add(TBPM(encoding=3, text=[str(tags["bpm"])]))
    if _present(tags, "mb_trackid"):
        t.add(UFID(owner="http://musicbrainz.org", data=tags["mb_trackid"].encode("ascii")))
    for key, desc in _MB_TXXX.items():
        if _present(tags, key):
            t.add(TXXX(encoding=3, desc=desc, text=[tags[key]]))
    for key in _RG:
        if tags.get(key) is not None:
            t.add(TXXX(encoding=3, desc=_rg_name(key).upper(), text=[_rg_text(key, tags[key])]))
    if tags.get("cover"):
        mime = tags.get("cover_mime") or "image/jpeg"
        t.add(APIC(encoding=3, mime=mime, type=3, desc="Cover", data=tags["cover"]))
    f.save(v2_version=version, v23_sep=None)  # v2.3 multi-values NUL-separated too


def _write_mp4(f: MP4, tags: dict) -> None:
    if f.tags is None:
        f.add_tags()
    t = f.tags
    t.clear()
    for key, atom in (
        ("title", "\xa9nam"),
        ("artist", "\xa9ART"),
        ("album", "\xa9alb"),
        ("albumartist", "aART"),
        ("composer", "\xa9wrt"),
    ):
        if _present(tags, key):
            t[atom] = [tags[key]]
    if _present(tags, "genres"):
        t["\xa9gen"] = list(tags["genres"])
    if _date(tags):
        t["\xa9day"] = [_date(tags)]
    if tags.get("track") is not None:
        t["trkn"] = [(tags["track"], tags.get("tracktotal") or 0)]
    if tags.get("disc") is not None:
        t["disk"] = [(tags["disc"], tags.get("disctotal") or 0)]
    if tags.get("comp"):
        t["cpil"] = True
    if tags.get("bpm") is not None:
        t["tmpo"] = [int(tags["bpm"])]
    free = "----:com.apple.iTunes:"
    if _present(tags, "initial_key"):
        t[free + "initialkey"] = [MP4FreeForm(tags["initial_key"].encode("utf-8"))]
    if _present(tags, "mb_trackid"):
        t[free + "MusicBrainz Track Id"] = [MP4FreeForm(tags["mb_trackid"].encode("ascii"))]
    for key, desc in _MB_TXXX.items():
        if _present(tags, key):
            t[free + desc] = [MP4FreeForm(tags[key].encode("ascii"))]
    for key in _RG:
        if tags.get(key) is not None:
            t[free + _rg_name(key)] = [MP4FreeForm(_rg_text(key, tags[key]).encode("ascii"))]
    if tags.get("cover"):
        png = (tags.get("cover_mime") or "").endswith("png")
        t["covr"] = [MP4Cover(tags["cover"], MP4Cover.FORMAT_PNG if png else MP4Cover.FORMAT_JPEG)]
    f.save()


def _picture(tags: dict) -> Picture:
    pic = Picture()
    pic.type = 3
    pic.mime = tags.get("cover_mime") or "image/jpeg"
    pic.desc = "Cover"
    pic.data = tags["cover"]
    return pic


def _write_vorbis(f, tags: dict) -> None:
    if f.tags is None:
        f.add_tags()
    t = f.tags
    t.clear()
    for key, name in (
        ("title", "TITLE"),
        ("artist", "ARTIST"),
        ("album", "ALBUM"),
        ("albumartist", "ALBUMARTIST"),
        ("composer", "COMPOSER"),
        ("initial_key", "INITIALKEY"),
    ):
        if _present(tags, key):
            t[name] = [tags[key]]
    if _present(tags, "genres"):
        t["GENRE"] = list(tags["genres"])  # several GENRE= fields
    if _date(tags):
        t["DATE"] = [_date(tags)]
    for key, name in (
        ("track", "TRACKNUMBER"),
        ("tracktotal", "TRACKTOTAL"),
        ("disc", "DISCNUMBER"),
        ("disctotal", "DISCTOTAL"),
        ("bpm", "BPM"),
    ):
        if tags.get(key) is not None:
            t[name] = [str(tags[key])]
    if tags.get("comp"):
        t["COMPILATION"] = ["1"]
    for key, name in _MB_VORBIS.items():
        if _present(tags, key):
            t[name] = [tags[key]]
    for key in _RG:
        if tags.get(key) is not None:
            t[_rg_name(key).upper()] = [_rg_text(key, tags[key])]
    if isinstance(f, FLAC):
        f.clear_pictures()
        if tags.get("cover"):
            f.add_picture(_picture(tags))
    elif tags.get("cover"):
        t["METADATA_BLOCK_PICTURE"] = [base64.b64encode(_picture(tags).write()).decode("ascii")]
    f.save()


def _write_ape(path: Path, tags: dict) -> None:
    try:
        t = APEv2(path)
        t.clear()
    except mutagen.apev2.APENoHeaderError:
        t = APEv2()
    for key, name in (
        ("title", "Title"),
        ("artist", "Artist"),
        ("album", "Album"),
        ("albumartist", "Album Artist"),
        ("composer", "Composer"),
        ("initial_key", "INITIALKEY"),
    ):
        if _present(tags, key):
            t[name] = tags[key]
    if _present(tags, "genres"):
        t["Genre"] = list(tags["genres"])  # one text value, NUL-separated
    if _date(tags):
        t["Year"] = _date(tags)
    if _pair(tags.get("track"), tags.get("tracktotal")):
        t["Track"] = _pair(tags.get("track"), tags.get("tracktotal"))  # Picard: "n/total"
    if _pair(tags.get("disc"), tags.get("disctotal")):
        t["Disc"] = _pair(tags.get("disc"), tags.get("disctotal"))
    if tags.get("comp"):
        t["Compilation"] = "1"
    if tags.get("bpm") is not None:
        t["BPM"] = str(tags["bpm"])
    for key, name in _MB_VORBIS.items():
        if _present(tags, key):
            t[name] = tags[key]
    for key in _RG:
        if tags.get(key) is not None:
            t[_rg_name(key).upper()] = _rg_text(key, tags[key])
    if tags.get("cover"):
        t["Cover Art (Front)"] = APEValue(b"cover.jpg\x00" + tags["cover"], BINARY)
    t.save(path)


def _asf_picture(data: bytes, mime: str) -> bytes:
    return (
        struct.pack("<bi", 3, len(data))
        + mime.encode("utf-16-le")
        + b"\x00\x00"
        + "Cover".encode("utf-16-le")
        + b"\x00\x00"
        + data
    )


def _write_asf(f: ASF, tags: dict) -> None:
    t = f.tags
    t.clear()
    for key, name in (
        ("title", "Title"),
        ("artist", "Author"),
        ("album", "WM/AlbumTitle"),
        ("albumartist", "WM/AlbumArtist"),
        ("composer", "WM/Composer"),
        ("initial_key", "INITIALKEY"),
    ):
        if _present(tags, key):
            t[name] = [tags[key]]
    if _present(tags, "genres"):
        t["WM/Genre"] = list(tags["genres"])
    if _date(tags):
        t["WM/Year"] = [_date(tags)]
    for key, name in (
        ("track", "WM/TrackNumber"),
        ("tracktotal", "TotalTracks"),
        ("disc", "WM/PartOfSet"),
        ("disctotal", "TotalDiscs"),
        ("bpm", "WM/BeatsPerMinute"),
    ):
        if tags.get(key) is not None:
            t[name] = [str(tags[key])]
    if tags.get("comp"):
        t["WM/IsCompilation"] = [True]
    for key, name in _MB_ASF.items():
        if _present(tags, key):
            t[name] = [tags[key]]
    for key in _RG:
        if tags.get(key) is not None:
            t[_rg_name(key)] = [_rg_text(key, tags[key])]
    if tags.get("cover"):
        mime = tags.get("cover_mime") or "image/jpeg"
        t["WM/Picture"] = [ASFByteArrayAttribute(_asf_picture(tags["cover"], mime))]
    f.save()


def write_tags(path: Path | str, tags: dict[str, Any], *, id3_version: int = 4) -> None:
    """Make the file's tags exactly ``tags`` (beets' names; see TAG_KEYS), in its family's shapes.

    ``cover`` (bytes, with optional ``cover_mime``) embeds a front cover; ``date`` (a string such as
    "2001-05-02") is written instead of ``year`` when given. ID3 is v2.4 unless ``id3_version=3``.
    ADTS ``.aac`` files cannot hold tags: ValueError.
    """
    path = Path(path)
    unknown = set(tags) - TAG_KEYS
    if unknown:
        raise ValueError(f"unknown tag keys {sorted(unknown)}; known: {sorted(TAG_KEYS)}")
    f = mutagen.File(path)
    if f is None:
        raise ValueError(f"{path}: not an audio file mutagen can read")
    if isinstance(f, MP3 | WAVE | AIFF | DSF):
        _write_id3(f, tags, id3_version)
    elif isinstance(f, MP4):
        _write_mp4(f, tags)
    elif isinstance(f, FLAC | OggVorbis | OggOpus):
        _write_vorbis(f, tags)
    elif isinstance(f, ASF):
        _write_asf(f, tags)
    elif isinstance(f, mutagen.apev2.APEv2File):  # Monkey's Audio, WavPack, Musepack
        _write_ape(path, tags)
    else:
        raise ValueError(f"{path}: {type(f).__name__} files hold no tags mutagen can write")


# --------------------------------------------------------------------------------------------
# Whole libraries

_ADJECTIVES = (
    "Velvet", "Electric", "Silent", "Golden", "Broken", "Midnight", "Crystal", "Wild", "Hollow",
    "Neon", "Paper", "Iron", "Lunar", "Scarlet", "Frozen", "Distant", "Quiet", "Burning",
)  # fmt: skip
_NOUNS = (
    "Foxes", "Rivers", "Engines", "Gardens", "Harbours", "Mirrors", "Pilots", "Orchards",
    "Lanterns", "Tides", "Wolves", "Satellites", "Choirs", "Islands", "Echoes", "Machines",
)  # fmt: skip
_WORDS = (
    "Morning", "Light", "Café", "Über", "Alles", "Night", "Drive", "Rain", "Summer", "Ghost",
    "Heart", "Signal", "Garden", "Static", "Ocean", "Fire", "Mädchen", "Señor", "Road", "Dream",
    "Little", "Blue", "Forever", "Again", "Home", "Smoke", "Glass", "Storm", "Kyoto", "北京",
)  # fmt: skip
_GENRES = ("Rock", "Pop", "Jazz", "Electronic", "Folk", "Hip-Hop", "Classical", "Indie", "Ambient", "Soul")
_KEYS = ("C", "Am", "G", "Em", "D", "Bm", "F#m", "Bb", "Eb", "Abm")
VARIOUS_ARTISTS = "Various Artists"
VARIOUS_ARTISTS_MBID = "89ad4ac3-39f7-470e-963a-56509c546377"  # MusicBrainz's special artist
REPEATED_ALBUM_TITLE = "Greatest Hits"

EXPECTED_KEYS = (
    "path",
    "size",
    "format",
    "title",
    "artist",
    "album",
    "albumartist",
    "composer",
    "initial_key",
    "genres",
    "year",
    "track",
    "tracktotal",
    "disc",
    "disctotal",
    "comp",
    "bpm",
    "mb_trackid",
    "mb_albumid",
    "mb_artistid",
    "mb_albumartistid",
    "mb_releasegroupid",
    "rg_track_gain",
    "rg_track_peak",
    "rg_album_gain",
    "rg_album_peak",
    "has_cover",
)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _safe(name: str) -> str:
    return name.replace("/", "-").replace("\x00", "").strip() or "_"


def build_library(
    root: Path | str,
    *,
    artists: int = 3,
    albums_per_artist: int = 2,
    tracks_per_album: int = 4,
    formats: tuple[str, ...] = ("mp3", "flac", "ogg", "opus", "m4a"),
    covers: bool = True,
    seed: int = 0,
    seconds: float = 1.0,
) -> list[dict[str, Any]]:
    """Lay out ``root/<Artist>/<Album>/<NN - Title>.<ext>``; return the expected record per file.

    Exactly ``artists * albums_per_artist * tracks_per_album`` files. Deterministic for a seed.
    - album ``a`` of the whole library uses ``formats[a % len(formats)]``;
    - the very last album (when there are at least two) is a compilation: folder
      ``Various Artists/<Album>``, albumartist "Various Artists", comp True, each track by a
      different library artist;
    - artists 1 and 2 (0-based) share a name but not a MusicBrainz id (folders "<Name>" and
      "<Name> (2)"); every artist's second album is titled "Greatest Hits";
    - every third album has multi-valued genres, every fourth is two discs, dates alternate
      between "YYYY" and "YYYY-MM-DD";
    - with ``covers``: ``cover.jpg`` (distinct bytes per album) in each album folder, and the same
      image embedded in every track of albums 0, 3, 6, ...
    Expected dicts hold EXPECTED_KEYS (absent tags as read_record reports them: None/[]/False).
    """
    root = Path(root)
    unknown = [f for f in formats if f not in EXTENSIONS]
    if unknown or not formats:
        raise ValueError(f"unknown formats {unknown}; known: {', '.join(FORMATS)}")
    rng = random.Random(seed)
    seeds = {fmt: cached_seed(fmt, seconds) for fmt in formats}

    pool = [f"The {adjective} {noun}" for adjective in _ADJECTIVES for noun in _NOUNS]
    rng.shuffle(pool)
    names: list[tuple[str, str, str]] = []  # (name, folder, MusicBrainz artist id)
    folders: set[str] = set()
    for index in range(artists):
        name = pool[index % len(pool)] + (f" {index // len(pool) + 1}" if index >= len(pool) else "")
        if index == 2:
            name = names[1][0]  # same name, different artist
        folder, copy = _safe(name), 1
        while folder in folders:
            copy += 1
            folder = f"{_safe(name)} ({copy})"
        folders.add(folder)
        names.append((name, folder, _uuid(rng)))

    total_albums = artists * albums_per_artist
    expected: list[dict[str, Any]] = []
    album_index = 0
    for artist_name, artist_folder, artist_mbid in names:
        used_titles = {REPEATED_ALBUM_TITLE}
        for album_no in range(albums_per_artist):
            fmt = formats[album_index % len(formats)]
            compilation = total_albums >= 2 and album_index == total_albums - 1
            title_words = rng.sample(_WORDS, 2)
            while " ".join(title_words) in used_titles:
                title_words = rng.sample(_WORDS, 2)
            used_titles.add(" ".join(title_words))
            album_title = REPEATED_ALBUM_TITLE if album_no == 1 else " ".join(title_words)
            year = 1965 + rng.randrange(60)
            date = f"{year}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}" if album_index % 2 else None
            genres = rng.sample(_GENRES, 2) if album_index % 3 == 2 else [rng.choice(_GENRES)]
            discs = 2 if album_index % 4 == 1 and tracks_per_album >= 2 else 1
            album_mbid, group_mbid = _uuid(rng), _uuid(rng)
            album_gain, album_peak = round(rng.uniform(-12, 2), 2), round(rng.uniform(0.5, 1.0), 6)
            albumartist, albumartist_mbid = artist_name, artist_mbid
            folder = root / _safe(artist_folder) / _safe(album_title)
            if compilation:
                albumartist, albumartist_mbid = VARIOUS_ARTISTS, VARIOUS_ARTISTS_MBID
                album_title = f"{' '.join(title_words)} Anthology"
                folder = root / VARIOUS_ARTISTS / _safe(album_title)
            folder.mkdir(parents=True, exist_ok=True)
            cover = cover_jpeg(f"{albumartist} / {album_title} / {album_mbid}") if covers else None
            if cover:
                (folder / "cover.jpg").write_bytes(cover)
            embed = bool(cover) and album_index % 3 == 0
            per_disc = -(-tracks_per_album // discs)
            for track_index in range(tracks_per_album):
                disc = track_index // per_disc + 1
                track = track_index % per_disc + 1
                tracktotal = min(per_disc, tracks_per_album - (disc - 1) * per_disc)
                title = " ".join(rng.sample(_WORDS, rng.randrange(1, 4)))
                title = f"{title} {track_index + 1}"  # unique within the album
                track_artist, track_artist_mbid = artist_name, artist_mbid
                if compilation:
                    track_artist, _, track_artist_mbid = names[track_index % len(names)]
                tags: dict[str, Any] = {
                    "title": title,
                    "artist": track_artist,
                    "album": album_title,
                    "albumartist": albumartist,
                    "genres": genres,
                    "year": year,
                    "track": track,
                    "tracktotal": tracktotal,
                    "disc": disc,
                    "disctotal": discs,
                    "comp": compilation,
                    "mb_trackid": _uuid(rng),
                    "mb_albumid": album_mbid,
                    "mb_artistid": track_artist_mbid,
                    "mb_albumartistid": albumartist_mbid,
                    "mb_releasegroupid": group_mbid,
                    "rg_track_gain": round(rng.uniform(-12, 3), 2),
                    "rg_track_peak": round(rng.uniform(0.3, 1.0), 6),
                    "rg_album_gain": album_gain,
                    "rg_album_peak": album_peak,
                    "composer": f"{rng.choice(_WORDS)} {rng.choice(_NOUNS)}" if track_index % 2 == 0 else None,
                    "initial_key": rng.choice(_KEYS) if track_index % 3 == 0 else None,
                    "bpm": rng.randrange(60, 180) if track_index % 2 == 1 else None,
                }
                if date:
                    tags["date"] = date
                if embed:
                    tags["cover"] = cover
                prefix = f"{disc}-{track:02d}" if discs > 1 else f"{track:02d}"
                path = folder / f"{prefix} - {_safe(title)}{EXTENSIONS[fmt]}"
                shutil.copyfile(seeds[fmt], path)
                if fmt in UNTAGGABLE:
                    tags = {}
                else:
                    write_tags(path, tags)
                record = {key: tags.get(key) for key in EXPECTED_KEYS}
                record.update(
                    path=str(path),
                    size=path.stat().st_size,
                    format=FORMAT_NAMES[fmt],
                    genres=list(tags.get("genres") or []),
                    comp=bool(tags.get("comp")),
                    has_cover=bool(tags.get("cover")),
                )
                expected.append(record)
            album_index += 1
    return expected


# --------------------------------------------------------------------------------------------
# Bad files

# kind -> (outcome, explanation). Outcomes: "track" (a record), "error" (an error record from
# extract), "none" (neither: the walker must not yield it, and must terminate).
BAD_FILE_OUTCOMES: dict[str, tuple[str, str]] = {
    "zero_byte": ("error", 'a zero-byte .mp3: ExtractError "empty file"'),
    "truncated_header": ("error", 'a .flac cut inside its metadata blocks: "truncated FLAC stream"'),
    "truncated_audio": (
        "track",
        "an .mp3 cut in half: headers and tags are intact, so mutagen (which parses no audio "
        "data) reads it; the length is estimated from the first frame's bitrate and the size",
    ),
    "garbage": ("error", "random bytes named .ogg: not an Ogg stream"),
    "text_as_audio": ("error", 'a text file named .m4a: "not a MP4 file"'),
    "flac_named_mp3": ("track", "a tagged FLAC named .mp3: sniffed by magic, format FLAC"),
    "newline_in_name": ("track", "a tagged MP3 whose file name contains a newline"),
    "non_utf8_name": (
        "track",
        "a tagged MP3 named b'caf\\xe9.mp3' (Latin-1): the str path holds a lone surrogate "
        "(os.fsdecode, surrogateescape); os.fsencode(path) gives the bytes back. It cannot be "
        "encoded as UTF-8 text as is (PostgreSQL text) without an escaping scheme.",
    ),
    "symlink_loop": (
        "none",
        "directory loop/ with loop/a/b -> .. ; the walk must terminate (don't follow directory "
        "symlinks, or track visited (dev, ino)) and yield loop/a/inside.mp3 once",
    ),
    "inside_symlink_loop": ("track", "loop/a/inside.mp3, a tagged MP3 reachable once without the symlink"),
    "dir_named_like_audio": ("none", "a directory named album.mp3 (not a file: walked into, not read)"),
    "inside_dir_named_like_audio": ("track", "a tagged FLAC inside the directory named album.mp3"),
    "fifo": ("none", "a named pipe named pipe.mp3: not a regular file, never opened (would block)"),
    "unreadable_dir": (
        "none",
        "a directory with mode 000. As root (tests) it is readable anyway and its file is a track; "
        "run as an unprivileged user (e.g. nobody) it cannot be listed: report it as a scan error, "
        "not a crash",
    ),
    "inside_unreadable_dir": (
        "track",
        "a tagged MP3 in the mode-000 directory: a track as root; never seen by an unprivileged walker",
    ),
    "unreadable_file": (
        "track",
        'a tagged MP3 with mode 000: a track as root; as an unprivileged user ExtractError "permission denied"',
    ),
}


def _tagged_copy(fmt: str, dest: Path | bytes, title: str) -> None:
    src = cached_seed(fmt)
    if isinstance(dest, bytes):
        with open(src, "rb") as s, open(dest, "wb") as d:
            shutil.copyfileobj(s, d)
        write_tags(os.fsdecode(dest), {"title": title, "artist": "Bad Files", "album": "Bad Files"})
    else:
        shutil.copyfile(src, dest)
        write_tags(dest, {"title": title, "artist": "Bad Files", "album": "Bad Files"})


def add_bad_files(root: Path | str) -> dict[str, str]:
    """Create the awkward cases under ``root/Bad Files``; return {path: kind}.

    ``BAD_FILE_OUTCOMES[kind]`` says whether each must end as a track, an error record, or
    nothing. Paths are str (``os.fsdecode`` of the bytes name for the non-UTF-8 one).
    """
    base = Path(root) / "Bad Files"
    base.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def add(path: Path | bytes, kind: str) -> None:
        made[os.fsdecode(path) if isinstance(path, bytes) else str(path)] = kind

    zero = base / "zero.mp3"
    zero.write_bytes(b"")
    add(zero, "zero_byte")

    truncated = base / "truncated.flac"
    data = cached_seed("flac").read_bytes()
    truncated.write_bytes(data[:100])  # inside the metadata blocks (STREAMINFO ends at 42)
    add(truncated, "truncated_header")

    half = base / "truncated audio.mp3"
    _tagged_copy("mp3", half, "Cut In Half")
    with open(half, "r+b") as f:
        f.truncate(half.stat().st_size // 2 + 500)
    add(half, "truncated_audio")

    garbage = base / "garbage.ogg"
    garbage.write_bytes(hashlib.sha256(b"garbage").digest() * 256)
    add(garbage, "garbage")

    text = base / "notes.m4a"
    text.write_text("This is not audio.\n" * 40)
    add(text, "text_as_audio")

    liar = base / "really a flac.mp3"
    _tagged_copy("flac", liar, "Really A FLAC")
    add(liar, "flac_named_mp3")

    newline = base / "new\nline.mp3"
    _tagged_copy("mp3", newline, "New Line")
    add(newline, "newline_in_name")

    latin1 = os.fsencode(base) + b"/caf\xe9.mp3"
    _tagged_copy("mp3", latin1, "Café Latin-1")
    add(latin1, "non_utf8_name")

    loop = base / "loop"
    (loop / "a").mkdir(parents=True, exist_ok=True)
    link = loop / "a" / "b"
    if not link.is_symlink():
        os.symlink("..", link)
    add(loop, "symlink_loop")
    inside = loop / "a" / "inside.mp3"
    _tagged_copy("mp3", inside, "Inside The Loop")
    add(inside, "inside_symlink_loop")

    dir_like = base / "album.mp3"
    dir_like.mkdir(exist_ok=True)
    add(dir_like, "dir_named_like_audio")
    inner = dir_like / "inner.flac"
    _tagged_copy("flac", inner, "Inner")
    add(inner, "inside_dir_named_like_audio")

    fifo = base / "pipe.mp3"
    if not fifo.exists():
        os.mkfifo(fifo)
    add(fifo, "fifo")

    unreadable_file = base / "locked file.mp3"
    _tagged_copy("mp3", unreadable_file, "Locked File")
    os.chmod(unreadable_file, 0)
    add(unreadable_file, "unreadable_file")

    locked = base / "locked"
    locked.mkdir(exist_ok=True)
    hidden = locked / "hidden.mp3"
    _tagged_copy("mp3", hidden, "Hidden")
    os.chmod(locked, 0)
    add(locked, "unreadable_dir")
    add(hidden, "inside_unreadable_dir")
    return made
