"""The record's fields, declared once: what extract reads, what insert stores, what the tests expect.

``FIELDS`` has one row per field of the record, in the record's order (the order ``soniquebay
extract`` prints):

- ``Stat``: what ``os.stat`` says of the file (and its path);
- ``Tag``: a tag (beets' field name), its type, and the keys each tag family stores it under,
  tried in order (see tags.py for the key syntax and how values are converted);
- ``Stream``: what mutagen says of the audio stream, as beets' mediafile reports it;
- ``Picture``: whether the file embeds a picture;
- ``Identity``: the file system's identity of the file and the key over its audio data, which
  recognise the file when its path changes.

A row's ``column`` is the SQL type of its ``tracks`` column (None: not a column of ``tracks``;
genres are rows of ``track_genres``, credits rows of ``track_credits`` and ``album_credits``). A
tag row with a ``role`` is a credit: its names (artists, composers, performers...) are credited to
the track in that role (docs/tags.md, "Artists and credits"). Everything else derives from this
table: extract's RECORD_KEYS and read_record, insert's column list, temp table and range checks, the test
fixtures' expectations; tests/unit/test_record_schema.py and the integration test of the same
name fail when a layer (or the migrations) disagrees with it. Adding a tag field: a ``Tag`` row
and a migration adding its column (README, "Adding a tag field").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from backend_worker.stages.tags import (
    INT4_MAX,
    Converter,
    conv_bool,
    conv_float,
    conv_int,
    conv_list,
    conv_number,
    conv_performers,
    conv_soundcheck_gain,
    conv_soundcheck_peak,
    conv_split_names,
    conv_text,
    conv_total,
    conv_uuid,
    conv_uuid_list,
    conv_year,
)


class ValueType(NamedTuple):
    """A tag's type: how raw values convert, its SQL column type, its value when absent."""

    convert: Converter
    column: str | None
    default: Any = None


TEXT = ValueType(conv_text, "text")
TEXT_LIST = ValueType(conv_list, None, default=[])  # stored as rows of track_genres
INTEGER = ValueType(conv_int, "integer")
NUMBER = ValueType(conv_number, "integer")  # "3" of "3/12"
YEAR = ValueType(conv_year, "integer")
FLAG = ValueType(conv_bool, "boolean", default=False)
MUSICBRAINZ_ID = ValueType(conv_uuid, "uuid")
DECIMAL = ValueType(conv_float, "double precision")
# Credits (rows of track_credits / album_credits, see credits()): names, one value split on the
# configured separators ("A feat. B"); MusicBrainz ids in the names' order; performers with
# their instrument.
NAMES = ValueType(conv_split_names, None, default=[])
MUSICBRAINZ_IDS = ValueType(conv_uuid_list, None, default=[])
PERFORMERS = ValueType(conv_performers, None, default=[])

Keys = tuple  # of str, or (str, Converter) where the key holds the value in another shape


def _listed(*keys: str) -> tuple[tuple[str, Converter], ...]:
    """Keys of a multi-valued tag: their values are the list, never split on separators."""
    return tuple((key, conv_list) for key in keys)


def total_in(key: str) -> tuple[str, Converter]:
    """The total stored in a "n/total" value under ``key`` (ID3 TRCK "3/12" gives 12)."""
    return key, conv_total


class Tag(NamedTuple):
    """A tag: its type, and per tag family the keys it is stored under (tried in order)."""

    name: str
    type: ValueType
    id3: Keys
    mp4: Keys
    vorbis_ape: Keys  # Vorbis comment and APEv2 field names (case-insensitive)
    asf: Keys
    role: str | None = None  # a credit: the role its names are credited in (a credit_role label)
    ids: str | None = None  # the field holding the names' MusicBrainz ids, position for position

    @property
    def column(self) -> str | None:
        return self.type.column


class FileField(NamedTuple):
    """A field read from the opened file (extract.AudioFile) rather than from its tags."""

    name: str
    column: str | None
    read: Callable[[Any], Any]  # the opened file -> value


class Stat(FileField):
    """What os.stat says of the file (and its path)."""

    __slots__ = ()


class Stream(FileField):
    """What mutagen says of the audio stream."""

    __slots__ = ()


class Picture(FileField):
    """Whether the file embeds a picture."""

    __slots__ = ()


class Identity(FileField):
    """What tells the file apart when its path changes (docs/architecture.md, "A track's identity")."""

    __slots__ = ()


def signed64(value: int) -> int:
    """A 64-bit unsigned st_dev/st_ino as a bigint column holds it (XFS inode numbers can use bit 63)."""
    return value - 2**64 if value >= 2**63 else value


# --------------------------------------------------------------------------------------------
# Stream fields, read from mutagen's stream info as beets' mediafile reads them.


def _count(value: Any) -> int:
    """A stream property as the integer column holds it (0: unknown or out of range)."""
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) else 0
    return value if isinstance(value, int) and 0 <= value <= INT4_MAX else 0


def _length(audio) -> float:
    length = float(getattr(audio.info, "length", 0.0) or 0.0)
    return length if 0.0 <= length < 1e9 else 0.0  # NaN, infinities, nonsense from a crafted header


def _bitrate(audio) -> int:
    bitrate = getattr(audio.info, "bitrate", 0)
    if not bitrate:  # mediafile's estimate for lossless formats
        length = _length(audio)
        bitrate = audio.stat.st_size * 8 / length if length else 0
    return _count(bitrate)


def _samplerate(audio) -> int:
    rate = getattr(audio.info, "sample_rate", None)
    if rate is None:  # mutagen gives none for Opus, which always decodes at 48 kHz
        rate = 48000 if audio.format_name() == "Opus" else 0
    return _count(rate)


# --------------------------------------------------------------------------------------------
# The table.

_ITUNES = "----:com.apple.iTunes:"  # MP4 freeform atoms
_MUSICBRAINZ = "http://musicbrainz.org"  # owner of ID3 UFID frames

FIELDS: tuple[Tag | FileField, ...] = (
    Stat("path", "text", lambda audio: audio.path),
    Stat("size", "bigint", lambda audio: audio.stat.st_size),
    Stat("mtime", None, lambda audio: audio.stat.st_mtime),
    Stat("mtime_ns", "bigint", lambda audio: audio.stat.st_mtime_ns),
    Identity("dev", "bigint", lambda audio: signed64(audio.stat.st_dev)),
    Identity("ino", "bigint", lambda audio: signed64(audio.stat.st_ino)),
    Identity("audio_key", "uuid", lambda audio: audio.audio_key),
    Tag("title", TEXT, id3=("TIT2",), mp4=("\xa9nam",), vorbis_ape=("title",), asf=("Title",)),
    Tag("artist", TEXT, id3=("TPE1",), mp4=("\xa9ART",), vorbis_ape=("artist",), asf=("Author",)),
    Tag("album", TEXT, id3=("TALB",), mp4=("\xa9alb",), vorbis_ape=("album",), asf=("WM/AlbumTitle",)),
    Tag(
        "albumartist",
        TEXT,
        id3=("TPE2",),
        mp4=("aART",),
        vorbis_ape=("album artist", "album_artist", "albumartist"),
        asf=("WM/AlbumArtist",),
    ),
    Tag("composer", TEXT, id3=("TCOM",), mp4=("\xa9wrt",), vorbis_ape=("composer",), asf=("WM/Composer",)),
    Tag(
        "artists",
        NAMES,
        id3=(("TXXX:ARTISTS", conv_list), "TPE1"),
        mp4=((_ITUNES + "ARTISTS", conv_list), "\xa9ART"),
        vorbis_ape=(("artists", conv_list), "artist"),
        asf=(("WM/ARTISTS", conv_list), "Author"),
        role="artist",
        ids="mb_artistids",
    ),
    Tag(
        "albumartists",
        NAMES,
        id3=(*_listed("TXXX:ALBUMARTISTS", "TXXX:ALBUM_ARTISTS", "TXXX:ALBUM ARTISTS"), "TPE2"),
        mp4=(
            *_listed(*(_ITUNES + name for name in ("ALBUMARTISTS", "ALBUM_ARTISTS", "ALBUM ARTISTS"))),
            "aART",
        ),
        vorbis_ape=(
            *_listed("albumartists", "album_artists", "album artists"),
            "album artist",
            "album_artist",
            "albumartist",
        ),
        asf=(("WM/AlbumArtists", conv_list), "WM/AlbumArtist"),
        role="albumartist",
        ids="mb_albumartistids",
    ),
    Tag(
        "composers",
        NAMES,
        id3=("TCOM",),
        mp4=("\xa9wrt",),
        vorbis_ape=("composer",),
        asf=("WM/Composer",),
        role="composer",
    ),
    Tag(
        "lyricists",
        NAMES,
        id3=("TEXT",),
        mp4=(_ITUNES + "LYRICIST",),
        vorbis_ape=("lyricist",),
        asf=("WM/Writer",),
        role="lyricist",
    ),
    Tag(
        "conductors",
        NAMES,
        id3=("TPE3",),
        mp4=(_ITUNES + "CONDUCTOR",),
        vorbis_ape=("conductor",),
        asf=("WM/Conductor",),
        role="conductor",
    ),
    Tag(
        "remixers",
        NAMES,
        id3=("TPE4",),
        mp4=(_ITUNES + "REMIXER", _ITUNES + "REMIXERS"),
        vorbis_ape=("remixer", "mixartist"),
        asf=("WM/ModifiedBy", "WM/REMIXERS"),
        role="remixer",
    ),
    Tag(
        "arrangers",
        NAMES,
        id3=("TIPL:arranger",),
        mp4=(_ITUNES + "ARRANGER",),
        vorbis_ape=("arranger",),
        asf=("WM/Arranger", "beets/Arranger"),
        role="arranger",
    ),
    Tag(
        "producers",
        NAMES,
        id3=("TIPL:producer",),
        mp4=(_ITUNES + "PRODUCER",),
        vorbis_ape=("producer",),
        asf=("WM/Producer",),
        role="producer",
    ),
    Tag(
        "engineers",
        NAMES,
        id3=("TIPL:engineer",),
        mp4=(_ITUNES + "ENGINEER",),
        vorbis_ape=("engineer",),
        asf=("WM/Engineer",),
        role="engineer",
    ),
    Tag(
        "mixers",
        NAMES,
        id3=("TIPL:mix",),
        mp4=(_ITUNES + "MIXER",),
        vorbis_ape=("mixer",),
        asf=("WM/Mixer",),
        role="mixer",
    ),
    Tag(
        "djmixers",
        NAMES,
        id3=("TIPL:DJ-mix",),
        mp4=(_ITUNES + "DJMIXER",),
        vorbis_ape=("djmixer",),
        asf=("WM/DJMixer",),
        role="djmixer",
    ),
    Tag(
        "performers",
        PERFORMERS,
        id3=("TMCL",),
        mp4=(_ITUNES + "PERFORMER",),
        vorbis_ape=("performer",),
        asf=("WM/Performer",),
        role="performer",
    ),
    Tag(
        "initial_key",
        TEXT,
        id3=("TKEY",),
        mp4=(_ITUNES + "initialkey",),
        vorbis_ape=("initialkey",),
        asf=("INITIALKEY",),
    ),
    Tag("genres", TEXT_LIST, id3=("TCON",), mp4=("\xa9gen",), vorbis_ape=("genre",), asf=("WM/Genre",)),
    Tag("year", YEAR, id3=("TDRC",), mp4=("\xa9day",), vorbis_ape=("date", "year"), asf=("WM/Year",)),
    Tag(
        "track",
        NUMBER,
        id3=("TRCK",),
        mp4=("trkn",),
        vorbis_ape=("track", "tracknumber"),
        asf=("WM/TrackNumber",),
    ),
    Tag(
        "tracktotal",
        INTEGER,
        id3=(total_in("TRCK"),),
        mp4=(total_in("trkn"),),
        vorbis_ape=("tracktotal", "trackc", "totaltracks", total_in("track"), total_in("tracknumber")),
        asf=("TotalTracks", total_in("WM/TrackNumber")),
    ),
    Tag(
        "disc",
        NUMBER,
        id3=("TPOS",),
        mp4=("disk",),
        vorbis_ape=("disc", "discnumber"),
        asf=("WM/PartOfSet",),
    ),
    Tag(
        "disctotal",
        INTEGER,
        id3=(total_in("TPOS"),),
        mp4=(total_in("disk"),),
        vorbis_ape=("disctotal", "discc", "totaldiscs", total_in("disc"), total_in("discnumber")),
        asf=("TotalDiscs", total_in("WM/PartOfSet")),
    ),
    Tag("comp", FLAG, id3=("TCMP",), mp4=("cpil",), vorbis_ape=("compilation",), asf=("WM/IsCompilation",)),
    Tag("bpm", INTEGER, id3=("TBPM",), mp4=("tmpo",), vorbis_ape=("bpm",), asf=("WM/BeatsPerMinute",)),
    Stream("length", "double precision", _length),
    Stream("bitrate", "integer", _bitrate),
    Stream("samplerate", "integer", _samplerate),
    Stream("bitdepth", "integer", lambda audio: _count(getattr(audio.info, "bits_per_sample", 0))),
    Stream("channels", "integer", lambda audio: _count(getattr(audio.info, "channels", 0))),
    Stream("format", "text", lambda audio: audio.format_name()),
    Tag(
        "mb_trackid",
        MUSICBRAINZ_ID,
        id3=("UFID:" + _MUSICBRAINZ,),
        mp4=(_ITUNES + "MusicBrainz Track Id",),
        vorbis_ape=("musicbrainz_trackid",),
        asf=("MusicBrainz/Track Id",),
    ),
    Tag(
        "mb_albumid",
        MUSICBRAINZ_ID,
        id3=("TXXX:MusicBrainz Album Id",),
        mp4=(_ITUNES + "MusicBrainz Album Id",),
        vorbis_ape=("musicbrainz_albumid",),
        asf=("MusicBrainz/Album Id",),
    ),
    Tag(
        "mb_artistid",
        MUSICBRAINZ_ID,
        id3=("TXXX:MusicBrainz Artist Id",),
        mp4=(_ITUNES + "MusicBrainz Artist Id",),
        vorbis_ape=("musicbrainz_artistid",),
        asf=("MusicBrainz/Artist Id",),
    ),
    Tag(
        "mb_albumartistid",
        MUSICBRAINZ_ID,
        id3=("TXXX:MusicBrainz Album Artist Id",),
        mp4=(_ITUNES + "MusicBrainz Album Artist Id",),
        vorbis_ape=("musicbrainz_albumartistid",),
        asf=("MusicBrainz/Album Artist Id",),
    ),
    Tag(
        "mb_artistids",
        MUSICBRAINZ_IDS,
        id3=("TXXX:MusicBrainz Artist Id",),
        mp4=(_ITUNES + "MusicBrainz Artist Id",),
        vorbis_ape=("musicbrainz_artistid",),
        asf=("MusicBrainz/Artist Id",),
    ),
    Tag(
        "mb_albumartistids",
        MUSICBRAINZ_IDS,
        id3=("TXXX:MusicBrainz Album Artist Id",),
        mp4=(_ITUNES + "MusicBrainz Album Artist Id",),
        vorbis_ape=("musicbrainz_albumartistid",),
        asf=("MusicBrainz/Album Artist Id",),
    ),
    Tag(
        "mb_releasegroupid",
        MUSICBRAINZ_ID,
        id3=("TXXX:MusicBrainz Release Group Id",),
        mp4=(_ITUNES + "MusicBrainz Release Group Id",),
        vorbis_ape=("musicbrainz_releasegroupid",),
        asf=("MusicBrainz/Release Group Id",),
    ),
    Tag(
        "rg_track_gain",
        DECIMAL,
        id3=("TXXX:replaygain_track_gain", ("COMM:iTunNORM", conv_soundcheck_gain)),
        mp4=(_ITUNES + "replaygain_track_gain", (_ITUNES + "iTunNORM", conv_soundcheck_gain)),
        vorbis_ape=("replaygain_track_gain",),
        asf=("replaygain_track_gain",),
    ),
    Tag(
        "rg_track_peak",
        DECIMAL,
        id3=("TXXX:replaygain_track_peak", ("COMM:iTunNORM", conv_soundcheck_peak)),
        mp4=(_ITUNES + "replaygain_track_peak", (_ITUNES + "iTunNORM", conv_soundcheck_peak)),
        vorbis_ape=("replaygain_track_peak",),
        asf=("replaygain_track_peak",),
    ),
    Tag(
        "rg_album_gain",
        DECIMAL,
        id3=("TXXX:replaygain_album_gain",),
        mp4=(_ITUNES + "replaygain_album_gain",),
        vorbis_ape=("replaygain_album_gain",),
        asf=("replaygain_album_gain",),
    ),
    Tag(
        "rg_album_peak",
        DECIMAL,
        id3=("TXXX:replaygain_album_peak",),
        mp4=(_ITUNES + "replaygain_album_peak",),
        vorbis_ape=("replaygain_album_peak",),
        asf=("replaygain_album_peak",),
    ),
    Picture("has_cover", "boolean", lambda audio: audio.has_picture()),
)

# The layout of the records the workers write (tracks.record_version): a track whose row is
# older is read again by the next scan, so a field added since fills in (migration 0010). Bump it
# with a migration when rows written before a field existed must be read again to get it.
RECORD_VERSION = 2

# --------------------------------------------------------------------------------------------
# Derived: what the stages and the tests read instead of lists of their own.

RECORD_KEYS: tuple[str, ...] = tuple(field.name for field in FIELDS)
TAG_FIELDS: tuple[Tag, ...] = tuple(field for field in FIELDS if isinstance(field, Tag))
TAG_NAMES: tuple[str, ...] = tuple(field.name for field in TAG_FIELDS)
STREAM_NAMES: tuple[str, ...] = tuple(field.name for field in FIELDS if isinstance(field, Stream))
IDENTITY_NAMES: tuple[str, ...] = tuple(field.name for field in FIELDS if isinstance(field, Identity))
# Fields read from the file rather than its tags, with their readers.
FILE_READERS: tuple[tuple[str, Callable[[Any], Any]], ...] = tuple(
    (field.name, field.read) for field in FIELDS if not isinstance(field, Tag)
)
# The record's fields that are columns of `tracks`, with their SQL types, in record order.
COLUMNS: tuple[tuple[str, str], ...] = tuple((field.name, field.column) for field in FIELDS if field.column)
INTEGER_COLUMNS: tuple[str, ...] = tuple(name for name, sql_type in COLUMNS if sql_type == "integer")


# --------------------------------------------------------------------------------------------
# What a record says about the rows it links to: its artists, its album, its genres.

# The album's columns taken from its tracks' records, in the albums table's order.
ALBUM_FACTS = ("mb_albumid", "mb_releasegroupid", "year", "comp")


def artist_keys(record: dict) -> tuple[tuple[str, str], tuple[str, str]]:
    """(name, MusicBrainz id or '') of the track artist and of the album artist."""
    artist = record.get("artist") or record.get("albumartist") or ""
    albumartist = record.get("albumartist") or artist
    artist_mb = record.get("mb_artistid") or ""
    albumartist_mb = record.get("mb_albumartistid") or (artist_mb if albumartist == artist else "")
    return (artist, artist_mb), (albumartist, albumartist_mb)


def album_title_and_key(record: dict) -> tuple[str, str]:
    """The album's title and MusicBrainz id ('' when untagged): with the album artist, its key."""
    return record.get("album") or "", record.get("mb_albumid") or ""


def merge_album_facts(facts: tuple | None, record: dict) -> tuple:
    """The album's ALBUM_FACTS after one more of its tracks: a value a track has replaces the one
    before it; a compilation flag on any track makes the album one."""
    mb_albumid, mb_releasegroupid, year, comp = facts or (None, None, None, False)
    return (
        record.get("mb_albumid") or mb_albumid,
        record.get("mb_releasegroupid") or mb_releasegroupid,
        record.get("year") or year,
        comp or bool(record.get("comp")),
    )


def genres(record: dict) -> list[str]:
    return record.get("genres") or []


# --------------------------------------------------------------------------------------------
# Credits: the artists a record names, each in a role (rows of track_credits), and its album's
# artists (rows of album_credits). A role is a credit_role label in the database: adding one is a
# Tag row with ``role`` here and a migration adding the label (README, "Adding a credit role").

ALBUM_ROLE = "albumartist"  # credited on the album, not the track
CREDIT_FIELDS: tuple[Tag, ...] = tuple(field for field in TAG_FIELDS if field.role)
TRACK_ROLES: tuple[str, ...] = tuple(field.role for field in CREDIT_FIELDS if field.role != ALBUM_ROLE)
_TRACK_CREDIT_FIELDS = tuple(field for field in CREDIT_FIELDS if field.role != ALBUM_ROLE)

ArtistKey = tuple[str, str]  # (name, MusicBrainz id or ''): the artists table's key


# (field name, role, name of its ids field or None) of the track's credits, in the table's order.
_TRACK_CREDITS = tuple((field.name, field.role, field.ids) for field in _TRACK_CREDIT_FIELDS)


def track_credits(record: dict) -> list[tuple[str, int, ArtistKey, str]]:
    """(role, position, artist key, sub-role) of every name the record credits on its track. The
    names' MusicBrainz ids pair with them by position, as Picard writes both, and only when the
    counts agree."""
    credits = []
    get = record.get
    for name, role, ids in _TRACK_CREDITS:
        values = get(name)
        if values:  # most credit fields of most files are empty
            mbs = get(ids) if ids else None
            if not mbs or len(mbs) != len(values):
                mbs = ("",) * len(values)
            for position, value in enumerate(values):
                if value.__class__ is str:
                    credits.append((role, position, (value, mbs[position]), ""))
                else:  # a performer: [name, instrument]
                    credits.append((role, position, (value[0], mbs[position]), value[1]))
    return credits


def album_credits(record: dict) -> list[ArtistKey]:
    """The album's artists as this record names them (its artists when it names no album artist),
    with their MusicBrainz ids as track_credits pairs them."""
    names, ids = record.get("albumartists"), record.get("mb_albumartistids")
    if not names:
        names, ids = record.get("artists") or [], record.get("mb_artistids")
    if not ids or len(ids) != len(names):
        return [(name, "") for name in names]
    return list(zip(names, ids, strict=True))
