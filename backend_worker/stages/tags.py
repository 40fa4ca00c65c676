"""Tag fields: one declarative table from beets' field names to each tag family's keys.

mutagen hands back different shapes per container, so reading a field is two steps:

1. a *view* over one tag family (ID3, MP4, Vorbis comment, APEv2, ASF) turns a key from the
   table into a list of raw values (``None`` when the key is absent);
2. the field's *converter* turns that list into the typed value (``None`` when it holds nothing
   usable).

For each field the keys of the file's family are tried in order; the first one that converts to a
non-empty value wins (the same precedence as beets' mediafile). A key may carry its own converter
as ``(key, converter)``, e.g. the track total hidden in ID3 ``TRCK`` "3/12".

Key syntax per family:

- ID3: a frame id (``TIT2``), ``TXXX:<description>`` (description matched case-insensitively),
  ``UFID:<owner>`` (binary data), ``COMM:<description>`` (iTunes SoundCheck).
- MP4: an atom name (``\\xa9nam``, ``trkn``, ``cpil``); freeform ``----:com.apple.iTunes:<name>``
  atoms are matched case-insensitively and hold bytes.
- Vorbis comment and APEv2: field names, case-insensitive (multi-valued fields give all values).
- ASF: attribute names, exact.

Deliberate differences from mediafile (the tests normalise exactly these):

- absent or unparsable values are ``None`` (mediafile: ``0``/``0.0``/``""`` for some);
  ``genres`` is ``[]`` and ``comp`` is ``False`` when absent (mediafile: ``None``);
- ID3v1 numeric genres "(17)" / "17" become "Rock" (mediafile returns the raw text);
- MusicBrainz ids are lowercased and must look like a UUID (else ``None``);
- a Vorbis/APE ``TRACKNUMBER``/``DISCNUMBER`` of the form "3/12" also supplies the total when no
  total field is present (mediafile ignores it), and an APE ``Year`` holding a full date gives
  its year (mediafile: None);
- MP4 freeform atoms are matched case-insensitively (mediafile: exact).

Values are made safe for the database: text loses NUL characters (whitespace-only text is None),
integers outside PostgreSQL's ``integer`` range and non-finite floats are None.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from mutagen.flac import Picture

ID3, MP4, VORBIS, APE, ASF = "id3", "mp4", "vorbis", "ape", "asf"

Converter = Callable[[list], Any]

# --------------------------------------------------------------------------------------------
# Converters: list of raw mutagen values -> typed value or None.


def _text(value: Any) -> str:
    """One raw value as text ('' for nothing). NULs are dropped: PostgreSQL text cannot hold them."""
    if value.__class__ is not str:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, bool):
            return "1" if value else "0"
        else:
            value = str(value)
    return value.replace("\x00", "") if "\x00" in value else value


def conv_text(raw: list) -> str | None:
    if not raw:
        return None
    text = _text(raw[0])
    return text if text.strip() else None


def conv_list(raw: list) -> list[str] | None:
    out = []
    for value in raw:
        text = _text(value)
        if text.strip() and text not in out:
            out.append(text)
    return out or None


_LEADING_INT = re.compile(r"\s*([+-]?\d+)")
_LEADING_FLOAT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))")


INT4_MAX = 2**31 - 1  # the database's integer columns: a bigger number would fail a whole batch


def _int(value: Any) -> int | None:
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) else None
    elif not isinstance(value, int):  # bool is an int
        match = _LEADING_INT.match(_text(value))
        value = int(match.group(1)) if match else None
    if value is None or not -INT4_MAX <= value <= INT4_MAX:
        return None
    return int(value)


def conv_int(raw: list) -> int | None:
    return _int(raw[0]) if raw else None


def _pair(raw: list, index: int) -> int | None:
    if not raw:
        return None
    value = raw[0]
    if isinstance(value, tuple | list):  # MP4 trkn / disk: (n, total); 0 means unset
        number = value[index] if len(value) > index else 0
        return number or None
    if isinstance(value, int | float):
        return _int(value) if index == 0 else None
    parts = _text(value).split("/")
    return _int(parts[index]) if len(parts) > index else None


def conv_first(raw: list) -> int | None:
    """'n' of "n/total" (ID3 TRCK/TPOS, MP4 tuples, plain numbers)."""
    return _pair(raw, 0)


def conv_second(raw: list) -> int | None:
    """'total' of "n/total"; None when the value has no total."""
    return _pair(raw, 1)


_TRUE = frozenset({"1", "true", "yes", "y", "on"})


def conv_bool(raw: list) -> bool | None:
    if not raw:
        return None
    value = raw[0]
    if isinstance(value, bool | int):
        return bool(value)
    text = _text(value).strip().lower()
    if text in _TRUE:
        return True
    number = _int(text)
    return bool(number) if number is not None else False


def conv_float(raw: list) -> float | None:
    """ReplayGain gain/peak: "-6.50 dB", "0.988553", numbers (NaN and infinities: None)."""
    if not raw:
        return None
    value = raw[0]
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        match = _LEADING_FLOAT.match(_text(value))
        if not match:
            return None
        number = float(match.group(1))
    return number if math.isfinite(number) else None


_DATE_SPLIT = re.compile(r"[-/.Tt ]")


def conv_year(raw: list) -> int | None:
    """Year of "2001", "2001-05-02", "2001/05/02", "2001-05-02T10:00:00Z" (and ID3 timestamps)."""
    if not raw:
        return None
    value = raw[0]
    if not (isinstance(value, int) and not isinstance(value, bool)):
        head = _DATE_SPLIT.split(_text(value).strip(), 1)[0]
        value = int(head) if head.isdigit() else 0
    return value if 0 < value <= INT4_MAX else None


_UUID = re.compile(r"\s*([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})")


def conv_uuid(raw: list) -> str | None:
    """A MusicBrainz id: the first UUID-shaped value, lowercased (multi-id values keep the first)."""
    if not raw:
        return None
    match = _UUID.match(_text(raw[0]))
    return match.group(1).lower() if match else None


def _soundcheck(raw: list) -> tuple[float, float] | None:
    """iTunes Sound Check (iTunNORM) -> (gain dB, peak), as mediafile decodes it."""
    if not raw:
        return None
    try:
        numbers = struct.unpack("!10i", bytes.fromhex(_text(raw[0]).replace(" ", "")))
    except (ValueError, struct.error):
        return None
    loudest = max(numbers[:2])
    gain = round(math.log10(loudest / 1000.0) * -10, 2) if loudest > 0 else 0.0
    return gain, round(max(numbers[6:8]) / 32768.0, 6)


def conv_soundcheck_gain(raw: list) -> float | None:
    decoded = _soundcheck(raw)
    return decoded[0] if decoded else None


def conv_soundcheck_peak(raw: list) -> float | None:
    decoded = _soundcheck(raw)
    return decoded[1] if decoded else None


# --------------------------------------------------------------------------------------------
# The table.


class Field(NamedTuple):
    name: str
    convert: Converter
    id3: tuple = ()
    mp4: tuple = ()
    vorbis: tuple = ()
    ape: tuple = ()
    asf: tuple = ()
    default: Any = None


_IT = "----:com.apple.iTunes:"
_MB = "http://musicbrainz.org"
_SECOND = conv_second

FIELDS: tuple[Field, ...] = (
    Field("title", conv_text, ("TIT2",), ("\xa9nam",), ("title",), ("title",), ("Title",)),
    Field("artist", conv_text, ("TPE1",), ("\xa9ART",), ("artist",), ("artist",), ("Author",)),
    Field("album", conv_text, ("TALB",), ("\xa9alb",), ("album",), ("album",), ("WM/AlbumTitle",)),
    Field(
        "albumartist",
        conv_text,
        ("TPE2",),
        ("aART",),
        ("album artist", "album_artist", "albumartist"),
        ("album artist", "album_artist", "albumartist"),
        ("WM/AlbumArtist",),
    ),
    Field("composer", conv_text, ("TCOM",), ("\xa9wrt",), ("composer",), ("composer",), ("WM/Composer",)),
    Field(
        "initial_key",
        conv_text,
        ("TKEY",),
        (_IT + "initialkey",),
        ("initialkey",),
        ("initialkey",),
        ("INITIALKEY",),
    ),
    Field("genres", conv_list, ("TCON",), ("\xa9gen",), ("genre",), ("genre",), ("WM/Genre",), default=[]),
    Field(
        "year",
        conv_year,
        ("TDRC",),
        ("\xa9day",),
        ("date", "year"),
        ("date", "year"),
        ("WM/Year",),
    ),
    Field(
        "track",
        conv_first,
        ("TRCK",),
        ("trkn",),
        ("track", "tracknumber"),
        ("track", "tracknumber"),
        ("WM/TrackNumber",),
    ),
    Field(
        "tracktotal",
        conv_int,
        (("TRCK", _SECOND),),
        (("trkn", _SECOND),),
        ("tracktotal", "trackc", "totaltracks", ("tracknumber", _SECOND), ("track", _SECOND)),
        ("tracktotal", "trackc", "totaltracks", ("track", _SECOND), ("tracknumber", _SECOND)),
        ("TotalTracks", ("WM/TrackNumber", _SECOND)),
    ),
    Field(
        "disc",
        conv_first,
        ("TPOS",),
        ("disk",),
        ("disc", "discnumber"),
        ("disc", "discnumber"),
        ("WM/PartOfSet",),
    ),
    Field(
        "disctotal",
        conv_int,
        (("TPOS", _SECOND),),
        (("disk", _SECOND),),
        ("disctotal", "discc", "totaldiscs", ("discnumber", _SECOND), ("disc", _SECOND)),
        ("disctotal", "discc", "totaldiscs", ("disc", _SECOND), ("discnumber", _SECOND)),
        ("TotalDiscs", ("WM/PartOfSet", _SECOND)),
    ),
    Field(
        "comp",
        conv_bool,
        ("TCMP",),
        ("cpil",),
        ("compilation",),
        ("compilation",),
        ("WM/IsCompilation",),
        default=False,
    ),
    Field("bpm", conv_int, ("TBPM",), ("tmpo",), ("bpm",), ("bpm",), ("WM/BeatsPerMinute",)),
    Field(
        "mb_trackid",
        conv_uuid,
        ("UFID:" + _MB,),
        (_IT + "MusicBrainz Track Id",),
        ("musicbrainz_trackid",),
        ("musicbrainz_trackid",),
        ("MusicBrainz/Track Id",),
    ),
    Field(
        "mb_albumid",
        conv_uuid,
        ("TXXX:MusicBrainz Album Id",),
        (_IT + "MusicBrainz Album Id",),
        ("musicbrainz_albumid",),
        ("musicbrainz_albumid",),
        ("MusicBrainz/Album Id",),
    ),
    Field(
        "mb_artistid",
        conv_uuid,
        ("TXXX:MusicBrainz Artist Id",),
        (_IT + "MusicBrainz Artist Id",),
        ("musicbrainz_artistid",),
        ("musicbrainz_artistid",),
        ("MusicBrainz/Artist Id",),
    ),
    Field(
        "mb_albumartistid",
        conv_uuid,
        ("TXXX:MusicBrainz Album Artist Id",),
        (_IT + "MusicBrainz Album Artist Id",),
        ("musicbrainz_albumartistid",),
        ("musicbrainz_albumartistid",),
        ("MusicBrainz/Album Artist Id",),
    ),
    Field(
        "mb_releasegroupid",
        conv_uuid,
        ("TXXX:MusicBrainz Release Group Id",),
        (_IT + "MusicBrainz Release Group Id",),
        ("musicbrainz_releasegroupid",),
        ("musicbrainz_releasegroupid",),
        ("MusicBrainz/Release Group Id",),
    ),
    Field(
        "rg_track_gain",
        conv_float,
        ("TXXX:replaygain_track_gain", ("COMM:iTunNORM", conv_soundcheck_gain)),
        (_IT + "replaygain_track_gain", (_IT + "iTunNORM", conv_soundcheck_gain)),
        ("replaygain_track_gain",),
        ("replaygain_track_gain",),
        ("replaygain_track_gain",),
    ),
    Field(
        "rg_track_peak",
        conv_float,
        ("TXXX:replaygain_track_peak", ("COMM:iTunNORM", conv_soundcheck_peak)),
        (_IT + "replaygain_track_peak", (_IT + "iTunNORM", conv_soundcheck_peak)),
        ("replaygain_track_peak",),
        ("replaygain_track_peak",),
        ("replaygain_track_peak",),
    ),
    Field(
        "rg_album_gain",
        conv_float,
        ("TXXX:replaygain_album_gain",),
        (_IT + "replaygain_album_gain",),
        ("replaygain_album_gain",),
        ("replaygain_album_gain",),
        ("replaygain_album_gain",),
    ),
    Field(
        "rg_album_peak",
        conv_float,
        ("TXXX:replaygain_album_peak",),
        (_IT + "replaygain_album_peak",),
        ("replaygain_album_peak",),
        ("replaygain_album_peak",),
        ("replaygain_album_peak",),
    ),
)

TAG_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS)


def _compile(family: str) -> tuple[tuple[str, Any, tuple[tuple[str, Converter], ...]], ...]:
    """Per family: (field name, default, ((key, converter), ...)) with keys pre-normalised."""
    plan = []
    for field in FIELDS:
        keys = []
        for spec in getattr(field, family):
            key, convert = spec if isinstance(spec, tuple) else (spec, field.convert)
            if family in (VORBIS, APE):
                key = key.lower()
            elif family == ID3 and key[:5] in ("TXXX:", "COMM:"):
                key = key[:5] + key[5:].lower()
            elif family == MP4 and key.startswith("----:"):
                key = key.lower()
            keys.append((key, convert))
        plan.append((field.name, field.default, tuple(keys)))
    return tuple(plan)


_PLANS = {family: _compile(family) for family in (ID3, MP4, VORBIS, APE, ASF)}
_NONE = _PLANS[ID3]

# --------------------------------------------------------------------------------------------
# Views: key -> list of raw values, over one file's mutagen tag object.


class _ID3View:
    __slots__ = ("tags", "_desc")

    def __init__(self, tags):
        self.tags = tags
        self._desc = None

    def _by_desc(self) -> dict[str, list]:
        # TXXX and COMM frames keyed "TXXX:<desc lowercased>": one pass over the frames.
        found: dict[str, list] = {}
        for key, frame in self.tags.items():
            prefix = key[:5]
            if prefix == "TXXX:" or prefix == "COMM:":
                found.setdefault(prefix + frame.desc.lower(), frame.text)
        self._desc = found
        return found

    def get(self, key: str) -> list | None:
        prefix = key[:5]
        if prefix == "TXXX:" or prefix == "COMM:":
            desc = self._desc if self._desc is not None else self._by_desc()
            return desc.get(key)
        frame = self.tags.get(key)
        if frame is None:
            return None
        if prefix == "UFID:":
            return [frame.data]
        if key == "TCON":
            text = frame.text
            if any(t[:1] == "(" or t.isdecimal() or t in ("CR", "RX") for t in text):
                return frame.genres  # ID3v1 numeric genres "(17)" -> "Rock"
            return text
        return frame.text


class _MP4View:
    __slots__ = ("tags", "_free")

    def __init__(self, tags):
        self.tags = tags
        self._free = None

    def get(self, key: str) -> list | None:
        if key[:5] == "----:":
            free = self._free
            if free is None:
                free = self._free = {k.lower(): v for k, v in self.tags.items() if k[:5] == "----:"}
            return free.get(key)
        value = self.tags.get(key)
        if value is None or isinstance(value, list):
            return value
        return [value]  # cpil is a bare bool


class _DictView:
    """Vorbis comments (list of (key, value) pairs) or ASF attributes, gathered once."""

    __slots__ = ("values",)

    def __init__(self, pairs, lower: bool):
        values: dict[str, list] = {}
        for key, value in pairs:
            values.setdefault(key.lower() if lower else key, []).append(value)
        self.values = values

    def get(self, key: str) -> list | None:
        return self.values.get(key)


class _ASFView(_DictView):
    __slots__ = ()

    def __init__(self, tags):
        super().__init__(((k, getattr(v, "value", v)) for k, v in tags), lower=False)


_APE_TEXT = 0  # mutagen.apev2.TEXT


class _APEView:
    __slots__ = ("tags",)

    def __init__(self, tags):
        self.tags = tags

    def get(self, key: str) -> list | None:
        value = self.tags.get(key)  # APEv2 keys are case-insensitive in mutagen
        if value is None:
            return None
        if value.kind == _APE_TEXT:  # text: NUL-separated values
            return value.value.split("\0")
        return [value.value]


def view(family: str, tags):
    if family == ID3:
        return _ID3View(tags)
    if family == MP4:
        return _MP4View(tags)
    if family == VORBIS:
        return _DictView(tags, lower=True)
    if family == APE:
        return _APEView(tags)
    return _ASFView(tags)


def read_fields(family: str | None, tags) -> dict[str, Any]:
    """All table fields for one file's tags (``tags`` may be None: every field at its default)."""
    if family is None or tags is None:
        return {name: (list(default) if isinstance(default, list) else default) for name, default, _ in _NONE}
    source = view(family, tags)
    get = source.get
    out: dict[str, Any] = {}
    for name, default, keys in _PLANS[family]:
        value = None
        for key, convert in keys:
            raw = get(key)
            if raw:
                value = convert(raw)
                if value is not None:
                    break
        if value is None:
            value = list(default) if isinstance(default, list) else default
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# Embedded pictures.

FRONT_COVER = 3
_ASF_PICTURE = "WM/Picture"
_APE_FRONT = "cover art (front)"


def has_picture(family: str | None, mfile) -> bool:
    """Whether the file embeds any picture (cheap: no decoding)."""
    pictures = getattr(mfile, "pictures", None)  # FLAC picture blocks
    if pictures:
        return True
    tags = mfile.tags
    if tags is None or family is None:
        return False
    if family == ID3:
        return any(key[:4] == "APIC" for key in tags)
    if family == MP4:
        return bool(tags.get("covr"))
    if family == VORBIS:
        return any(key.lower() in ("metadata_block_picture", "coverart") for key, _ in tags)
    if family == APE:
        return any(key.lower().startswith("cover art") for key in tags)
    return any(key == _ASF_PICTURE for key, _ in tags)


def sniff_image_mime(data: bytes, declared: str | None = None) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    if declared and declared.startswith("image/"):
        return declared
    return "application/octet-stream"


def _pick(candidates: list[tuple[int, bytes, str | None]]) -> tuple[bytes, str] | None:
    """Front cover if any, else the first picture; (data, mime)."""
    candidates = [c for c in candidates if c[1]]
    if not candidates:
        return None
    kind, data, mime = next((c for c in candidates if c[0] == FRONT_COVER), candidates[0])
    return bytes(data), sniff_image_mime(data, mime)


def _unpack_asf_picture(value: bytes) -> tuple[int, bytes, str]:
    kind, size = struct.unpack_from("<bi", value)
    pos = 5
    strings = []
    for _ in range(2):  # mime, description: UTF-16-LE, NUL-terminated
        end = pos
        while value[end : end + 2] != b"\x00\x00":
            end += 2
            if end > len(value):
                raise ValueError("unterminated WM/Picture string")
        strings.append(value[pos:end].decode("utf-16-le", "replace"))
        pos = end + 2
    return kind, value[pos : pos + size], strings[0]


def pictures(family: str | None, mfile) -> tuple[bytes, str] | None:
    """(image bytes, mime type) of the front cover, else the first picture."""
    candidates: list[tuple[int, bytes, str | None]] = []
    for pic in getattr(mfile, "pictures", None) or ():
        candidates.append((pic.type, pic.data, pic.mime))
    tags = mfile.tags
    if tags is not None and family is not None:
        if family == ID3:
            for frame in tags.getall("APIC"):
                candidates.append((int(frame.type), frame.data, frame.mime))
        elif family == MP4:
            for cover in tags.get("covr") or ():
                mime = "image/png" if getattr(cover, "imageformat", None) == 14 else "image/jpeg"
                candidates.append((FRONT_COVER, bytes(cover), mime))
        elif family == VORBIS:
            legacy_mime = None
            for key, value in tags:
                lowered = key.lower()
                if lowered == "metadata_block_picture":
                    pic = Picture(base64.b64decode(value))
                    candidates.append((pic.type, pic.data, pic.mime))
                elif lowered == "coverart":
                    candidates.append((0, base64.b64decode(value), None))
                elif lowered == "coverartmime":
                    legacy_mime = value
            if legacy_mime:
                candidates = [(k, d, m or legacy_mime) for k, d, m in candidates]
        elif family == APE:
            for key in tags:
                if key.lower().startswith("cover art"):
                    blob = tags[key].value
                    data = blob.split(b"\x00", 1)[1] if b"\x00" in blob else blob
                    kind = FRONT_COVER if key.lower() == _APE_FRONT else 0
                    candidates.append((kind, data, None))
        elif family == ASF:
            for key, attr in tags:
                if key == _ASF_PICTURE:
                    candidates.append(_unpack_asf_picture(attr.value))
    return _pick(candidates)
