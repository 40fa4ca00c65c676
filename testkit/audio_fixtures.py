"""Real encoded audio for tests and benchmarks: seeds, tagging, whole libraries, bad files.

- ``make_seed(fmt, dest_dir, seconds=1.0)``: a short untagged file per format (ffmpeg sine;
  mpcenc for Musepack; Monkey's Audio and DSF are written by hand, see ``_ape_bytes`` /
  ``_dsf_bytes``). Seeds are cached in ``cache_dir()`` ($SONIQUEBAY_FIXTURE_CACHE, else
  /var/cache/soniquebay/fixtures) so repeated runs don't re-encode.
- ``write_tags(path, tags, replace=False)``: sets the given fields (beets' names) in each tag
  family's usual shapes (ID3 UFID/TXXX, MP4 freeform, Vorbis comments, APEv2, ASF), leaving the
  others alone unless ``replace``.
- ``build_library(root, ...)``: ``root/<Artist>/<Album>/<NN - Title>.<ext>`` with realistic tags;
  returns the expected record subset per file (EXPECTED_KEYS). ~2,000 files in 3-5 s.
- ``add_bad_files(root)``: the awkward cases as {path: kind}; the kind's prefix ("track:" or
  "error:") is what the pipeline must make of it, ``BAD_FILE_KINDS`` explains each.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mutagen
from mutagen.aiff import AIFF
from mutagen.apev2 import BINARY, APENoHeaderError, APEv2, APEv2File, APEValue
from mutagen.asf import ASF, ASFByteArrayAttribute
from mutagen.dsf import DSF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import (
    APIC,
    COMM,
    ID3,
    TALB,
    TIPL,
    TIT2,
    TMCL,
    TPE1,
    TXXX,
    UFID,
    Frames,
)
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from backend_worker.stages import fields, identity
from backend_worker.stages import tags as tag_reading

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


def _ffmpeg_lavfi(source: str, out: Path | str, args: list[str]) -> None:
    """ffmpeg rendering one of its generated sources (a sine, a test picture) to ``out``."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source]
    _run([*cmd, *args, str(out)])


def _ffmpeg_sine(out: Path, seconds: float, args: list[str]) -> None:
    source = f"sine=frequency=440:sample_rate={SAMPLE_RATE}:duration={seconds}"
    bitexact = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]
    _ffmpeg_lavfi(source, out, ["-ac", str(CHANNELS), *bitexact, *args])


def _cached_file(target: Path, make: Callable[[Path], None]) -> Path:
    """``target``, made by ``make(temporary path)`` on first use. Atomic: concurrent runs may both
    make it, none reads it half-written."""
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=target.suffix)
        os.close(fd)
        try:
            make(Path(tmp))
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


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
    target = cache_dir() / f"seed-v{RECIPE_VERSION}-{fmt}-{seconds:g}s{EXTENSIONS[fmt]}"
    return _cached_file(target, lambda tmp: _encode_seed(fmt, tmp, seconds))


def make_seed(fmt: str, dest_dir: Path | str, *, seconds: float = 1.0, name: str | None = None) -> Path:
    """A fresh untagged copy of the ``fmt`` seed in ``dest_dir`` (default name ``seed-<fmt>.<ext>``)."""
    source = cached_seed(fmt, seconds)  # checks fmt
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / (name or f"seed-{fmt}{EXTENSIONS[fmt]}")
    shutil.copyfile(source, dest)
    return dest


def cover_jpeg(label: str = "") -> bytes:
    """A small real JPEG (ffmpeg, cached); ``label`` makes the bytes distinct (a COM segment)."""
    base = _cached_file(
        cache_dir() / f"cover-v{RECIPE_VERSION}.jpg",
        lambda tmp: _ffmpeg_lavfi("testsrc=size=96x96:rate=1", tmp, ["-frames:v", "1", "-q:v", "5"]),
    )
    data = base.read_bytes()
    if not label:
        return data
    comment = label.encode("utf-8")[:60000]
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


# --------------------------------------------------------------------------------------------
# Writing tags

# What write_tags accepts: the field table's tags, ``date`` (written instead of ``year``) and an
# embedded cover.
TAG_KEYS = frozenset({*fields.TAG_NAMES, "date", "cover", "cover_mime"})

# Every field set, in the types read_record returns (``date`` is written; ``year`` is read back).
SAMPLE_TAGS: dict[str, Any] = {
    "title": "Überschall (Live) — Take 2",
    "artist": "Sigur Rós",
    "album": "Ágætis byrjun",
    "albumartist": "Sigur Rós & Friends",
    "composer": "Jón Þór Birgisson",
    "initial_key": "F#m",
    "genres": ["Post-Rock", "Ambient"],
    "year": 1999,
    "date": "1999-06-12",
    "track": 3,
    "tracktotal": 10,
    "disc": 1,
    "disctotal": 2,
    "comp": True,
    "bpm": 92,
    "mb_trackid": "6b2a4f35-2f0d-4a25-9f4e-2a3d4c1b0e91",
    "mb_albumid": "0e2d8b2c-6c3e-4ca6-8c5d-3b1f1e6a7d42",
    "mb_artistid": "f6f2326f-6b25-4170-b89d-e235b25508e8",
    "mb_albumartistid": "89ad4ac3-39f7-470e-963a-56509c546377",
    "mb_releasegroupid": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
    # Every credit, several names each (a file's "composer" is its first composer, "mb_artistid"
    # its first artist's id: one tag holds both).
    "artists": ["Sigur Rós", "Amiina"],
    "albumartists": ["Sigur Rós", "Friends of Ásbyrgi"],
    "composers": ["Jón Þór Birgisson", "Kjartan Sveinsson"],
    "lyricists": ["Jón Þór Birgisson", "Georg Hólm"],
    "conductors": ["Anna Þorvaldsdóttir"],
    "remixers": ["Ólafur Arnalds", "Nils Frahm"],
    "arrangers": ["Kjartan Sveinsson"],
    "producers": ["Ken Thomas", "Sigur Rós"],
    "engineers": ["Birgir Jón Birgisson"],
    "mixers": ["Ken Thomas"],
    "djmixers": ["DJ Flugvél og Geimskip"],
    "performers": [["Jónsi", "vocals"], ["Orri Páll Dýrason", "drums"], ["Amiina", ""]],
    "mb_artistids": ["f6f2326f-6b25-4170-b89d-e235b25508e8", "0a2b4c6d-8e0f-4a1b-9c2d-3e4f5a6b7c8d"],
    "mb_albumartistids": ["89ad4ac3-39f7-470e-963a-56509c546377", "1b3d5f7a-9c0e-4b2d-8f1a-3c5e7a9b0d2f"],
    "rg_track_gain": -6.5,
    "rg_track_peak": 0.988553,
    "rg_album_gain": -7.25,
    "rg_album_peak": 1.0,
}


# TXXX descriptions / MP4 freeform names of the MusicBrainz ids, as Picard writes them.
_MB_TXXX = {
    "mb_albumid": "MusicBrainz Album Id",
    "mb_artistid": "MusicBrainz Artist Id",
    "mb_albumartistid": "MusicBrainz Album Artist Id",
    "mb_releasegroupid": "MusicBrainz Release Group Id",
}
_RG = ("rg_track_gain", "rg_track_peak", "rg_album_gain", "rg_album_peak")


def _rg_text(field: str, value: float) -> str:
    return f"{value:.2f} dB" if field.endswith("gain") else f"{value:.6f}"


def _rg_name(field: str) -> str:
    return "replaygain_" + field[3:]  # rg_track_gain -> replaygain_track_gain


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == [] or value is False


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _split_pair(text: str | None) -> tuple[int | None, int | None]:
    """ "3/12" -> (3, 12); "3" -> (3, None)."""
    if not text:
        return None, None
    number, _, total = str(text).partition("/")
    return _int_or_none(number), _int_or_none(total)


def _merge_pair(current: tuple[int | None, int | None], tags: dict, first: str, second: str):
    number, total = current
    if first in tags:
        number = tags[first]
    if second in tags:
        total = tags[second]
    return number, total


def _pair_text(number: int | None, total: int | None) -> str | None:
    if number is None:
        return None
    return f"{number}/{total}" if total else str(number)


def _date_update(tags: dict) -> tuple[bool, str | None]:
    """(touches the date, new date text or None to delete)."""
    if "date" in tags:
        return True, (str(tags["date"]) if tags["date"] else None)
    if "year" in tags:
        return True, (str(tags["year"]) if tags["year"] else None)
    return False, None


def _write_id3(f, tags: dict, version: int, replace: bool) -> None:
    if f.tags is None:
        f.add_tags()
    t = f.tags
    if replace:
        t.clear()

    def text(frame_id: str, value: Any) -> None:
        t.delall(frame_id)
        if not _blank(value):
            values = value if isinstance(value, list) else [str(value)]
            t.add(Frames[frame_id](encoding=3, text=values))

    def txxx(desc: str, value: str | list | None) -> None:
        for frame in t.getall("TXXX"):
            if frame.desc.lower() == desc.lower():
                del t[frame.HashKey]
        if not _blank(value):
            t.add(TXXX(encoding=3, desc=desc, text=value if isinstance(value, list) else [value]))

    def people(frame_id: str, involvement: str | None, entries: list) -> None:
        """TIPL entries of one involvement (None: TMCL, the performers) replaced by ``entries``."""
        kept = [] if involvement is None else [p for p in (t[frame_id].people if frame_id in t else ())
                                                 if p[0].lower() != involvement.lower()]  # fmt: skip
        t.delall(frame_id)
        wanted = kept + [[involvement or instrument, name] for name, instrument in entries]
        if wanted:
            t.add((TMCL if involvement is None else TIPL)(encoding=3, people=wanted))

    for key, frame_id in _ID3_TEXT.items():
        if key in tags:
            text(frame_id, tags[key])
    touched, date = _date_update(tags)
    if touched:
        for frame_id in ("TYER", "TDAT", "TIME", "TRDA"):
            t.delall(frame_id)
        text("TDRC", date)
    for frame_id, first, second in (("TRCK", "track", "tracktotal"), ("TPOS", "disc", "disctotal")):
        if first in tags or second in tags:
            current = _split_pair(t[frame_id].text[0] if frame_id in t and t[frame_id].text else None)
            text(frame_id, _pair_text(*_merge_pair(current, tags, first, second)))
    if "comp" in tags:
        text("TCMP", "1" if tags["comp"] else None)
    if "mb_trackid" in tags:
        t.delall("UFID:http://musicbrainz.org")
        if not _blank(tags["mb_trackid"]):
            t.add(UFID(owner="http://musicbrainz.org", data=tags["mb_trackid"].encode("ascii")))
    for key, desc in _MB_TXXX.items():
        if key in tags:
            txxx(desc, None if _blank(tags[key]) else tags[key])
    for key in _RG:
        if key in tags:
            txxx(_rg_name(key).upper(), None if tags[key] is None else _rg_text(key, tags[key]))
    for key, desc in _ID3_LISTS.items():
        if key in tags:
            txxx(desc, tags[key])
    for key, involvement in _ID3_PEOPLE.items():
        if key in tags:
            entries = tags[key] or []
            if involvement is None:
                people("TMCL", None, entries)
            else:
                people("TIPL", involvement, [(name, "") for name in entries])
    if "cover" in tags:
        t.delall("APIC")
        if tags["cover"]:
            mime = tags.get("cover_mime") or "image/jpeg"
            t.add(APIC(encoding=3, mime=mime, type=3, desc="Cover", data=tags["cover"]))
    f.save(v2_version=version, v23_sep=None)  # v2.3 multi-values NUL-separated too


_ID3_TEXT = {
    "title": "TIT2",
    "artist": "TPE1",
    "album": "TALB",
    "albumartist": "TPE2",
    "composer": "TCOM",
    "composers": "TCOM",  # several values: NUL-separated (v2.3 too, see _write_id3)
    "lyricists": "TEXT",
    "conductors": "TPE3",
    "remixers": "TPE4",
    "initial_key": "TKEY",
    "genres": "TCON",  # several values: NUL-separated
    "bpm": "TBPM",
}
# Multi-valued TXXX frames, as Picard writes them.
_ID3_LISTS = {
    "artists": "ARTISTS",
    "albumartists": "ALBUMARTISTS",
    "mb_artistids": "MusicBrainz Artist Id",
    "mb_albumartistids": "MusicBrainz Album Artist Id",
}
# TIPL involvements (v2.4; v2.3 keeps both frames as one IPLS); None: TMCL, the performers.
_ID3_PEOPLE = {
    "arrangers": "arranger",
    "producers": "producer",
    "engineers": "engineer",
    "mixers": "mix",
    "djmixers": "DJ-mix",
    "performers": None,
}
_MP4_TEXT = {
    "title": "\xa9nam",
    "artist": "\xa9ART",
    "album": "\xa9alb",
    "albumartist": "aART",
    "composer": "\xa9wrt",
    "composers": "\xa9wrt",
    "genres": "\xa9gen",
}
# Freeform atoms (----:com.apple.iTunes:<name>) holding lists, one value each.
_MP4_LISTS = {
    "artists": "ARTISTS",
    "albumartists": "ALBUMARTISTS",
    "lyricists": "LYRICIST",
    "conductors": "CONDUCTOR",
    "remixers": "REMIXER",
    "arrangers": "ARRANGER",
    "producers": "PRODUCER",
    "engineers": "ENGINEER",
    "mixers": "MIXER",
    "djmixers": "DJMIXER",
    "performers": "PERFORMER",  # "Name (instrument)"
    "mb_artistids": "MusicBrainz Artist Id",
    "mb_albumartistids": "MusicBrainz Album Artist Id",
}
_FREEFORM = "----:com.apple.iTunes:"


def _write_mp4(f: MP4, tags: dict, replace: bool) -> None:
    if f.tags is None:
        f.add_tags()
    t = f.tags
    if replace:
        t.clear()

    def freeform(name: str, value: str | list | None) -> None:
        for key in [k for k in t if k.lower() == (_FREEFORM + name).lower()]:
            del t[key]
        if value is not None:
            values = value if isinstance(value, list) else [value]
            t[_FREEFORM + name] = [MP4FreeForm(v.encode("utf-8")) for v in values]

    for key, atom in _MP4_TEXT.items():
        if key in tags:
            t.pop(atom, None)
            if not _blank(tags[key]):
                t[atom] = list(tags[key]) if isinstance(tags[key], list) else [tags[key]]
    touched, date = _date_update(tags)
    if touched:
        t.pop("\xa9day", None)
        if date:
            t["\xa9day"] = [date]
    for atom, first, second in (("trkn", "track", "tracktotal"), ("disk", "disc", "disctotal")):
        if first in tags or second in tags:
            old = (t.get(atom) or [(0, 0)])[0]
            number, total = _merge_pair((old[0] or None, old[1] or None), tags, first, second)
            t.pop(atom, None)
            if number is not None:
                t[atom] = [(int(number), int(total or 0))]
    if "comp" in tags:
        t.pop("cpil", None)
        if tags["comp"]:
            t["cpil"] = True
    if "bpm" in tags:
        t.pop("tmpo", None)
        if tags["bpm"] is not None:
            t["tmpo"] = [int(tags["bpm"])]
    if "initial_key" in tags:
        freeform("initialkey", None if _blank(tags["initial_key"]) else tags["initial_key"])
    if "mb_trackid" in tags:
        freeform("MusicBrainz Track Id", None if _blank(tags["mb_trackid"]) else tags["mb_trackid"])
    for key, desc in _MB_TXXX.items():
        if key in tags:
            freeform(desc, None if _blank(tags[key]) else tags[key])
    for key in _RG:
        if key in tags:
            freeform(_rg_name(key), None if tags[key] is None else _rg_text(key, tags[key]))
    for key, name in _MP4_LISTS.items():
        if key in tags:
            freeform(name, _field_values(key, tags[key]))
    if "cover" in tags:
        t.pop("covr", None)
        if tags["cover"]:
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


# Vorbis comment / APEv2 field names (both case-insensitive); the first name is the one written,
# the others are removed when the field is set (other taggers' spellings).
_VORBIS_NAMES = {
    "title": ("TITLE",),
    "artist": ("ARTIST",),
    "album": ("ALBUM",),
    "albumartist": ("ALBUMARTIST", "ALBUM ARTIST", "ALBUM_ARTIST"),
    "composer": ("COMPOSER",),
    "artists": ("ARTISTS",),  # several fields, as every list below
    "albumartists": ("ALBUMARTISTS", "ALBUM_ARTISTS", "ALBUM ARTISTS"),
    "composers": ("COMPOSER",),
    "lyricists": ("LYRICIST",),
    "conductors": ("CONDUCTOR",),
    "remixers": ("REMIXER", "MIXARTIST"),
    "arrangers": ("ARRANGER",),
    "producers": ("PRODUCER",),
    "engineers": ("ENGINEER",),
    "mixers": ("MIXER",),
    "djmixers": ("DJMIXER",),
    "performers": ("PERFORMER",),  # "Name (instrument)", as Picard writes them
    "initial_key": ("INITIALKEY",),
    "genres": ("GENRE",),  # several GENRE= fields
    "track": ("TRACKNUMBER", "TRACK"),
    "tracktotal": ("TRACKTOTAL", "TOTALTRACKS", "TRACKC"),
    "disc": ("DISCNUMBER", "DISC"),
    "disctotal": ("DISCTOTAL", "TOTALDISCS", "DISCC"),
    "bpm": ("BPM",),
    "comp": ("COMPILATION",),
    "mb_trackid": ("MUSICBRAINZ_TRACKID",),
    "mb_albumid": ("MUSICBRAINZ_ALBUMID",),
    "mb_artistid": ("MUSICBRAINZ_ARTISTID",),
    "mb_albumartistid": ("MUSICBRAINZ_ALBUMARTISTID",),
    "mb_artistids": ("MUSICBRAINZ_ARTISTID",),
    "mb_albumartistids": ("MUSICBRAINZ_ALBUMARTISTID",),
    "mb_releasegroupid": ("MUSICBRAINZ_RELEASEGROUPID",),
    "rg_track_gain": ("REPLAYGAIN_TRACK_GAIN",),
    "rg_track_peak": ("REPLAYGAIN_TRACK_PEAK",),
    "rg_album_gain": ("REPLAYGAIN_ALBUM_GAIN",),
    "rg_album_peak": ("REPLAYGAIN_ALBUM_PEAK",),
}


def _field_values(key: str, value: Any) -> list[str] | None:
    """A field's value as Vorbis/APE/ASF text values (None: delete the field)."""
    if key == "comp":
        return ["1"] if value else None
    if value is None or value == "" or value == []:
        return None
    if key in _RG:
        return [_rg_text(key, value)]
    if key == "performers":
        return [f"{name} ({instrument})" if instrument else name for name, instrument in value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _replace(t, names: tuple[str, ...], values: list | None) -> None:
    """Vorbis comments, ASF attributes: drop every spelling in ``names``, then store ``values``
    (when there are any) under the first."""
    for name in names:
        if name in t:
            del t[name]
    if values:
        t[names[0]] = values


def _write_vorbis(f, tags: dict, replace: bool) -> None:
    if f.tags is None:
        f.add_tags()
    t = f.tags
    if replace:
        t.clear()
    for key, names in _VORBIS_NAMES.items():
        if key in tags:
            _replace(t, names, _field_values(key, tags[key]))
    touched, date = _date_update(tags)
    if touched:
        _replace(t, ("DATE", "YEAR"), [date] if date else None)
    if "cover" in tags:
        if isinstance(f, FLAC):
            f.clear_pictures()
            if tags["cover"]:
                f.add_picture(_picture(tags))
        else:
            block = base64.b64encode(_picture(tags).write()).decode("ascii") if tags["cover"] else None
            _replace(t, ("METADATA_BLOCK_PICTURE", "COVERART", "COVERARTMIME"), [block] if block else None)
    f.save()


_APE_NAMES = {
    "title": "Title",
    "artist": "Artist",
    "album": "Album",
    "albumartist": "Album Artist",
    "composer": "Composer",
    "artists": "Artists",  # lists: one text value, NUL-separated
    "albumartists": "AlbumArtists",
    "composers": "Composer",
    "lyricists": "Lyricist",
    "conductors": "Conductor",
    "remixers": "MixArtist",  # Picard's name
    "arrangers": "Arranger",
    "producers": "Producer",
    "engineers": "Engineer",
    "mixers": "Mixer",
    "djmixers": "DJMixer",
    "performers": "Performer",
    "initial_key": "INITIALKEY",
    "genres": "Genre",  # one text value, NUL-separated
    "bpm": "BPM",
    "comp": "Compilation",
} | {key: names[0] for key, names in _VORBIS_NAMES.items() if key.startswith(("mb_", "rg_"))}


def _write_ape(path: Path, tags: dict, replace: bool) -> None:
    try:
        t = APEv2(path)
    except APENoHeaderError:
        t = APEv2()
    if replace:
        t.clear()

    def put(name: str, values: list[str] | None) -> None:
        if name in t:
            del t[name]
        if values:
            t[name] = values if len(values) > 1 else values[0]

    for key, name in _APE_NAMES.items():
        if key in tags:
            put(name, _field_values(key, tags[key]))
    touched, date = _date_update(tags)
    if touched:
        put("Year", [date] if date else None)
    for name, first, second in (("Track", "track", "tracktotal"), ("Disc", "disc", "disctotal")):
        if first in tags or second in tags:
            current = _split_pair(str(t[name]) if name in t else None)
            text = _pair_text(*_merge_pair(current, tags, first, second))
            put(name, [text] if text else None)  # Picard's shape: "n/total"
    if "cover" in tags:
        for name in [k for k in t if k.lower().startswith("cover art")]:
            del t[name]
        if tags["cover"]:
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


_ASF_NAMES = {
    "title": "Title",
    "artist": "Author",
    "album": "WM/AlbumTitle",
    "albumartist": "WM/AlbumArtist",
    "composer": "WM/Composer",
    "artists": "WM/ARTISTS",  # lists: one attribute per value
    "albumartists": "WM/AlbumArtists",
    "composers": "WM/Composer",
    "lyricists": "WM/Writer",
    "conductors": "WM/Conductor",
    "remixers": "WM/ModifiedBy",
    "arrangers": "WM/Arranger",
    "producers": "WM/Producer",
    "engineers": "WM/Engineer",
    "mixers": "WM/Mixer",
    "djmixers": "WM/DJMixer",
    "performers": "WM/Performer",
    "initial_key": "INITIALKEY",
    "genres": "WM/Genre",
    "track": "WM/TrackNumber",
    "tracktotal": "TotalTracks",
    "disc": "WM/PartOfSet",
    "disctotal": "TotalDiscs",
    "bpm": "WM/BeatsPerMinute",
    "mb_trackid": "MusicBrainz/Track Id",
    "mb_albumid": "MusicBrainz/Album Id",
    "mb_artistid": "MusicBrainz/Artist Id",
    "mb_albumartistid": "MusicBrainz/Album Artist Id",
    "mb_artistids": "MusicBrainz/Artist Id",
    "mb_albumartistids": "MusicBrainz/Album Artist Id",
    "mb_releasegroupid": "MusicBrainz/Release Group Id",
} | {key: _rg_name(key) for key in _RG}


def _write_asf(f: ASF, tags: dict, replace: bool) -> None:
    t = f.tags
    if replace:
        t.clear()
    for key, name in _ASF_NAMES.items():
        if key in tags:
            _replace(t, (name,), _field_values(key, tags[key]))
    touched, date = _date_update(tags)
    if touched:
        _replace(t, ("WM/Year",), [date] if date else None)
    if "comp" in tags:
        _replace(t, ("WM/IsCompilation",), [True] if tags["comp"] else None)
    if "cover" in tags:
        picture = None
        if tags["cover"]:
            mime = tags.get("cover_mime") or "image/jpeg"
            picture = [ASFByteArrayAttribute(_asf_picture(tags["cover"], mime))]
        _replace(t, ("WM/Picture",), picture)
    f.save()


def write_tags(
    path: Path | str, tags: dict[str, Any], *, replace: bool = False, id3_version: int = 4
) -> None:
    """Write ``tags`` (beets' field names, see TAG_KEYS) in the file's own tag family and shapes.

    Only the given fields change (a value of None, "", [] or False removes the field); with
    ``replace=True`` every other tag is dropped first. ``cover`` (bytes, with optional
    ``cover_mime``) embeds a front cover (None removes embedded pictures); ``date`` (e.g.
    "2001-05-02") is written instead of ``year`` when given. Setting ``track`` keeps an existing
    ``tracktotal`` (same for disc). ID3 is saved as v2.4 unless ``id3_version=3``. ADTS ``.aac``
    files cannot hold tags: ValueError.

    Shapes: ID3 text frames, TRCK/TPOS "n/total", UFID (owner http://musicbrainz.org) for
    mb_trackid, TXXX "MusicBrainz Album Id"... and "REPLAYGAIN_TRACK_GAIN" ("-6.50 dB"), TCMP, APIC;
    MP4 atoms, trkn/disk tuples, cpil, tmpo, freeform ``----:com.apple.iTunes:`` bytes, covr;
    Vorbis comments (several GENRE fields, TRACKNUMBER + TRACKTOTAL, COMPILATION=1, FLAC picture
    block or METADATA_BLOCK_PICTURE); APEv2 as Picard writes it (Track "n/total", Year, binary
    "Cover Art (Front)"); ASF WM/* attributes and WM/Picture.
    """
    path = Path(path)
    unknown = set(tags) - TAG_KEYS
    if unknown:
        raise ValueError(f"unknown tag keys {sorted(unknown)}; known: {sorted(TAG_KEYS)}")
    f = mutagen.File(path)
    if f is None:
        raise ValueError(f"{path}: not an audio file mutagen can read")
    if isinstance(f, MP3 | WAVE | AIFF | DSF):
        _write_id3(f, tags, id3_version, replace)
    elif isinstance(f, MP4):
        _write_mp4(f, tags, replace)
    elif isinstance(f, FLAC | OggVorbis | OggOpus):
        _write_vorbis(f, tags, replace)
    elif isinstance(f, ASF):
        _write_asf(f, tags, replace)
    elif isinstance(f, APEv2File):  # Monkey's Audio, WavPack, Musepack
        _write_ape(path, tags, replace)
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

# The part of extract's record (RECORD_KEYS) that a library's tags and file name decide: without
# the modification time, the file's identity and the stream fields the encoder decides (all but the format).
STREAM_KEYS = (
    "mtime",
    "mtime_ns",
    *fields.IDENTITY_NAMES,
    *(name for name in fields.STREAM_NAMES if name != "format"),
)
EXPECTED_KEYS = tuple(key for key in fields.RECORD_KEYS if key not in STREAM_KEYS)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _safe(name: str) -> str:
    return name.replace("/", "-").replace("\x00", "").strip() or "_"


def make_distinct(path: Path | str, label: str) -> None:
    """Give a copy of a seed audio of its own: its last 16 bytes of audio data become a hash of
    `label`. Two recordings differ there; copies of one seed would not, and the library's audio key
    (backend_worker.stages.identity) would take every one of them for the same recording. Nothing
    reads those bytes in the tests (mutagen reads headers, never the audio itself)."""
    with open(path, "r+b") as f:
        start, end, _ = identity.audio_region(f, os.fstat(f.fileno()).st_size)
        if end - start >= 64:
            f.seek(end - 16)
            f.write(hashlib.blake2b(label.encode(), digest_size=16).digest())


_LIST_FIELDS = {field.name for field in fields.TAG_FIELDS if isinstance(field.type.default, list)}
# A list read from the single-valued tag when the file has no list (fields.py): list -> single.
_LIST_FALLBACKS = {
    "artists": "artist",
    "albumartists": "albumartist",
    "composers": "composer",
    "mb_artistids": "mb_artistid",
    "mb_albumartistids": "mb_albumartistid",
}


def expected_tags(tags: dict[str, Any]) -> dict[str, Any]:
    """The record's EXPECTED_KEYS for a file tagged with ``tags`` by write_tags (an absent list is
    [], a list the file lacks is its single tag, split as read_record splits it)."""
    record = {key: tags.get(key) for key in EXPECTED_KEYS}
    record["comp"] = bool(tags.get("comp"))
    for key in _LIST_FIELDS:
        value = tags.get(key)
        if not value and _LIST_FALLBACKS.get(key) and tags.get(_LIST_FALLBACKS[key]):
            single = tags[_LIST_FALLBACKS[key]]
            value = [single] if key.startswith("mb_") else tag_reading.name_splitter().split(single)
        record[key] = list(value or [])
    return record


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
            date = (
                f"{year}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}" if album_index % 2 else None
            )
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
                # As Picard tags them: ARTISTS and one id per name; every fourth track features
                # another artist of the library ("A feat. B", two credits).
                credited = [(track_artist, track_artist_mbid)]
                if track_index % 4 == 1 and len(names) > 1:
                    guest = names[(names.index((artist_name, artist_folder, artist_mbid)) + 1) % len(names)]
                    if guest[0] != track_artist:
                        credited.append((guest[0], guest[2]))
                tags: dict[str, Any] = {
                    "title": title,
                    "artist": " feat. ".join(name for name, _ in credited),
                    "artists": [name for name, _ in credited],
                    "mb_artistids": [mbid for _, mbid in credited],
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
                    "mb_albumartistids": [albumartist_mbid],
                    "mb_albumartistid": albumartist_mbid,
                    "mb_releasegroupid": group_mbid,
                    "rg_track_gain": round(rng.uniform(-12, 3), 2),
                    "rg_track_peak": round(rng.uniform(0.3, 1.0), 6),
                    "rg_album_gain": album_gain,
                    "rg_album_peak": album_peak,
                    "composer": f"{rng.choice(_WORDS)} {rng.choice(_NOUNS)}"
                    if track_index % 2 == 0
                    else None,
                    "performers": [[track_artist, "vocals"]] if track_index % 3 == 1 else None,
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
                make_distinct(path, f"{seed}:{path}")
                if fmt in UNTAGGABLE:
                    tags = {}
                else:
                    write_tags(path, tags, replace=True)
                record = expected_tags(tags)
                record.update(
                    path=str(path),
                    size=path.stat().st_size,
                    format=FORMAT_NAMES[fmt],
                    has_cover=bool(tags.get("cover")),
                )
                expected.append(record)
            album_index += 1
    return expected


# --------------------------------------------------------------------------------------------
# Bad files

# What each kind must become when a pipeline scans add_bad_files()' tree with an unprivileged
# worker (the suite runs workers as `nobody`). The kind's prefix is the outcome: "track:" (a track
# row) or "error:" (an error record, from the walk or from extract).
BAD_FILE_KINDS: dict[str, str] = {
    "error:zero_byte": 'zero.mp3, zero bytes: extract says "empty file"',
    "error:truncated_header": 'truncated.flac, cut inside its metadata blocks: "truncated FLAC stream"',
    "track:truncated_audio": (
        "'truncated audio.mp3', a tagged MP3 cut after half its frames: headers and tags are intact and "
        "mutagen parses no audio data, so it reads (length estimated from bitrate and size)"
    ),
    "error:garbage": 'garbage.ogg, random bytes: "not an audio file mutagen can read"',
    "error:text_as_audio": 'notes.m4a, a text file: "not an audio file mutagen can read"',
    "track:flac_named_mp3": "'really a flac.mp3', a tagged FLAC: sniffed by its magic, format FLAC",
    "track:newline_in_name": "'new\\nline.mp3', a tagged MP3 with a newline in its name",
    "error:non_utf8_name": (
        "b'caf\\xe9.mp3' (Latin-1), a tagged MP3. The map's key is os.fsdecode(name) (a lone "
        "surrogate; os.fsencode gives the bytes back). read_record reads it fine, but the name cannot "
        "be stored as UTF-8 text: the walk reports it instead (rename to import)"
    ),
    "error:symlink_loop": (
        "loop/a/b -> .. : the walk must not follow it (or must stop at a folder seen before) and "
        "terminates; the key is the symlink"
    ),
    "track:inside_symlink_loop": "loop/a/inside.mp3, a tagged MP3: one track, however the loop is handled",
    "track:inside_dir_named_like_audio": (
        "album.mp3/inner.flac, a tagged FLAC inside a *directory* named album.mp3 (walked into, "
        "never read as a file; the directory itself is not in the map: it must yield nothing)"
    ),
    "error:fifo": "pipe.mp3, a named pipe: not a regular file; never opened (an open would block)",
    "error:unreadable_file": (
        "'locked file.mp3', a tagged MP3 with mode 000: \"permission denied\" for an unprivileged "
        "reader (root reads it anyway: a track)"
    ),
    "error:unreadable_dir": (
        "locked/, mode 000 with a tagged MP3 inside: an unprivileged walker cannot list it (one error "
        "for the folder; its file, not in the map, is never seen). As root it is an ordinary folder"
    ),
    "track:ogg_named_mp3": "'really an ogg.mp3', a tagged Ogg Vorbis: sniffed by its magic, format OGG",
    "error:garbage_named_audio": (
        "garbage.mp3, garbage.flac, garbage.wav: 8 KB of seeded random bytes each (no frame sync that "
        'mutagen accepts): "not an audio file mutagen can read"'
    ),
    "track:huge_comment": "'huge comment.mp3', an ID3v2.4 COMM frame of 1 MB besides the usual tags",
    "track:huge_picture": (
        "'huge picture.flac', a 5 MB embedded front cover (a JPEG padded with random bytes): has_cover, "
        "and the cover stage saves it"
    ),
    "track:huge_title": (
        "'huge title.ogg', a 100,000-character title (stored as it is: text columns are not indexed)"
    ),
    "error:huge_artist": (
        "'huge artist.mp3', a 20,000-character artist of random letters: the artists index cannot hold "
        'it (PostgreSQL caps an index entry at 2,704 bytes), so insert records "cannot store: ..."'
    ),
    "track:latin1_id3v1": "'id3v1 latin1.mp3', only an ID3v1 tag, Latin-1 bytes (title ODD_TITLES[kind])",
    "track:latin1_id3v23": "'id3v23 latin1.mp3', ID3v2.3 frames in encoding 0 (Latin-1), non-ASCII",
    "track:utf16_id3v23": "'id3v23 utf16.mp3', ID3v2.3 frames in encoding 1 (UTF-16, BOM), CJK and umlauts",
    "track:nul_in_tag": (
        "'nul title.ogg', a Vorbis TITLE with an embedded NUL (dropped: PostgreSQL text cannot hold it)"
    ),
}

# Titles the pipeline must store exactly for these kinds (the tag encodings are the point).
ODD_TITLES: dict[str, str] = {
    "track:latin1_id3v1": "Café Olé",
    "track:latin1_id3v23": "Señor Café",
    "track:utf16_id3v23": "北京 Mädchen",
    "track:nul_in_tag": "NulTitle",
}


def _id3v1(title: str, artist: str, album: str) -> bytes:
    """A 128-byte ID3v1 tag: fixed-width Latin-1 fields, genre 255 (none)."""

    def field(text: str, width: int) -> bytes:
        return text.encode("latin-1")[:width].ljust(width, b"\0")

    return (
        b"TAG" + field(title, 30) + field(artist, 30) + field(album, 30) + b"2001" + field("", 30) + b"\xff"
    )


def _seed_with_id3(dest: Path, frames: list, version: int) -> None:
    shutil.copyfile(cached_seed("mp3"), dest)
    tags = ID3()
    for frame in frames:
        tags.add(frame)
    tags.save(dest, v2_version=version)


def _tagged_copy(fmt: str, dest: Path | bytes, title: str) -> None:
    """Copy and tag a seed under its own extension, then move it to ``dest`` (whatever its name)."""
    dest_bytes = dest if isinstance(dest, bytes) else os.fsencode(dest)
    tmp = Path(os.fsdecode(os.path.dirname(dest_bytes))) / f".tagging-{os.getpid()}{EXTENSIONS[fmt]}"
    shutil.copyfile(cached_seed(fmt), tmp)
    write_tags(tmp, {"title": title, "artist": "Bad Files", "album": "Bad Files"}, replace=True)
    os.replace(os.fsencode(tmp), dest_bytes)


def add_bad_files(root: Path | str) -> dict[str, str]:
    """Create the awkward cases under ``root/Bad Files``; return {path: kind}.

    Kinds are the keys of BAD_FILE_KINDS: "track:..." must end as a track, "error:..." as an error
    record (for an unprivileged worker; see the notes there for root). Paths are str, the
    non-UTF-8 one as ``os.fsdecode`` gives it. Not in the map: the directory named album.mp3 and the
    file inside the mode-000 folder (both must yield nothing). Call it once per root.
    """
    base = Path(root) / "Bad Files"
    base.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def add(path: Path | bytes, kind: str) -> None:
        assert kind in BAD_FILE_KINDS, kind
        made[os.fsdecode(path) if isinstance(path, bytes) else str(path)] = kind

    zero = base / "zero.mp3"
    zero.write_bytes(b"")
    add(zero, "error:zero_byte")

    truncated = base / "truncated.flac"
    _tagged_copy("flac", truncated, "Truncated In Its Tags")
    with open(truncated, "r+b") as f:
        f.truncate(60)  # STREAMINFO ends at 42; the Vorbis comment block that follows is cut
    add(truncated, "error:truncated_header")

    half = base / "truncated audio.mp3"
    _tagged_copy("mp3", half, "Cut In Half")
    with open(half, "r+b") as f:
        f.truncate(half.stat().st_size // 2 + 500)
    add(half, "track:truncated_audio")

    garbage = base / "garbage.ogg"
    garbage.write_bytes(hashlib.sha256(b"garbage").digest() * 256)
    add(garbage, "error:garbage")

    text = base / "notes.m4a"
    text.write_text("This is not audio.\n" * 40)
    add(text, "error:text_as_audio")

    liar = base / "really a flac.mp3"
    _tagged_copy("flac", liar, "Really A FLAC")
    add(liar, "track:flac_named_mp3")

    newline = base / "new\nline.mp3"
    _tagged_copy("mp3", newline, "New Line")
    add(newline, "track:newline_in_name")

    latin1 = os.fsencode(base) + b"/caf\xe9.mp3"
    _tagged_copy("mp3", latin1, "Café Latin-1")
    add(latin1, "error:non_utf8_name")

    loop = base / "loop"
    (loop / "a").mkdir(parents=True, exist_ok=True)
    link = loop / "a" / "b"
    if not link.is_symlink():
        os.symlink("..", link)
    add(link, "error:symlink_loop")
    inside = loop / "a" / "inside.mp3"
    _tagged_copy("mp3", inside, "Inside The Loop")
    add(inside, "track:inside_symlink_loop")

    dir_like = base / "album.mp3"
    dir_like.mkdir(exist_ok=True)
    inner = dir_like / "inner.flac"
    _tagged_copy("flac", inner, "Inner")
    add(inner, "track:inside_dir_named_like_audio")

    fifo = base / "pipe.mp3"
    if not fifo.exists():
        os.mkfifo(fifo)
    add(fifo, "error:fifo")

    unreadable_file = base / "locked file.mp3"
    _tagged_copy("mp3", unreadable_file, "Locked File")
    os.chmod(unreadable_file, 0)
    add(unreadable_file, "error:unreadable_file")

    locked = base / "locked"
    locked.mkdir(exist_ok=True)
    _tagged_copy("mp3", locked / "hidden.mp3", "Hidden")
    os.chmod(locked, 0)
    add(locked, "error:unreadable_dir")

    ogg_liar = base / "really an ogg.mp3"
    _tagged_copy("ogg", ogg_liar, "Really An Ogg")
    add(ogg_liar, "track:ogg_named_mp3")

    rng = random.Random(6)
    for ext in (".mp3", ".flac", ".wav"):
        noise = base / f"garbage{ext}"
        noise.write_bytes(rng.randbytes(8192))
        add(noise, "error:garbage_named_audio")

    comment = base / "huge comment.mp3"
    _tagged_copy("mp3", comment, "Huge Comment")
    tags = ID3(comment)
    tags.add(COMM(encoding=3, lang="eng", desc="", text="long comment " * 80_000))  # ~1 MB
    tags.save()
    add(comment, "track:huge_comment")

    picture = base / "huge picture.flac"
    _tagged_copy("flac", picture, "Huge Picture")
    flac = FLAC(picture)
    art = Picture()
    art.type, art.mime, art.data = 3, "image/jpeg", cover_jpeg("huge") + rng.randbytes(5_000_000)
    flac.add_picture(art)
    flac.save()
    add(picture, "track:huge_picture")

    title = base / "huge title.ogg"
    _tagged_copy("ogg", title, "x")
    ogg = OggVorbis(title)
    ogg["TITLE"] = ["".join(rng.choices("abcdefghij klmnopqrstuvwxyz", k=100_000))]
    ogg.save()
    add(title, "track:huge_title")

    artist = base / "huge artist.mp3"
    _tagged_copy("mp3", artist, "Huge Artist")
    tags = ID3(artist)
    tags.add(TPE1(encoding=3, text="".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=20_000))))
    tags.save()
    add(artist, "error:huge_artist")

    v1 = base / "id3v1 latin1.mp3"
    shutil.copyfile(cached_seed("mp3"), v1)
    with open(v1, "ab") as fh:
        fh.write(_id3v1(ODD_TITLES["track:latin1_id3v1"], "Bad Files", "Bad Files"))
    add(v1, "track:latin1_id3v1")

    for kind, name, encoding in (
        ("track:latin1_id3v23", "id3v23 latin1.mp3", 0),
        ("track:utf16_id3v23", "id3v23 utf16.mp3", 1),
    ):
        frames = [
            TIT2(encoding=encoding, text=ODD_TITLES[kind]),
            TPE1(encoding=encoding, text="Bad Files"),
            TALB(encoding=encoding, text="Bad Files"),
        ]
        _seed_with_id3(base / name, frames, 3)
        add(base / name, kind)

    nul = base / "nul title.ogg"
    _tagged_copy("ogg", nul, "x")
    ogg = OggVorbis(nul)
    ogg["TITLE"] = ["Nul\x00Title"]
    ogg.save()
    add(nul, "track:nul_in_tag")
    return made
