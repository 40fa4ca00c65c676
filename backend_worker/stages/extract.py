"""Extract stage: one record per audio file, read with mutagen's format classes.

Plain functions (no Celery). ``read_record`` raises ``ExtractError`` for anything wrong with a
file; ``extract_paths`` turns those into error entries and never raises for a bad file.

How a file is opened:

1. ``os.stat`` first (size, mtime_ns exactly as the scanner sees them; a regular file only, so a
   FIFO named ``x.mp3`` cannot block a worker). Stat-before-read means a file rewritten meanwhile
   is recorded with its *old* mtime, so the next scan sees a change and extracts it again.
2. The first 64 bytes are sniffed for magic numbers. A recognised magic picks the mutagen class
   (a FLAC named ``.mp3`` is read as FLAC); otherwise the extension picks it. Only when neither
   identifies the file (or the extension's class fails on an unrecognised header) does
   ``mutagen.File``'s scoring run over the remaining classes.
3. mutagen reads through ``_GuardedFile``, which caps its reads/seeks: a parser looping on a
   crafted file becomes an ExtractError instead of a worker stuck until the task time limit.
4. The record is the field table's (``fields.FIELDS``), in its order: the stat fields, the tags
   (read by ``tags.TagReader`` through the file's tag family), the stream fields as beets'
   mediafile reports them, whether a picture is embedded. Each row says how it is read.

A record (RECORD_KEYS, in that order) is JSON-serialisable: the path is the str as given (a
non-UTF-8 name holds surrogate escapes), mtime a float in seconds next to the exact mtime_ns, the
tags are str | None, int | None, float | None, a list of str, a bool, or a lowercase UUID string.

ExtractError reasons the pipeline may match on: "file vanished" (stat or open found nothing),
"empty file", "not a regular file", "permission denied", "not an audio file mutagen can read",
"truncated <format> stream", "corrupt <format> file: <mutagen's words>".
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat as stat_mod
import struct
from collections.abc import Iterable
from typing import Any

import mutagen
import mutagen._vorbis
from mutagen import MutagenError
from mutagen._util import DictProxy
from mutagen._vorbis import VComment
from mutagen.aac import AAC
from mutagen.ac3 import AC3
from mutagen.aiff import AIFF
from mutagen.apev2 import APEv2, APEv2File
from mutagen.asf import ASF, ASFTags
from mutagen.dsdiff import DSDIFF
from mutagen.dsf import DSF
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TXXX, Encoding, Frame, TextFrame
from mutagen.monkeysaudio import MonkeysAudio
from mutagen.mp3 import MP3 as _MutagenMP3
from mutagen.mp4 import MP4 as _MutagenMP4
from mutagen.mp4 import MP4Tags
from mutagen.musepack import Musepack
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggtheora import OggTheora
from mutagen.oggvorbis import OggVorbis
from mutagen.optimfrog import OptimFROG
from mutagen.tak import TAK
from mutagen.trueaudio import TrueAudio
from mutagen.wave import WAVE
from mutagen.wavpack import WavPack

from backend_worker.stages import fields, identity, tags

__all__ = ["RECORD_KEYS", "ExtractError", "embedded_cover", "extract_paths", "read_record"]

RECORD_KEYS: tuple[str, ...] = fields.RECORD_KEYS


class ExtractError(Exception):
    """A file we cannot turn into a record. ``str(e)`` is a short human reason.

    ``size`` / ``mtime_ns`` are set when the file could be stat'ed (else None).
    """

    def __init__(self, reason: str, *, size: int | None = None, mtime_ns: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.size = size
        self.mtime_ns = mtime_ns


# Exceptions mutagen's parsers raise on bad input (MutagenError, plus the bugs' usual suspects:
# struct/index/value errors on crafted files). Deliberately not bare Exception, so a Celery
# SoftTimeLimitExceeded raised while parsing still reaches the task.
_PARSE_ERRORS = (
    MutagenError,
    OSError,
    EOFError,
    ValueError,
    LookupError,
    TypeError,
    AttributeError,
    ArithmeticError,
    AssertionError,
    RuntimeError,
    MemoryError,
    struct.error,
)

# Some steps of mutagen's loading cost a large share of a parse and only matter to a program that
# writes tags back, or read byte by byte what is in memory already: each is replaced by one that
# reads the same tags (tests/unit/test_extract.py, "what the extract stage changes in mutagen's
# loading": each against mutagen's own).


class _LoadedMP4Tags(MP4Tags):
    """MP4 tags as read from a file. mutagen's MP4Tags renders every value it is given back into
    an atom, to refuse one it could not save; its own loading goes through the same door, so
    each value read was rendered once for nothing (~14% of an M4A file's parse). Nothing here
    writes tags: a value read is kept as read, in the dict mutagen's DictProxy keeps."""

    __setitem__ = DictProxy.__setitem__

    def setdefault(self, key, default=None):
        # mutagen adds each value read with setdefault, which DictMixin makes a lookup raising
        # KeyError for every new key (~5% of an M4A file's parse): the dict's own.
        return self._DictProxy__dict.setdefault(key, default)


class MP4(_MutagenMP4):
    """mutagen's MP4, loading its tags as _LoadedMP4Tags."""

    MP4Tags = _LoadedMP4Tags


# What mutagen's translation of an ID3 tag to v2.4 changes in a v2.4 tag: the frames that v2.3
# had (TYER, TDAT and TIME become TDRC, ...) and the chapters' own frames.
_FRAMES_TO_TRANSLATE = frozenset({"TYER", "TDAT", "TIME", "TORY", "IPLS", "RVAD", "EQUA", "TRDA", "TSIZ"})


class MP3(_MutagenMP3):
    """mutagen's MP3, translating its ID3 tag to v2.4 only when the tag has something to
    translate. mutagen translates every tag it loads, and the translation walks all the frames
    three times looking for pictures and chapters (~10% of an MP3 file's parse). Left out of a
    v2.4 tag's translation, which is then the same tag: the TCON genres' "(17)" forms, which
    tags.ID3Family reads itself, and the "PNG"/"JPG" picture types of v2.2 tags."""

    def load(self, filething, **kwargs):
        super().load(filething, translate=False, **kwargs)
        tags = self.tags
        if tags is None:
            return
        keys = tags.keys()
        if (
            tags.version < (2, 4, 0)
            or not _FRAMES_TO_TRANSLATE.isdisjoint(keys)
            or any(key[:4] in ("CHAP", "CTOC") for key in keys)
        ):
            tags.update_to_v24()


# mutagen builds each ID3 frame it reads twice: once with every field at its default, each
# default checked by its spec (Frame.__init__), then with the fields read from the file, set
# without checks. The first adds nothing (the second sets every field or drops the frame): a
# frame with nothing to undo first (no frame flags, no unsynchronisation) is made without it, and
# a text frame in Latin-1 or UTF-8 (ID3v2.4 as Picard writes it) is read without the specs'
# generic loop, as they read it (~35% of an ID3 tag's parse, a third of an MP3 file's).
_mutagen_frame_from_data = Frame.__dict__["_fromData"].__func__
_ID3_TEXT_ENCODINGS = {0: ("latin-1", Encoding.LATIN1), 3: ("utf-8", Encoding.UTF8)}
_TEXT_FRAME_SPEC = TextFrame._framespec
_TXXX_SPEC = TXXX._framespec


def _read_text_frame(frame, header, data: bytes, with_desc: bool) -> bool:
    """Fill a text frame (TXXX with its description) from ``data`` as mutagen's specs read it;
    False (nothing set) for what they would read otherwise (another encoding, text that does not
    decode, a frame mutagen drops): the specs read those."""
    encoding = _ID3_TEXT_ENCODINGS.get(data[0])
    rest = data[1:]
    if encoding is None or not rest:
        return False
    codec, id3_encoding = encoding
    v23 = header.version < header._V24  # ID3v2.3 and before: zero padding after a value is no value
    try:
        if with_desc:
            desc, nul, rest = rest.partition(b"\x00")
            desc = desc.decode(codec)
            if v23 and not rest.strip(b"\x00"):
                rest = b""
            if not rest:
                return False
        parts = rest.split(b"\x00")
        if v23:
            last = max((index for index, part in enumerate(parts) if part), default=0)
            parts = parts[: last + 1]
        elif not parts[-1]:  # the last value's terminator
            parts.pop()
        text = [part.decode(codec) for part in parts]
    except UnicodeDecodeError:
        return False
    frame._setattr("encoding", id3_encoding)
    if with_desc:
        frame._setattr("desc", desc)
    frame._setattr("text", text)
    return True


def _frame_from_data(cls, header, tflags, data):
    if tflags or header.f_unsynch:
        return _mutagen_frame_from_data(cls, header, tflags, data)
    frame = object.__new__(cls)
    spec = cls._framespec
    if not (
        (spec is _TEXT_FRAME_SPEC or spec is _TXXX_SPEC)
        and data
        and _read_text_frame(frame, header, data, spec is _TXXX_SPEC)
    ):
        frame._readData(header, data)
    return frame


Frame._fromData = classmethod(_frame_from_data)

# mutagen checks each Vorbis comment key it reads (Ogg Vorbis, Opus, FLAC) one character at a time
# in Python (~12% of such a file's parse): the same rule (printable ASCII up to "}", no "=", not
# empty) as one regular expression. mutagen calls it through its module, so it is replaced there.
_VORBIS_KEY = re.compile(r"[ -<>-}]+").fullmatch


def is_valid_vorbis_key(key: str) -> bool:
    if isinstance(key, bytes):
        raise TypeError("needs to be str not bytes")
    return _VORBIS_KEY(key) is not None


mutagen._vorbis.is_valid_key = is_valid_vorbis_key

_mutagen_vcomment_load = VComment.load
_UINT32_LE = struct.Struct("<I").unpack_from
_VALID_VORBIS_NAMES: dict[str, bool] = {}
_COMMENT_FIRST_READ = 4096  # a FLAC file's comment block is read from the file itself


def _parse_vorbis_comment(data: bytes, framing: bool) -> tuple[str, list, int] | None:
    """(vendor, comments, bytes used) of a well-formed comment block at the start of ``data``
    (which may go on past it); None for anything else, which mutagen's own loader then reads."""
    end = len(data)
    try:
        (vendor_length,) = _UINT32_LE(data, 0)
        pos = 4 + vendor_length
        vendor = data[4:pos].decode("utf-8", "replace")
        (count,) = _UINT32_LE(data, pos)
        pos += 4
        comments = []
        for index in range(count):
            (length,) = _UINT32_LE(data, pos)
            pos += 4 + length
            if pos > end:
                return None
            text = data[pos - length : pos].decode("utf-8", "replace")
            name, equals, value = text.partition("=")
            if not equals:
                name, value = f"unknown{index}", text
            elif not name.isascii():
                name = name.encode("ascii", "replace").decode("ascii")
            valid = _VALID_VORBIS_NAMES.get(name)
            if valid is None:
                valid = is_valid_vorbis_key(name)
                if len(_VALID_VORBIS_NAMES) < 4096:  # the names files use are few; crafted ones many
                    _VALID_VORBIS_NAMES[name] = valid
            if valid:
                comments.append((name, value))
    except struct.error:
        return None
    if framing:
        if pos >= end or not data[pos] & 0x01:
            return None
        pos += 1
    return vendor, comments, pos


def load_vorbis_comment(self, fileobj, errors="replace", framing=True):
    """mutagen's VComment.load, for the errors="replace" its file classes use, on the block's
    bytes at once: mutagen reads each comment's length and text with calls of their own and
    re-encodes every name to check it is ASCII (~30 us of a FLAC or Ogg file's parse, now ~10).
    A block that is not well formed is left to mutagen's loader, so its errors stay mutagen's;
    ``fileobj`` is left where mutagen leaves it (Ogg files measure their padding with it)."""
    if errors == "replace":
        start = fileobj.tell()
        if isinstance(fileobj, io.BytesIO):  # an Ogg packet, in memory
            data, complete = fileobj.read(), True
        else:  # FLAC: the file, behind a reader that raises on a short read (tryread does not)
            read = getattr(fileobj, "tryread", fileobj.read)
            data = read(_COMMENT_FIRST_READ)
            complete = len(data) < _COMMENT_FIRST_READ
        while (parsed := _parse_vorbis_comment(data, framing)) is None and not complete:
            more = read(len(data))  # a block longer than read so far: twice as much
            complete = len(more) < len(data)
            data += more
        if parsed is not None:
            self.vendor, comments, used = parsed
            self.extend(comments)
            fileobj.seek(start + used)
            return
        fileobj.seek(start)
    _mutagen_vcomment_load(self, fileobj, errors, framing)


VComment.load = load_vorbis_comment

_BY_EXTENSION: dict[str, type] = {
    ".mp3": MP3,
    ".flac": FLAC,
    ".ogg": OggVorbis,
    ".oga": OggVorbis,
    ".opus": OggOpus,
    ".m4a": MP4,
    ".mp4": MP4,
    ".alac": MP4,
    ".aac": AAC,
    ".wav": WAVE,
    ".aiff": AIFF,
    ".aif": AIFF,
    ".wma": ASF,
    ".ape": MonkeysAudio,
    ".wv": WavPack,
    ".mpc": Musepack,
    ".dsf": DSF,
}

# Format names as beets' mediafile reports them; others fall back to mutagen's class name.
_FORMAT_NAMES: dict[type, str] = {
    MP3: "MP3",
    FLAC: "FLAC",
    OggVorbis: "OGG",
    OggOpus: "Opus",
    AAC: "AAC",
    WAVE: "WAVE",
    AIFF: "AIFF",
    ASF: "Windows Media",
    MonkeysAudio: "APE",
    WavPack: "WavPack",
    Musepack: "Musepack",
    DSF: "DSD Stream File",
}

_ASF_GUID = b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c"


def _sniff(header: bytes) -> type | None:
    """The mutagen class a file's magic number names, or None (unknown, or an ID3v2 prefix)."""
    magic = header[:4]
    if magic == b"fLaC":
        return FLAC
    if magic == b"OggS":
        codec = header[28:36]
        if codec[:7] == b"\x01vorbis":
            return OggVorbis
        if codec == b"OpusHead":
            return OggOpus
        if codec[:5] == b"\x7fFLAC":
            return OggFLAC
        if codec == b"Speex   ":
            return OggSpeex
        return None
    if header[4:8] == b"ftyp":
        return MP4
    if magic == b"RIFF" and header[8:12] == b"WAVE":
        return WAVE
    if magic == b"FORM" and header[8:12] in (b"AIFF", b"AIFC"):
        return AIFF
    if header[:16] == _ASF_GUID:
        return ASF
    if magic == b"MAC ":
        return MonkeysAudio
    if magic == b"wvpk":
        return WavPack
    if magic == b"MPCK" or magic[:3] == b"MP+":
        return Musepack
    if magic == b"DSD ":
        return DSF
    if magic == b"ADIF":
        return AAC
    if len(header) > 1 and header[0] == 0xFF and header[1] & 0xE0 == 0xE0:
        return AAC if header[1] & 0x06 == 0 else MP3  # ADTS has layer 0; MPEG audio 1-3
    return None


def _sniff_past_id3(fileobj, header: bytes) -> type | None:
    """For an ID3v2-prefixed file: the class named by the magic right after the tag."""
    end = _id3_end(header)
    if not end:
        return None
    fileobj.seek(end)
    return _sniff(fileobj.read(64))


# The last-resort sniff considers what mutagen.File would, minus ID3FileType (a bare ID3 tag is
# not audio) and SMF (MIDI is not a recording).
_ALL_KINDS: list[type] = [
    MP3,
    TrueAudio,
    OggTheora,
    OggSpeex,
    OggVorbis,
    OggFLAC,
    FLAC,
    AIFF,
    APEv2File,
    MP4,
    WavPack,
    Musepack,
    MonkeysAudio,
    OptimFROG,
    ASF,
    OggOpus,
    AAC,
    AC3,
    TAK,
    DSF,
    DSDIFF,
    WAVE,
]

# The tag family that reads each kind of mutagen tag object (Ogg and FLAC comment blocks are
# VComments); the first match wins.
_FAMILY_OF: tuple[tuple[type, type[tags.TagFamily]], ...] = (
    (ID3, tags.ID3Family),
    (MP4Tags, tags.MP4Family),
    (APEv2, tags.APEFamily),
    (ASFTags, tags.ASFFamily),
    (VComment, tags.VorbisFamily),
)
_FAMILY_BY_TAG_CLASS: dict[type, type[tags.TagFamily] | None] = {}


def _tag_family(mutagen_tags) -> tags.TagFamily | None:
    """The file's tags seen through their family (None: no tags, or a kind no family reads)."""
    if mutagen_tags is None:
        return None
    tag_class = type(mutagen_tags)
    try:
        family = _FAMILY_BY_TAG_CLASS[tag_class]
    except KeyError:
        family = next((fam for base, fam in _FAMILY_OF if isinstance(mutagen_tags, base)), None)
        _FAMILY_BY_TAG_CLASS[tag_class] = family
    return family(mutagen_tags) if family is not None else None


_TRUNCATION_WORDS = (
    "truncated",
    "too short",
    "too small",
    "not enough data",
    "file said",
    "unable to read full data",
    "eof",
    "end of",
)


def _id3_end(header: bytes) -> int:
    """Offset where a leading ID3v2 tag ends (0 without one)."""
    if header[:3] != b"ID3" or len(header) < 10:
        return 0
    size = (header[6] & 0x7F) << 21 | (header[7] & 0x7F) << 14 | (header[8] & 0x7F) << 7 | header[9] & 0x7F
    return 10 + size + (10 if header[5] & 0x10 else 0)


def _describe(kind: type | None) -> str:
    name = (_FORMAT_NAMES.get(kind) or kind.__name__) if kind is not None else "audio"
    return name if name.endswith("File") else f"{name} file"


def _reason(exc: BaseException, kind: type, header: bytes, size: int) -> str:
    """A short human reason for a parse failure of a file whose format we believed was ``kind``."""
    if isinstance(exc, OSError) and not isinstance(exc, MutagenError) and exc.errno is not None:
        return f"read error: {exc.strerror or exc}"
    name = _FORMAT_NAMES.get(kind) or kind.__name__
    text = " ".join(str(exc).split()) or type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, EOFError | struct.error) or any(word in lowered for word in _TRUNCATION_WORDS):
        return f"truncated {name} stream"
    if kind is MP3 and 0 < size <= _id3_end(header) + 4:
        return "truncated MP3 stream"  # nothing (or no full frame header) after the ID3 tag
    if len(text) > 80:
        text = text[:77] + "..."
    return f"corrupt {_describe(kind)}: {text}"


def _stat(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ExtractError("file vanished") from None
    except PermissionError:
        raise ExtractError("permission denied") from None
    except NotADirectoryError:
        raise ExtractError("file vanished") from None
    except OSError as exc:
        raise ExtractError(f"cannot stat file: {exc.strerror or exc}") from None
    except ValueError:  # embedded NUL in the path
        raise ExtractError("invalid path") from None
    if not stat_mod.S_ISREG(st.st_mode):
        raise ExtractError("not a regular file", size=None, mtime_ns=st.st_mtime_ns)
    return st


class _Runaway(BaseException):
    """A parser exceeded its I/O budget. BaseException: mutagen's own ``except Exception`` must
    not swallow it and carry on looping."""


# Far above what any real file needs (measured: 20-160 reads/seeks per file; ADTS AAC, the most,
# ~800 for a long stream), and reached in well under a second by a parser going round in circles.
_IO_BUDGET = 100_000


class _GuardedFile:
    """The file as mutagen sees it: read/seek/tell, with a budget on the number of calls.

    mutagen has parsers that can loop forever on crafted input (a Musepack SV8 packet whose size
    is smaller than its own header seeks backwards, and round it goes): without this, a worker
    would sit on one file until the task's time limit and fail its whole chunk.

    The position is kept here and the file is moved there only when something is read: mutagen
    asks for the position ~100 times per MP4 file (a buffered file's tell() is an lseek each
    time), and seeks where it never reads (to the end for the size, then back), which made the
    buffered file call the kernel and drop its buffer (an M4A file: 18 system calls, now 11).
    The end is the size ``stat`` gave.
    """

    __slots__ = ("_file", "_file_position", "_left", "_position", "_size", "name")

    def __init__(self, fileobj, size: int, name: str):
        self._file = fileobj
        self._file_position = self._position = 0  # a file just opened
        self._size = size
        self._left = _IO_BUDGET
        self.name = name

    def read(self, size: int = -1) -> bytes:
        self._left -= 1
        if self._left < 0:
            raise _Runaway
        if self._position != self._file_position:
            self._file.seek(self._position)
        data = self._file.read(size)
        self._position = self._file_position = self._position + len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._left -= 1
        if self._left < 0:
            raise _Runaway
        if whence == 0:
            position = offset
        elif whence == 1:
            position = self._position + offset
        elif whence == 2:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if position < 0:
            raise OSError(errno.EINVAL, "Invalid argument")  # what the file itself raises
        self._position = position
        return position

    def tell(self) -> int:
        return self._position


def _open_mutagen(path: str, st: os.stat_result):
    """(mutagen file object, class used). Raises ExtractError."""
    size, mtime_ns = st.st_size, st.st_mtime_ns
    if size == 0:
        raise ExtractError("empty file", size=size, mtime_ns=mtime_ns)
    try:
        # The buffer size given: open() otherwise asks the kernel whether the file is a terminal.
        raw = open(path, "rb", buffering=io.DEFAULT_BUFFER_SIZE)  # noqa: SIM115 - closed in finally below
    except FileNotFoundError:
        raise ExtractError("file vanished", size=size, mtime_ns=mtime_ns) from None
    except PermissionError:
        raise ExtractError("permission denied", size=size, mtime_ns=mtime_ns) from None
    except OSError as exc:
        raise ExtractError(f"cannot open file: {exc.strerror or exc}", size=size, mtime_ns=mtime_ns) from None
    fileobj = _GuardedFile(raw, size, path)
    kind: type | None = None
    try:
        try:
            header = fileobj.read(64)
        except OSError as exc:
            raise ExtractError(f"read error: {exc.strerror or exc}", size=size, mtime_ns=mtime_ns) from None
        sniffed = _sniff(header)
        kind = sniffed or _BY_EXTENSION.get(os.path.splitext(path)[1].lower())
        error: BaseException | None = None
        if kind is not None:
            fileobj.seek(0)
            try:
                return kind(fileobj), kind
            except _PARSE_ERRORS as exc:
                if sniffed is not None:
                    # The magic number is sure of the format: report its error, don't guess on.
                    reason = _reason(exc, kind, header, size)
                    raise ExtractError(reason, size=size, mtime_ns=mtime_ns) from None
                error = exc
        # Unknown magic and the extension's class failed (or there is none): an ID3v2 prefix
        # before another format, else mutagen's own scoring over the other classes.
        found = None
        tried = kind
        try:
            kind = _sniff_past_id3(fileobj, header)
            if kind is not None and kind is not tried:
                fileobj.seek(0)
                found = kind(fileobj)
            else:
                kind = None
                fileobj.seek(0)
                found = mutagen.File(fileobj, options=[k for k in _ALL_KINDS if k is not tried])
        except _PARSE_ERRORS:
            found = None
        if found is not None:
            return found, type(found)
        if error is not None and tried is MP3:
            reason = _reason(error, tried, header, size)
            if reason.startswith("truncated"):
                raise ExtractError(reason, size=size, mtime_ns=mtime_ns)
        raise ExtractError("not an audio file mutagen can read", size=size, mtime_ns=mtime_ns)
    except _Runaway:
        reason = f"corrupt {_describe(kind)} (parser did not terminate)"
        raise ExtractError(reason, size=size, mtime_ns=mtime_ns) from None
    finally:
        raw.close()


class AudioFile:
    """One opened file as the field table's stat, stream and picture rows read it."""

    __slots__ = ("path", "stat", "mutagen", "info", "kind", "tags", "audio_key")

    def __init__(self, path: str, st: os.stat_result, mfile, kind: type, audio_key: str):
        self.audio_key = audio_key
        self.path = path
        self.stat = st
        self.mutagen = mfile
        self.info = mfile.info
        self.kind = kind
        self.tags = _tag_family(mfile.tags)

    def format_name(self) -> str:
        """The format as beets' mediafile names it (else mutagen's class name)."""
        if self.kind is MP4:
            codec = getattr(self.info, "codec", "") or ""
            return "ALAC" if codec.startswith("alac") else "AAC"
        return _FORMAT_NAMES.get(self.kind) or self.kind.__name__

    def has_picture(self) -> bool:
        return tags.has_picture(self.tags, self.mutagen)


_TAG_READER = tags.TagReader(fields.TAG_FIELDS)


def read_record(path: str, audio_key: str | None = None) -> dict[str, Any]:
    """One record (see RECORD_KEYS) for an audio file; ExtractError for anything wrong with it.
    `audio_key`: the file's key when the caller computed it already (identity.audio_key)."""
    if not isinstance(path, str):
        path = os.fsdecode(path)
    st = _stat(path)
    mfile, kind = _open_mutagen(path, st)
    if audio_key is None:
        try:
            audio_key = identity.audio_key(path)
        except OSError as exc:
            raise ExtractError(
                f"read error: {exc.strerror or exc}", size=st.st_size, mtime_ns=st.st_mtime_ns
            ) from None
    try:
        audio = AudioFile(path, st, mfile, kind, audio_key)
        record = dict.fromkeys(RECORD_KEYS)  # the table's order; filled below
        _TAG_READER.read(audio.tags, record)
        for name, read in fields.FILE_READERS:
            record[name] = read(audio)
        return record
    except _PARSE_ERRORS as exc:  # a tag shape we did not foresee: report, never crash
        raise ExtractError(
            f"unreadable tags: {type(exc).__name__}", size=st.st_size, mtime_ns=st.st_mtime_ns
        ) from None


def extract_paths(
    paths: Iterable[str], audio_keys: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records, errors) for many paths; errors are {"path", "error", "size", "mtime_ns"}.
    `audio_keys`: path -> audio key for the files whose key is known already."""
    records: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    known_key = (audio_keys or {}).get
    for path in paths:
        try:
            records.append(read_record(path, known_key(path)))
        except ExtractError as exc:
            errors.append(
                {
                    "path": path if isinstance(path, str) else os.fsdecode(path),
                    "error": exc.reason,
                    "size": exc.size,
                    "mtime_ns": exc.mtime_ns,
                }
            )
        except (TypeError, ValueError):  # not a path at all (None, a number, ...)
            errors.append({"path": repr(path), "error": "invalid path", "size": None, "mtime_ns": None})
    return records, errors


def embedded_cover(path: str) -> tuple[bytes, str] | None:
    """(image bytes, mime type) of the front cover (or first picture); None if none/unreadable."""
    try:
        if not isinstance(path, str):
            path = os.fsdecode(path)
        st = _stat(path)
        mfile, _kind = _open_mutagen(path, st)
        return tags.front_cover(_tag_family(mfile.tags), mfile)
    except ExtractError:
        return None
    except _PARSE_ERRORS:
        return None
