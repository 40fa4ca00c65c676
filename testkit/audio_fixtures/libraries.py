"""``build_library(root, ...)``: ``root/<Artist>/<Album>/<NN - Title>.<ext>`` with realistic tags;
returns the expected record subset per file (EXPECTED_KEYS). ~2,000 files in 3-5 s."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

from backend_worker.stages import fields, identity
from backend_worker.stages import tags as tag_reading
from testkit.audio_fixtures.seeds import (
    EXTENSIONS,
    FORMAT_NAMES,
    FORMATS,
    UNTAGGABLE,
    cached_seed,
    cover_jpeg,
)
from testkit.audio_fixtures.tagging import write_tags

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
