"""``write_tags(path, tags, replace=False)``: sets the given fields (beets' names) in each tag
family's usual shapes (ID3 UFID/TXXX, MP4 freeform, Vorbis comments, APEv2, ASF), leaving the
others alone unless ``replace``."""

from __future__ import annotations

import base64
import struct
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
    TIPL,
    TMCL,
    TXXX,
    UFID,
    Frames,
)
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from backend_worker.stages import fields

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
