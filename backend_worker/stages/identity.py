"""A file's audio key: a hash of its audio data only, so that a track keeps its id when retagged.

Picard and other taggers rewrite tags and then rename or move the file; the track must still be
recognised. ``audio_key(path)`` hashes what lies between the tags: the audio region that
``audio_region`` finds by format (ID3v2 skipped at the start of every file; ID3v1, Lyrics3v2 and
APEv2 cut off the end; FLAC frames after the metadata blocks; the MP4 ``mdat`` atom; the Ogg pages
after the header packets; the ASF Data Object; the RIFF ``data`` / AIFF ``SSND`` / DSF ``data``
chunk). To stay cheap (it runs once per new file, next to mutagen's parse) it does not read the
whole region: it hashes the region's length and ``WINDOW`` bytes at its start, 1/3, 2/3 and end
(the whole region when it is shorter than that).

What keeps the key:
- a copy, a move, a rename (the key knows nothing of the path, the inode or the times);
- any tag edit, in place or a full rewrite by mutagen with a bigger tag: ID3v2 growing at the
  start, FLAC metadata blocks growing, an MP4 whose ``moov`` grows and moves ``mdat`` (its content
  is the same, only the chunk offsets in ``moov`` change), Ogg comment pages growing (mutagen
  renumbers every following page: of an Ogg page header only the granule position is hashed,
  never the sequence number or CRC, and the pages stay where they were relative to the first audio
  page), an ASF Header Object growing, RIFF/AIFF/DSF tag chunks, APEv2/ID3v1 tags behind a stream;
- a re-mux that moves the audio data as one block (``-movflags +faststart``, qt-faststart).

What gives a new key:
- a re-encode, a trim, a change of container, a re-mux that rewrites the audio bytes (an MP4
  re-interleaved or fragmented, Ogg audio re-paginated by a tool that re-packs the pages);
- an edit of the audio data itself, even a lossless one: ``mp3gain``/``aacgain`` rewrite the
  global gain of every frame (the APEv2 tag they add is ignored, the frames are not), a "fix the
  VBR header" pass rewrites the MP3's Xing/LAME frame; tools that only write ReplayGain tags
  (``metaflac --add-replay-gain``, ``vorbisgain``, ``loudgain``) keep it;
- a tag edit in a format not recognised here or in a malformed file (truncated headers, sizes
  pointing past the end): those are keyed over the whole file, so an identical copy is still
  recognised, a retag is not. The same goes for an Ogg stream whose codec is not Vorbis, Opus,
  FLAC or Speex (or that starts with a Skeleton stream), and for the rare tags this module does not
  cut off the end of a stream (Lyrics3 v1).

What the sampling cannot see: two files whose audio regions have the same length and the same
bytes in the four windows get the same key even if they differ elsewhere (the same PCM recording
with one sample edited in its middle, say). Two encodes of different audio differ in every window.
"""

from __future__ import annotations

import errno
import os
import struct
from hashlib import blake2b
from stat import S_ISDIR, S_ISREG

KEY_VERSION = 1  # bump when the key's recipe changes

# Bytes hashed at each of the 4 sampled places. blake2b costs ~1.2 µs per KiB, the rest (open, 4-5
# preads, parsing) ~7 µs: 1 KiB windows make ~12 µs a file (bench/identity_cost.py), 4 KiB ~27 µs.
WINDOW = 1024
_WINDOWS = 4
_HEAD = 16384  # the first read: every usual header (without an embedded picture) fits in it
_TAIL = 256  # read with the last window: ID3v1 and APEv2/Lyrics3 footers fit in it
_AHEAD = 4096  # read this much more when a header walk leaves the first read (after a picture)
_OGG_CHUNK = 65536  # Ogg header pages are walked one by one: read them in big blocks
_OGG_PAGE = struct.Struct("<4s10xI8xB")  # capture pattern, serial number, number of lacing values
_MAX_STEPS = 10_000  # bound on every walk over atoms, blocks, chunks or pages

_ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_ASF_DATA = bytes.fromhex("3626b2758e66cf11a6d900aa0062ce6c")
# Streams whose tags are ID3v2 in front and ID3v1/APEv2/Lyrics3 behind: Monkey's Audio, WavPack,
# Musepack SV8 and SV7, TTA, OptimFROG, TAK.
_TAGGED_STREAMS = (b"MAC ", b"wvpk", b"MPCK", b"MP+", b"TTA1", b"OFR ", b"tBaK")
_MP4_FIRST_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")

__all__ = ["KEY_VERSION", "WINDOW", "audio_key", "audio_region"]


class _Malformed(Exception):
    """The file does not have the structure its magic promised: keyed as a whole."""


class _Source:
    """Reads at offsets (``os.pread`` on ``fd``, else ``read(n, offset)``), serving the first
    ``_HEAD`` bytes, the tail once read, and the last other block read from memory."""

    __slots__ = ("fd", "read", "size", "head", "tail", "tail_at", "extra", "extra_at")

    def __init__(self, fd: int | None, read, size: int):
        self.fd = fd
        self.read = read
        self.size = size
        self.head = self.pread(min(size, _HEAD), 0) if size else b""
        self.tail, self.tail_at = b"", size
        self.extra, self.extra_at = b"", 0

    def pread(self, n: int, offset: int) -> bytes:
        return os.pread(self.fd, n, offset) if self.fd is not None else self.read(n, offset)

    def read_tail(self, n: int) -> None:
        """Keep the last ``n`` bytes of the file in memory."""
        if self.size - n < self.tail_at:
            self.tail_at = max(0, self.size - n)
            self.tail = self.pread(self.size - self.tail_at, self.tail_at)

    def at(self, offset: int, n: int, ahead: int = 0) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer at the end of the file). On a miss, reads
        ``n + ahead`` bytes and keeps them."""
        end = offset + n
        if end <= len(self.head):
            return self.head[offset:end]
        tail_at = self.tail_at
        if offset >= tail_at:
            return self.tail[offset - tail_at : end - tail_at]
        extra_at = self.extra_at
        if extra_at <= offset and end <= extra_at + len(self.extra):
            return self.extra[offset - extra_at : end - extra_at]
        fd = self.fd
        data = os.pread(fd, n + ahead, offset) if fd is not None else self.read(n + ahead, offset)
        self.extra, self.extra_at = data, offset
        return data[:n] if ahead else data


def audio_key(path: str) -> str:
    """The audio key of a file: a 128-bit blake2b digest written as a UUID (the form of the
    tracks.audio_key column, 8-4-4-4-12 lowercase hex digits), computed from the
    file's audio region only. Raises OSError (FileNotFoundError, PermissionError...) when the file
    cannot be read. Never raises for a malformed/unknown file: falls back to a key over the whole file
    (so an identical copy is still recognised, a retag of such a format is not)."""
    # O_NONBLOCK: a named pipe must not block the open; it is refused below.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            code = errno.EISDIR if S_ISDIR(st.st_mode) else errno.EINVAL  # IsADirectoryError, OSError
            raise OSError(code, f"{os.strerror(code)} (not a regular file)", path)
        source = _Source(fd, None, st.st_size)
        start, end, how = _region(source)
        return _digest(source, start, end, how == "ogg")
    finally:
        os.close(fd)


def audio_region(f, size: int) -> tuple[int, int, str]:
    """(start, end, how) of the audio data in an open binary file of `size` bytes; `how` names the
    rule used ("id3", "flac", "mp4", "ogg", "asf", "riff", "whole", ...)."""
    # Rules: "id3" (a stream with tags at both ends: MP3, ADTS AAC, APE, WavPack, Musepack, TTA...),
    # "flac", "mp4", "ogg", "asf", "riff" (WAVE), "aiff", "dsf", "whole" (anything else).
    # A file descriptor, a file object with one (read with pread: its position is left alone), or
    # any seekable binary file object such as io.BytesIO.
    fd = f if isinstance(f, int) else None
    if fd is None:
        try:
            fd = f.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None

    def read(n: int, offset: int) -> bytes:
        f.seek(offset)
        return f.read(n)

    return _region(_Source(fd, read, size))


# --------------------------------------------------------------------------------------------
# Hashing


def _digest(source: _Source, start: int, end: int, ogg: bool) -> str:
    length = end - start
    # Not the rule's name: the key is of the bytes, whichever rule found them.
    h = blake2b(b"%d:%d:" % (KEY_VERSION, length), digest_size=16)
    window = WINDOW
    if length <= _WINDOWS * window:
        places: tuple[int, ...] = (start,)
        n = length
    else:
        # start, 1/3, 2/3, end: 4 windows that never overlap (length > 4 * WINDOW)
        step = (length - window) // (_WINDOWS - 1)
        places = (start, start + step, start + 2 * step, end - window)
        n = window
    if ogg:
        windows = []
        for offset in places:
            before = min(26, offset - start)  # a page header starting there may reach into the window
            raw = source.at(offset - before, n + before)
            if len(raw) != n + before:
                raise OSError("the file shrank while being read")
            windows.append(_ogg_window(raw, before))
    else:
        windows = [source.at(offset, n) for offset in places]
        if len(windows[-1]) != n:  # the last window ends where the region does
            raise OSError("the file shrank while being read")
    h.update(b"".join(windows))
    d = h.hexdigest()
    return f"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:]}"


def _ogg_window(data: bytes, skip: int) -> bytes:
    """``data[skip:]`` without the parts of Ogg page headers that a retag rewrites.

    mutagen renumbers every page after the comment pages (new sequence number and CRC). Of each
    page header (at every "OggS" found) only the capture pattern and the granule position are kept;
    version, flags, serial, sequence, CRC and lacing values are left out, the body is kept."""
    i = data.find(b"OggS")
    if i < 0:
        return data[skip:]
    size = len(data)
    pieces = []
    kept = skip  # data[:kept] is taken or left out already
    while i >= 0:
        # left out: version and flags (i + 4 .. i + 6), serial to lacing values (i + 14 .. end)
        end = i + 27 + (data[i + 26] if i + 26 < size else 0)
        if i + 4 > kept:
            pieces.append(data[kept : i + 4])
        if i + 14 > kept:
            pieces.append(data[max(kept, i + 6) : i + 14])
        kept = max(kept, end)
        i = data.find(b"OggS", i + 4)
    pieces.append(data[kept:])
    return b"".join(pieces)


# --------------------------------------------------------------------------------------------
# Regions


def _region(source: _Source) -> tuple[int, int, str]:
    size = source.size
    try:
        start, end, how = _find_region(source)
        if 0 <= start < end <= size:
            return start, end, how
    except (_Malformed, IndexError, ValueError, struct.error):
        pass
    return 0, size, "whole"


def _find_region(source: _Source) -> tuple[int, int, str]:
    size = source.size
    pos = _skip_id3v2(source)
    magic = source.at(pos, 16, _AHEAD)
    if magic[:4] == b"fLaC":
        return _flac(source, pos)
    if magic[4:8] in _MP4_FIRST_ATOMS:
        return _mp4(source, pos)
    if magic[:4] == b"OggS":
        return _ogg(source, pos)
    if magic[:16] == _ASF_HEADER:
        return _asf(source, pos)
    if magic[:4] in (b"RIFF", b"RF64", b"BW64") and magic[8:12] == b"WAVE":
        return _iff(source, pos, "little", b"data", "riff")
    if magic[:4] == b"FORM" and magic[8:12] in (b"AIFF", b"AIFC"):
        return _iff(source, pos, "big", b"SSND", "aiff")
    if magic[:4] == b"DSD ":
        return _dsf(source, pos)
    mpeg_sync = len(magic) >= 2 and magic[0] == 0xFF and magic[1] & 0xE0 == 0xE0  # MP3, ADTS AAC
    if pos or mpeg_sync or magic.startswith(_TAGGED_STREAMS):
        # A stream with tags at both ends. Zeros between an ID3v2 tag and the stream are padding
        # some taggers leave outside the tag's size: a retag may absorb them.
        if source.at(pos, 1) == b"\0":
            probe = source.at(pos, 4096)
            zeros = len(probe) - len(probe.lstrip(b"\0"))
            if zeros < len(probe):
                pos += zeros
        return pos, _cut_tail_tags(source, pos, size), "id3"
    raise _Malformed


def _syncsafe(b: bytes) -> int:
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def _is_id3v2(h: bytes) -> bool:
    """An ID3v2 header (or footer, "3DI"): version bytes below 0xFF, a syncsafe size."""
    return h[3] != 0xFF and h[4] != 0xFF and not (h[6] | h[7] | h[8] | h[9]) & 0x80


def _skip_id3v2(source: _Source) -> int:
    """The offset after the ID3v2 tags at the start of the file (0 if none)."""
    if not source.head.startswith(b"ID3"):
        return 0
    pos = 0
    for _ in range(16):  # some files carry two or three tags one after the other
        h = source.at(pos, 10, _AHEAD)  # after a big tag: read on, the stream's start is next
        if len(h) < 10 or h[:3] != b"ID3" or not _is_id3v2(h):
            break
        pos += 10 + _syncsafe(h[6:10]) + (10 if h[5] & 0x10 else 0)
        if pos > source.size:
            raise _Malformed
    return pos


def _cut_tail_tags(source: _Source, start: int, end: int) -> int:
    """``end`` without the ID3v1, APEv2, Lyrics3v2 and appended ID3v2 tags at its end."""
    if end == source.size:
        source.read_tail(_TAIL + WINDOW)  # the footers and, when the tags behind are small, the last window
    for _ in range(16):
        room = end - start
        tail = source.at(end - min(room, 128), min(room, 128))  # the last bytes, right-aligned
        if room >= 128 and tail.startswith(b"TAG"):
            end -= 128
            if room >= 128 + 227 and source.at(end - 227, 4) == b"TAG+":
                end -= 227
            continue
        if room >= 32 and tail[-32:-24] == b"APETAGEX":
            tag_size = int.from_bytes(tail[-20:-16], "little")
            flags = int.from_bytes(tail[-12:-8], "little")
            total = tag_size + (32 if flags & 0x80000000 else 0)  # the footer counts, a header not
            if tag_size < 32 or total > room:
                raise _Malformed
            end -= total
            continue
        if room >= 15 and tail[-9:] == b"LYRICS200" and tail[-15:-9].isdigit():
            total = int(tail[-15:-9]) + 15
            if total > room or source.at(end - total, 11) != b"LYRICSBEGIN":
                raise _Malformed
            end -= total
            continue
        if room >= 10 and tail[-10:-7] == b"3DI" and _is_id3v2(tail[-10:]):
            total = _syncsafe(tail[-4:]) + 20
            if total > room:
                raise _Malformed
            end -= total
            continue
        break
    return end


def _flac(source: _Source, pos: int) -> tuple[int, int, str]:
    """Frames after "fLaC" and its metadata blocks (the last one flagged 0x80)."""
    pos += 4
    head = source.head
    for _ in range(_MAX_STEPS):
        h = head[pos : pos + 4] if pos + 4 <= len(head) else source.at(pos, 4, _AHEAD)
        if len(h) < 4:
            raise _Malformed
        pos += 4 + int.from_bytes(h[1:4], "big")
        if h[0] & 0x80:
            break
    else:
        raise _Malformed
    if pos >= source.size:
        raise _Malformed
    return pos, _cut_tail_tags(source, pos, source.size), "flac"


def _mp4(source: _Source, pos: int) -> tuple[int, int, str]:
    """The content of the largest top-level ``mdat`` atom."""
    size = source.size
    best = None
    for _ in range(_MAX_STEPS):
        if pos + 8 > size:
            break  # the end, or a few stray bytes after the last atom
        h = source.at(pos, 16, _AHEAD)
        n = int.from_bytes(h[:4], "big")
        header = 8
        if n == 1:  # 64-bit size
            if len(h) < 16:
                raise _Malformed
            n, header = int.from_bytes(h[8:16], "big"), 16
        elif n == 0:  # to the end of the file
            n = size - pos
        if n < header or pos + n > size:
            if h[4:8] == b"mdat":
                raise _Malformed  # a truncated file
            break  # not an atom: something appended after the last one (an ID3v1 tag...)
        if h[4:8] == b"mdat" and (best is None or n - header > best[1] - best[0]):
            best = (pos + header, pos + n)
        pos += n
    else:
        raise _Malformed
    if best is None:
        raise _Malformed
    return best[0], best[1], "mp4"


def _ogg_header_packets(first: bytes) -> int:
    """How many header packets the codec of the stream's first packet has (0: unknown)."""
    if first.startswith(b"\x01vorbis"):
        return 3  # identification, comment, setup
    if first.startswith(b"OpusHead"):
        return 2  # OpusHead, OpusTags
    if first.startswith(b"\x7fFLAC") and len(first) >= 9:
        count = int.from_bytes(first[7:9], "big")  # metadata blocks after STREAMINFO (0: unknown)
        return 1 + count if count else 0
    if first.startswith(b"Speex   ") and len(first) >= 80:
        return 2 + int.from_bytes(first[76:80], "little")  # header, comment, extra headers
    return 0


def _ogg(source: _Source, pos: int) -> tuple[int, int, str]:
    """From the first page after the header packets of the first stream to the end of the file."""
    size = source.size
    buf = source.head
    base, available = 0, len(buf)
    unpack = _OGG_PAGE.unpack_from
    serial = None
    wanted = done = 0
    for _ in range(_MAX_STEPS):
        i = pos - base
        if i + 27 + 255 > available and base + available < size:  # a header may cross the buffer's end
            buf = source.pread(_OGG_CHUNK, pos)
            base, available, i = pos, len(buf), 0
        if i + 27 > available:
            raise _Malformed
        capture, page_serial, nsegs = unpack(buf, i)
        body = i + 27 + nsegs
        if capture != b"OggS" or body > available:
            raise _Malformed
        if serial is None:
            serial = page_serial
            wanted = _ogg_header_packets(source.at(base + body, 80))
            if not wanted:
                raise _Malformed
        full = buf.count(255, i + 27, body)  # a lacing value below 255 ends a packet
        pos = base + body + (255 * nsegs if full == nsegs else sum(buf[i + 27 : body]))
        if page_serial == serial:
            done += nsegs - full
            if done >= wanted:
                if pos >= size:
                    raise _Malformed  # no audio page
                return pos, size, "ogg"  # audio starts on a fresh page
    raise _Malformed


def _asf(source: _Source, pos: int) -> tuple[int, int, str]:
    """The Data Object after the Header Object (which holds the tags)."""
    h = source.at(pos, 24)
    data = pos + int.from_bytes(h[16:24], "little")
    d = source.at(data, 24, _AHEAD)
    if len(d) < 24 or d[:16] != _ASF_DATA:
        raise _Malformed
    n = int.from_bytes(d[16:24], "little")
    if n < 24 or data + n > source.size:
        raise _Malformed
    return data + 24, data + n, "asf"


def _iff(source: _Source, pos: int, order: str, wanted: bytes, how: str) -> tuple[int, int, str]:
    """The content of the ``wanted`` chunk of a RIFF/RF64 WAVE or AIFF/AIFC file."""
    size = source.size
    big64 = None  # RF64: the data size is in the ds64 chunk
    pos += 12
    for _ in range(_MAX_STEPS):
        h = source.at(pos, 8, _AHEAD)
        if len(h) < 8:
            raise _Malformed
        n = int.from_bytes(h[4:8], order)
        if h[:4] == b"ds64":
            big64 = int.from_bytes(source.at(pos + 16, 8), "little")
        if h[:4] == wanted:
            if n == 0xFFFFFFFF and big64 is not None:
                n = big64
            if pos + 8 + n > size:
                raise _Malformed
            return pos + 8, pos + 8 + n, how
        pos += 8 + n + (n & 1)  # chunks are padded to an even size
    raise _Malformed


def _dsf(source: _Source, pos: int) -> tuple[int, int, str]:
    """The content of the DSF ``data`` chunk (the ID3v2 tag sits after it, at the metadata pointer)."""
    size = source.size
    pos += int.from_bytes(source.at(pos + 4, 8), "little")  # the DSD chunk's size
    for _ in range(_MAX_STEPS):
        h = source.at(pos, 12, _AHEAD)
        if len(h) < 12:
            raise _Malformed
        n = int.from_bytes(h[4:12], "little")  # counts its 12-byte header
        if n < 12 or pos + n > size:
            raise _Malformed
        if h[:4] == b"data":
            return pos + 12, pos + n, "dsf"
        pos += n
    raise _Malformed
