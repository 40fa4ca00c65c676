"""Reading tags: value converters, one class per tag family, and the reader the field table drives.

The field table (``fields.py``) says, for each tag field, its type and the keys each tag family
stores it under. mutagen hands back different shapes per container, so reading a field is two steps:

1. the file's *tag family* (ID3, MP4, Vorbis comment, APEv2, ASF: one small class each, as beets'
   mediafile has a storage style per family) turns a key into a list of raw values (``None`` when
   the key is absent); it also knows the family's embedded pictures;
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
from collections.abc import Callable, Collection, Iterable, Iterator
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
    text = _text(raw[0])
    return text if text.strip() else None


def conv_list(raw: list) -> list[str] | None:
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

    ``column`` names the field table's keys this family reads; ``spell`` turns a table key into
    the form ``get`` looks up (computed once per table, not per file).
    """

    column: ClassVar[str]
    __slots__ = ("tags",)

    def __init__(self, tags):
        self.tags = tags

    @staticmethod
    def spell(key: str) -> str:
        return key

    def get(self, key: str) -> list | None:
        """The raw values stored under ``key``; None when the key is absent."""
        raise NotImplementedError

    def present(self) -> Collection[str]:
        """Every spelled key ``get`` may find something under (more is harmless, less loses it);
        a set or a dict's keys: the reader asks it before each ``get``."""
        raise NotImplementedError

    def has_picture(self) -> bool:
        """Whether the tags embed any picture (cheap: nothing decoded)."""
        raise NotImplementedError

    def pictures(self) -> Iterable[EmbeddedPicture]:
        raise NotImplementedError


_DESCRIBED = ("TXXX:", "COMM:")  # ID3 frames told apart by their description
# ID3 TIPL involvements (lowercase) that are credits of their own; any other TIPL entry names an
# instrument (ID3v2.3's IPLS, read as TIPL, holds the performers too).
INVOLVEMENTS = frozenset({"arranger", "engineer", "producer", "mix", "dj-mix"})


class ID3Family(TagFamily):
    column = "id3"
    __slots__ = ("_described", "_keys")

    def __init__(self, tags):
        self.tags = tags
        # mutagen's dict proxy looks a key up in Python, raising KeyError for an absent one (most
        # of the table's keys in any file); its key view answers `in` at C speed.
        self._keys = tags.keys()
        self._described: dict[str, list] | None = None

    @staticmethod
    def spell(key: str) -> str:
        return key[:5] + key[5:].lower() if key[:5] in (*_DESCRIBED, "TIPL:") else key

    def _by_description(self) -> dict[str, list]:
        # TXXX and COMM frames keyed "TXXX:<desc lowercased>": one pass over the frames.
        found: dict[str, list] = {}
        for key in self._keys:
            prefix = key[:5]
            if prefix == "TXXX:" or prefix == "COMM:":
                frame = self.tags[key]
                found.setdefault(prefix + frame.desc.lower(), frame.text)
        self._described = found
        return found

    def get(self, key: str) -> list | None:
        prefix = key[:5]
        if prefix == "TXXX:" or prefix == "COMM:":
            described = self._described if self._described is not None else self._by_description()
            return described.get(key)
        if prefix == "TIPL:":
            return self._people(key[5:])
        if key == "TMCL":
            return self._performers()
        if key not in self._keys:
            return None
        frame = self.tags[key]
        if prefix == "UFID:":
            return [frame.data]
        if key == "TCON":
            text = frame.text
            if any(t[:1] == "(" or t.isdecimal() or t in ("CR", "RX") for t in text):
                return frame.genres  # ID3v1 numeric genres "(17)" -> "Rock"
            return text
        return frame.text

    def present(self) -> set[str]:
        keys = set(self._keys)  # frame ids, UFID:<owner>
        keys.update(self._described if self._described is not None else self._by_description())
        if "TIPL" in self._keys:
            keys.update("TIPL:" + role.lower() for role, _ in self.tags["TIPL"].people)
            keys.add("TMCL")  # its other entries are performers (ID3v2.3's IPLS)
        return keys

    def _people(self, involvement: str) -> list | None:
        """The names TIPL credits with this involvement (producer, mix...), case-insensitive."""
        if "TIPL" not in self._keys:
            return None
        return [name for role, name in self.tags["TIPL"].people if role.lower() == involvement] or None

    def _performers(self) -> list | None:
        """(name, instrument) pairs of TMCL, and of TIPL entries that are no involvement: ID3v2.3
        has one IPLS frame for both, which mutagen reads as TIPL."""
        pairs = []
        if "TMCL" in self._keys:
            pairs.extend((name, role) for role, name in self.tags["TMCL"].people)
        if "TIPL" in self._keys:
            pairs.extend(
                (name, role) for role, name in self.tags["TIPL"].people if role.lower() not in INVOLVEMENTS
            )
        return pairs or None

    def has_picture(self) -> bool:
        return any(key[:4] == "APIC" for key in self.tags)

    def pictures(self) -> Iterator[EmbeddedPicture]:
        for frame in self.tags.getall("APIC"):
            yield int(frame.type), frame.data, frame.mime


_FREEFORM = "----:"  # MP4 freeform atoms ("----:com.apple.iTunes:<name>")
_MP4_PNG = 14  # mutagen.mp4.MP4Cover.FORMAT_PNG


class MP4Family(TagFamily):
    column = "mp4"
    __slots__ = ("_freeform", "_keys")

    def __init__(self, tags):
        self.tags = tags
        self._keys = tags.keys()  # see ID3Family
        self._freeform: dict[str, list] | None = None

    @staticmethod
    def spell(key: str) -> str:
        return key.lower() if key.startswith(_FREEFORM) else key

    def get(self, key: str) -> list | None:
        if key[:5] == _FREEFORM:
            freeform = self._freeform
            if freeform is None:
                tags = self.tags
                freeform = self._freeform = {k.lower(): tags[k] for k in self._keys if k[:5] == _FREEFORM}
            return freeform.get(key)
        if key not in self._keys:
            return None
        value = self.tags[key]
        if value is None or isinstance(value, list):
            return value
        return [value]  # cpil is a bare bool

    def present(self) -> set[str]:
        return {key.lower() if key[:5] == _FREEFORM else key for key in self._keys}

    def has_picture(self) -> bool:
        return bool(self.tags.get("covr"))

    def pictures(self) -> Iterator[EmbeddedPicture]:
        for cover in self.tags.get("covr") or ():
            mime = "image/png" if getattr(cover, "imageformat", None) == _MP4_PNG else "image/jpeg"
            yield FRONT_COVER, bytes(cover), mime


class PairsFamily(TagFamily):
    """Tags stored as a list of (name, value) pairs, a name as often as it has values: indexed once
    by name (``name_key``), each value as ``value_of`` reads it."""

    __slots__ = ("_values",)
    name_key: ClassVar[Callable[[str], str]]
    value_of: ClassVar[Callable[[object], object]]

    def __init__(self, tags):
        self.tags = tags
        values: dict[str, list] = {}
        name_key, value_of = self.name_key, self.value_of
        for name, value in tags:
            values.setdefault(name_key(name), []).append(value_of(value))
        self._values = values

    def get(self, key: str) -> list | None:
        return self._values.get(key)

    def present(self) -> Collection[str]:
        return self._values.keys()


class VorbisFamily(PairsFamily):
    """Vorbis comments (Ogg, FLAC): (name, value) pairs, names case-insensitive."""

    column = "vorbis_ape"
    __slots__ = ()
    name_key = staticmethod(str.lower)
    value_of = staticmethod(lambda value: value)

    @staticmethod
    def spell(key: str) -> str:
        return key.lower()

    def has_picture(self) -> bool:
        return "metadata_block_picture" in self._values or "coverart" in self._values

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
    """APEv2 (Monkey's Audio, WavPack, Musepack): items, names case-insensitive in mutagen."""

    column = "vorbis_ape"
    __slots__ = ()

    @staticmethod
    def spell(key: str) -> str:
        return key.lower()

    def get(self, key: str) -> list | None:
        value = self.tags.get(key)
        if value is None:
            return None
        if value.kind == _APE_TEXT:  # text: NUL-separated values
            return value.value.split("\0")
        return [value.value]

    def present(self) -> set[str]:
        return {key.lower() for key in self.tags}

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


class ASFFamily(PairsFamily):
    """ASF (Windows Media) attributes: (name, attribute) pairs, names exact."""

    column = "asf"
    __slots__ = ()
    name_key = staticmethod(lambda name: name)
    value_of = staticmethod(lambda attribute: getattr(attribute, "value", attribute))

    def has_picture(self) -> bool:
        return _ASF_PICTURE in self._values

    def pictures(self) -> Iterator[EmbeddedPicture]:
        for value in self._values.get(_ASF_PICTURE, ()):
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

    A file holds a few of the table's keys (20 of 70 in a file tagged by Picard): the reader starts
    from the keys the file has (``TagFamily.present``) and reads only the fields one of them
    names, the others are set to their defaults at once. A field read tries all its keys in order,
    so the first that converts still wins.
    """

    def __init__(self, fields: Iterable):
        fields = tuple(fields)
        self.defaults = tuple((field.name, field.type.default) for field in fields)
        self._scalar_defaults = {
            name: default for name, default in self.defaults if default.__class__ is not list
        }
        self._list_names = tuple(name for name, default in self.defaults if default.__class__ is list)
        self._plans = {family: self._plan(family, fields) for family in FAMILIES}

    @staticmethod
    def _plan(family: type[TagFamily], fields: tuple) -> tuple[tuple, dict[str, tuple[int, ...]]]:
        """Per field (name, ((spelled key, converter), ...)) for one family, and which fields
        (their indexes) each spelled key may fill."""
        plan, fields_of_key = [], {}
        for index, field in enumerate(fields):
            keys = []
            for spec in getattr(field, family.column):
                key, convert = spec if isinstance(spec, tuple) else (spec, field.type.convert)
                keys.append((family.spell(key), convert))
                fields_of_key.setdefault(family.spell(key), []).append(index)
            plan.append((field.name, tuple(keys)))
        return tuple(plan), {key: tuple(indexes) for key, indexes in fields_of_key.items()}

    def read(self, tags: TagFamily | None, into: dict[str, Any]) -> None:
        """Set every tag field of ``into`` (``tags`` None: the file has none, all at defaults)."""
        into.update(self._scalar_defaults)
        for name in self._list_names:
            into[name] = []
        if tags is None:
            return
        plan, fields_of_key = self._plans[type(tags)]
        present = tags.present()
        named: set[int] = set()
        for key in present:
            indexes = fields_of_key.get(key)
            if indexes is not None:
                named.update(indexes)
        get = tags.get
        for index in named:
            name, keys = plan[index]
            for key, convert in keys:
                raw = get(key) if key in present else None
                if raw:
                    value = convert(raw)
                    if value is not None:
                        into[name] = value
                        break


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
