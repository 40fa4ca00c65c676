"""``add_bad_files(root)``: the awkward cases as {path: kind}; the kind's prefix ("track:" or
"error:") is what the pipeline must make of it, ``BAD_FILE_KINDS`` explains each."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

from mutagen.flac import FLAC, Picture
from mutagen.id3 import (
    COMM,
    ID3,
    TALB,
    TIT2,
    TPE1,
)
from mutagen.oggvorbis import OggVorbis

from testkit.audio_fixtures.seeds import EXTENSIONS, cached_seed, cover_jpeg
from testkit.audio_fixtures.tagging import write_tags

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
