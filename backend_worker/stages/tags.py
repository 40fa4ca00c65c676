"""Reading tags: value converters, one class per tag family, and the reader the field table drives.

The field table (``fields.py``) says, for each tag field, its type and the keys each tag family
stores it under. mutagen hands back different shapes per container, so reading a field is two steps:

1. the file's *tag family* (ID3, MP4, Vorbis comment, APEv2, ASF: one small class each, as beets'
   mediafile has a storage style per family) indexes the file's tags once: key -> list of raw
   values; it also knows the family's embedded pictures;
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
- Vorbis comment and APEv2: field names, case-insensitive (multi-valued fields give all values);
  the two families share the table's ``vorbis_ape`` keys.
- ASF: attribute names, exact.

Deliberate differences from mediafile (the tests normalise exactly these):

- absent or unparsable values are ``None`` (mediafile: ``0``/``0.0``/``""`` for some);
  list fields are ``[]`` and flags ``False`` when absent (mediafile: ``None``);
- ID3v1 numeric genres "(17)" / "17" become "Rock" (mediafile returns the raw text);
- MusicBrainz ids are lowercased and must look like a UUID (else ``None``);
- a Vorbis/APE track or disc number of the form "3/12" also supplies the total when no total
  field is present (mediafile ignores it), and an APE ``Year`` holding a full date gives its year
  (mediafile: None);
- MP4 freeform atoms are matched case-insensitively (mediafile: exact).

Values are made safe for the database: text loses NUL characters (whitespace-only text is None),
integers outside PostgreSQL's ``integer`` range and non-finite floats are None.

No mutagen import at module level: the insert stage reads the field table (and so this module)
without paying for mutagen.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

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
    text = raw[0]
    if text.__class__ is not str or "\x00" in text:
        text = _text(text)
    return text if text.strip() else None


def conv_list(raw: list) -> list[str] | None:
    if len(raw) == 1:  # nearly every tag
        return [text] if (text := conv_text(raw)) is not None else None
    out = []
    for value in raw:
        text = _text(value)
        if text.strip() and text not in out:
            out.append(text)
    return out or None


class NameSplitter:
    """Splits one tagged name into the names it holds ("A feat. B" -> A, B) on the configured
    separators, except the names of ``kept`` (e.g. "AC/DC" when "/" is a separator): those are
    taken out before splitting and put back after, so a kept name survives inside a longer value
    too ("AC/DC feat. B" -> AC/DC, B). Matching is exact, case included."""

    __slots__ = ("_kept", "_pattern")

    def __init__(self, separators: Iterable[str], kept: Iterable[str] = ()):
        separators = sorted({s for s in separators if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, separators))) if separators else None
        self._kept = sorted({name for name in kept if name}, key=len, reverse=True)

    def split(self, text: str) -> list[str]:
        if self._pattern is None or not self._pattern.search(text):  # nearly every name
            return [text]
        hidden: list[str] = []
        for name in self._kept:  # each kept name becomes a placeholder no separator matches
            if name in text:
                hidden.append(name)
                text = text.replace(name, f"\x00{len(hidden) - 1}\x00")
        parts = self._pattern.split(text)
        if hidden:
            parts = [re.sub("\x00(\\d+)\x00", lambda m: hidden[int(m.group(1))], part) for part in parts]
        return [part.strip() for part in parts if part.strip()]


_splitter: NameSplitter | None = None


def name_splitter() -> NameSplitter:
    """The splitter of the settings (SONIQUEBAY_ARTIST_SEPARATORS, _ARTIST_NAMES_KEPT), made once
    per process. Workers and the command check the settings at start (config.Settings)."""
    global _splitter
    if _splitter is None:
        from backend_worker.config import artist_name_settings

        _splitter = NameSplitter(*artist_name_settings())
    return _splitter


def conv_split_names(raw: list) -> list[str] | None:
    """A name tag that may hold several names in one value ("A feat. B"): one value is split on the
    separators; several values are already a list."""
    names = conv_list(raw)
    if names is None or len(names) > 1:
        return names
    parts = (_splitter or name_splitter()).split(names[0])
    return names if len(parts) == 1 else conv_list(parts)


_INSTRUMENT = re.compile(r"^(.*?)\s*\(([^()]*)\)\s*$")


def conv_performers(raw: list) -> list[list[str]] | None:
    """Performers as [name, instrument or ""]: ID3 TMCL/TIPL give (name, instrument) pairs,
    Vorbis and APE "Name (instrument)" as Picard writes them."""
    out: list[list[str]] = []
    for value in raw:
        if isinstance(value, tuple | list):
            name, instrument = _text(value[0]).strip(), _text(value[1]).strip()
        else:
            text = _text(value).strip()
            match = _INSTRUMENT.match(text)
            name, instrument = (match.group(1).strip(), match.group(2).strip()) if match else (text, "")
            if not name:  # "(guitar)" alone: a name in parentheses, not an instrument
                name, instrument = text, ""
        if name and [name, instrument] not in out:
            out.append([name, instrument])
    return out or None


_LEADING_INT = re.compile(r"\s*([+-]?\d+)")
_LEADING_FLOAT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))")


INT4_MAX = 2**31 - 1  # the database's integer columns: a bigger number would fail a whole batch


def _int(value: Any) -> int | None:
    if value.__class__ is str and value.isdecimal() and len(value) < 10:  # "3": most numbers
        return int(value)
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


def conv_number(raw: list) -> int | None:
    """'n' of "n/total" (ID3 TRCK/TPOS, MP4 tuples, plain numbers)."""
    return _pair(raw, 0)


def conv_total(raw: list) -> int | None:
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


_UUIDS = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def conv_uuid_list(raw: list) -> list[str] | None:
    """Every MusicBrainz id of a multi-valued id tag, in order: several values, or one value
    holding several ids (ID3v2.3 "id/id", as Picard joins them)."""
    ids = [found.lower() for value in raw for found in _UUIDS.findall(_text(value))]
    return ids or None


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
# Tag families: one file's tags, seen through its family's storage style.

EmbeddedPicture = tuple[int, bytes, "str | None"]  # (picture type, image bytes, declared mime type)
FRONT_COVER = 3  # the picture type of a front cover (ID3 APIC, FLAC and ASF pictures)


class TagFamily:
    """One file's tags (a mutagen tag object) as its family stores them.

    ``values`` indexes them once, when the file is opened: spelled key -> the raw values stored
    under it, for every key the file holds (keys no field names are simply never asked for).
    ``column`` names the field table's keys this family reads; ``spell`` turns a table key into
    the form ``values`` uses (computed once per table, not per file).
    """

    column: ClassVar[str]
    __slots__ = ("tags", "values")

    def __init__(self, tags):
        self.tags = tags
        self.values: dict[str, list] = self.index(tags)

    @staticmethod
    def spell(key: str) -> str:
        return key

    @staticmethod
    def index(tags) -> dict[str, list]:
        raise NotImplementedError

    def has_picture(self) -> bool:
        """Whether the tags embed any picture (cheap: nothing decoded)."""
        raise NotImplementedError

    def pictures(self) -> Iterable[EmbeddedPicture]:
        raise NotImplementedError


def _own_dict(tags) -> dict:
    """The dict a mutagen DictProxy (ID3 and MP4 tags) keeps its items in: its ``items()`` looks
    each key up again in Python (~3 us a file). Its items otherwise."""
    own = getattr(tags, "_DictProxy__dict", None)
    return own if own.__class__ is dict else dict(tags.items())


_DESCRIBED = ("TXXX:", "COMM:")  # ID3 frames told apart by their description
# ID3 TIPL involvements (lowercase) that are credits of their own; any other TIPL entry names an
# instrument (ID3v2.3's IPLS, read as TIPL, holds the performers too).
INVOLVEMENTS = frozenset({"arranger", "engineer", "producer", "mix", "dj-mix"})


class ID3Family(TagFamily):
    """ID3v2: frames keyed by id; TXXX and COMM by "<id>:<description lowercased>" (the first of
    a description wins), UFID by "UFID:<owner>" (its data), TIPL by "TIPL:<involvement
    lowercased>" (its names) and "TMCL" the performers: (name, instrument) pairs of TMCL, and of
    the TIPL entries that are no involvement (ID3v2.3 has one IPLS frame for both, which mutagen
    reads as TIPL)."""

    column = "id3"
    __slots__ = ()

    @staticmethod
    def spell(key: str) -> str:
        return key[:5] + key[5:].lower() if key[:5] in (*_DESCRIBED, "TIPL:") else key

    @staticmethod
    def index(tags) -> dict[str, list]:
        values: dict[str, list] = {}
        frames = _own_dict(tags)
        for key, frame in frames.items():
            prefix = key[:5]
            if prefix == "TXXX:" or prefix == "COMM:":
                values.setdefault(prefix + frame.desc.lower(), frame.text)
            elif prefix == "UFID:":
                values[key] = [frame.data]
            elif key == "TCON":
                text = frame.text
                if any(t[:1] == "(" or t.isdecimal() or t in ("CR", "RX") for t in text):
                    text = frame.genres  # ID3v1 numeric genres "(17)" -> "Rock"
                values[key] = text
            elif key == "TIPL" or key == "TMCL":
                continue  # below
            else:
                text = getattr(frame, "text", None)
                if text.__class__ is list:  # text frames (a lyrics or a picture frame is none)
                    values[key] = text
        tipl, tmcl = frames.get("TIPL"), frames.get("TMCL")
        if tipl is not None or tmcl is not None:
            performers = []
            if tmcl is not None:
                performers.extend((name, role) for role, name in tmcl.people)
            if tipl is not None:
                for role, name in tipl.people:
                    involvement = role.lower()
                    if involvement in INVOLVEMENTS:
                        values.setdefault("TIPL:" + involvement, []).append(name)
                    else:
                        performers.append((name, role))
            if performers:
                values["TMCL"] = performers
        return values

    def has_picture(self) -> bool:
        return any(key[:4] == "APIC" for key in self.tags)

    def pictures(self) -> Iterator[EmbeddedPicture]:
        for frame in self.tags.getall("APIC"):
            yield int(frame.type), frame.data, frame.mime


_FREEFORM = "----:"  # MP4 freeform atoms ("----:com.apple.iTunes:<name>")
_MP4_PNG = 14  # mutagen.mp4.MP4Cover.FORMAT_PNG


class MP4Family(TagFamily):
    """MP4 atoms by name; freeform atoms by name lowercased (their values are bytes)."""

    column = "mp4"
    __slots__ = ()

    @staticmethod
    def spell(key: str) -> str:
        return key.lower() if key.startswith(_FREEFORM) else key

    @staticmethod
    def index(tags) -> dict[str, list]:
        values: dict[str, list] = {}
        for key, value in _own_dict(tags).items():
            if key[:5] == _FREEFORM:
                key = key.lower()
            elif value is not None and not isinstance(value, list):
                value = [value]  # cpil is a bare bool
            values[key] = value
        return values

    def has_picture(self) -> bool:
        return bool(self.tags.get("covr"))

    def pictures(self) -> Iterator[EmbeddedPicture]:
        for cover in self.tags.get("covr") or ():
            mime = "image/png" if getattr(cover, "imageformat", None) == _MP4_PNG else "image/jpeg"
            yield FRONT_COVER, bytes(cover), mime


class VorbisFamily(TagFamily):
    """Vorbis comments (Ogg, FLAC): (name, value) pairs, a name as often as it has values; names
    case-insensitive."""

    column = "vorbis_ape"
    __slots__ = ()

    @staticmethod
    def spell(key: str) -> str:
        return key.lower()

    @staticmethod
    def index(tags) -> dict[str, list]:
        values: dict[str, list] = {}
        for name, value in tags:
            key = name.lower()
            if key in values:
                values[key].append(value)
            else:
                values[key] = [value]
        return values

    def has_picture(self) -> bool:
        return "metadata_block_picture" in self.values or "coverart" in self.values

    def pictures(self) -> list[EmbeddedPicture]:
        from mutagen.flac import Picture as FlacPicture  # only covers need it: see the docstring

        found: list[EmbeddedPicture] = []
        legacy_mime = None
        for key, value in self.tags:
            lowered = key.lower()
            if lowered == "metadata_block_picture":
                picture = FlacPicture(base64.b64decode(value))
                found.append((picture.type, picture.data, picture.mime))
            elif lowered == "coverart":
                found.append((0, base64.b64decode(value), None))
            elif lowered == "coverartmime":
                legacy_mime = value
        if legacy_mime:
            found = [(kind, data, mime or legacy_mime) for kind, data, mime in found]
        return found


_APE_TEXT = 0  # mutagen.apev2.TEXT
_APE_COVER = "cover art"  # binary items "Cover Art (Front)", "Cover Art (Back)", ...


class APEFamily(TagFamily):
    """APEv2 (Monkey's Audio, WavPack, Musepack): items, names case-insensitive; a text item's
    values are NUL-separated."""

    column = "vorbis_ape"
    __slots__ = ()

    @staticmethod
    def spell(key: str) -> str:
        return key.lower()

    @staticmethod
    def index(tags) -> dict[str, list]:
        return {
            key.lower(): value.value.split("\0") if value.kind == _APE_TEXT else [value.value]
            for key, value in tags.items()
        }

    def has_picture(self) -> bool:
        return any(key.lower().startswith(_APE_COVER) for key in self.tags)

    def pictures(self) -> Iterator[EmbeddedPicture]:
        for key in self.tags:
            lowered = key.lower()
            if lowered.startswith(_APE_COVER):
                blob = self.tags[key].value  # "<file name>\0<image bytes>"
                data = blob.split(b"\x00", 1)[1] if b"\x00" in blob else blob
                yield (FRONT_COVER if lowered == "cover art (front)" else 0), data, None


_ASF_PICTURE = "WM/Picture"


class ASFFamily(TagFamily):
    """ASF (Windows Media) attributes: (name, attribute) pairs, names exact."""

    column = "asf"
    __slots__ = ()

    @staticmethod
    def index(tags) -> dict[str, list]:
        values: dict[str, list] = {}
        for name, attribute in tags:
            values.setdefault(name, []).append(getattr(attribute, "value", attribute))
        return values

    def has_picture(self) -> bool:
        return _ASF_PICTURE in self.values

    def pictures(self) -> Iterator[EmbeddedPicture]:
        for value in self.values.get(_ASF_PICTURE, ()):
            yield _unpack_asf_picture(value)


def _unpack_asf_picture(value: bytes) -> EmbeddedPicture:
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


FAMILIES: tuple[type[TagFamily], ...] = (ID3Family, MP4Family, VorbisFamily, APEFamily, ASFFamily)

# --------------------------------------------------------------------------------------------
# Reading the table's fields.


class TagReader:
    """Reads a field table's tag fields from one file's tags, whatever its family.

    ``fields``: rows with ``name``, ``type.convert``, ``type.default`` and, per family column
    (``id3``, ``mp4``, ``vorbis_ape``, ``asf``), the keys to try: a key, or ``(key, converter)``.

    A file holds a few of the table's keys (20 of 70 in a file tagged by Picard): the reader goes
    once over the keys the file has (``TagFamily.values``) and hands the values of each key the
    table names to every field stored under it (TPE1 is both ``artist`` and ``artists``); the
    other fields keep their defaults. A field with several keys takes the value of the first of
    them, in the table's order, that converts to something.
    """

    def __init__(self, fields: Iterable):
        fields = tuple(fields)
        self.defaults = tuple((field.name, field.type.default) for field in fields)
        self._scalar_defaults = {
            name: default for name, default in self.defaults if default.__class__ is not list
        }
        self._list_names = tuple(name for name, default in self.defaults if default.__class__ is list)
        self._dispatch = {family: self._plan(family, fields) for family in FAMILIES}

    @staticmethod
    def _plan(family: type[TagFamily], fields: tuple) -> dict[str, tuple[tuple[str, int, Converter], ...]]:
        """Per spelled key of one family, the fields it may fill: (name, rank, converter), where
        rank is the key's place among the field's keys, -1 when it is the field's only key."""
        targets: dict[str, list] = {}
        for field in fields:
            specs = getattr(field, family.column)
            for rank, spec in enumerate(specs):
                key, convert = spec if isinstance(spec, tuple) else (spec, field.type.convert)
                targets.setdefault(family.spell(key), []).append(
                    (field.name, rank if len(specs) > 1 else -1, convert)
                )
        return {key: tuple(fields_of_key) for key, fields_of_key in targets.items()}

    def read(self, tags: TagFamily | None, into: dict[str, Any]) -> None:
        """Set every tag field of ``into`` (``tags`` None: the file has none, all at defaults)."""
        into.update(self._scalar_defaults)
        for name in self._list_names:
            into[name] = []
        if tags is None:
            return
        dispatch = self._dispatch[type(tags)]
        ranks: dict[str, int] = {}  # the rank of the key that gave a several-key field its value
        for key, raw in tags.values.items():
            targets = dispatch.get(key)
            if targets is None or not raw:
                continue
            for name, rank, convert in targets:
                if rank > 0 and ranks.get(name, rank) < rank:
                    continue  # an earlier key of the field gave its value
                value = convert(raw)
                if value is not None:
                    into[name] = value
                    if rank >= 0:
                        ranks[name] = rank


# --------------------------------------------------------------------------------------------
# Embedded pictures: the tags' own, and FLAC picture blocks (which live outside the tags).


def has_picture(tags: TagFamily | None, mfile) -> bool:
    """Whether the file embeds any picture (cheap: no decoding)."""
    return bool(getattr(mfile, "pictures", None)) or (tags is not None and tags.has_picture())


def front_cover(tags: TagFamily | None, mfile) -> tuple[bytes, str] | None:
    """(image bytes, mime type) of the front cover, else the first picture; None without any."""
    flac_blocks = getattr(mfile, "pictures", None) or ()
    candidates: list[EmbeddedPicture] = [(pic.type, pic.data, pic.mime) for pic in flac_blocks]
    if tags is not None:
        candidates.extend(tags.pictures())
    candidates = [c for c in candidates if c[1]]
    if not candidates:
        return None
    _kind, data, mime = next((c for c in candidates if c[0] == FRONT_COVER), candidates[0])
    return bytes(data), sniff_image_mime(data, mime)


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
