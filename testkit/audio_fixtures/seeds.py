"""Short untagged audio files, one per format (ffmpeg sine; mpcenc for Musepack; Monkey's Audio
and DSF written by hand), cached in ``cache_dir()`` ($SONIQUEBAY_FIXTURE_CACHE, else
/var/cache/soniquebay/fixtures) so repeated runs do not re-encode; and a cover image."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import mutagen

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
