"""The synthetic library: built once with testkit/audio_fixtures.build_library and cached.

``/var/cache/soniquebay/bench-library-N`` holds N real encoded files (mp3, flac, ogg, opus, m4a,
6 s each) as ``<Artist>/<Album>/<NN - Title>.<ext>`` with a cover.jpg per album, embedded art in
one album of three, MusicBrainz ids, ReplayGain and genres. Each run works on a hard-link copy
(``working_copy``), so the small-change rescan can touch, add and delete files without spoiling
the cache; touched files are rewritten (a new inode), never modified through a shared link.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from testkit import audio_fixtures

CACHE_ROOT = Path(os.environ.get("SONIQUEBAY_BENCH_CACHE", "/var/cache/soniquebay"))
LIBRARY_VERSION = 3  # bump when the layout or the tags change: cached libraries are rebuilt (3: credits)
FORMATS = ("mp3", "flac", "ogg", "opus", "m4a")
ALBUMS_PER_ARTIST = 10
TRACKS_PER_ALBUM = 10
SECONDS = 6.0
STAMP = ".bench-library.json"


def _recipe(files: int, seed: int) -> dict:
    return {
        "version": LIBRARY_VERSION,
        "fixtures": audio_fixtures.RECIPE_VERSION,
        "files": files,
        "seed": seed,
        "formats": list(FORMATS),
        "seconds": SECONDS,
    }


def _build(target: Path, files: int, seed: int) -> Path:
    recipe = _recipe(files, seed)
    stamp = target / STAMP
    if stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return target
    per_artist = ALBUMS_PER_ARTIST * TRACKS_PER_ALBUM
    if files % per_artist:
        raise SystemExit(f"--files must be a multiple of {per_artist} (artists x 10 albums x 10 tracks)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    started = time.monotonic()
    print(f"building the {files}-file library in {target} (once; cached) ...", flush=True)
    audio_fixtures.build_library(
        partial,
        artists=files // per_artist,
        albums_per_artist=ALBUMS_PER_ARTIST,
        tracks_per_album=TRACKS_PER_ALBUM,
        formats=FORMATS,
        covers=True,
        seed=seed,
        seconds=SECONDS,
    )
    subprocess.run(["chmod", "-R", "a+rX", str(partial)], check=True)
    (partial / STAMP).write_text(json.dumps(recipe))
    partial.rename(target)
    print(f"  built in {time.monotonic() - started:.0f} s", flush=True)
    return target


def cached_library(files: int) -> Path:
    """The cached library of ``files`` files (built on first use)."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    return _build(CACHE_ROOT / f"bench-library-{files}", files, seed=0)


def cached_additions(files: int) -> Path:
    """``files`` more files (a different seed: other albums) for the small-change rescan."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    return _build(CACHE_ROOT / f"bench-additions-{files}", files, seed=1)


def audio_files(root: Path) -> list[str]:
    """Every audio file under root, sorted (the same list every baseline reads)."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if name.rsplit(".", 1)[-1] in FORMATS:
                found.append(os.path.join(folder, name))
    return found


def working_copy(source: Path, dest: Path) -> Path:
    """A hard-link copy of the cached library (fast, no extra space)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(source), str(dest)], check=True)
    (dest / STAMP).unlink(missing_ok=True)
    dest.chmod(0o755)
    return dest


def copies(source: Path, dest: Path, count: int) -> Path:
    """`count` hard-linked copies of the library side by side under dest (copy-1, copy-2, ...):
    every path is new to the database, the page cache holds the data once."""
    for i in range(1, count + 1):
        working_copy(source, dest / f"copy-{i}")
    return dest


def warm(root: Path) -> None:
    """Read every file (audio and covers) once: every measurement starts from a warm page cache."""
    for folder, _dirs, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as fh:
                while fh.read(1 << 20):
                    pass


def small_change(root: Path, additions: Path, fraction: float = 0.01) -> dict[str, int]:
    """Touch (rewrite with a new mtime), delete and add ``fraction`` of the files each.

    Touched and deleted files are spread evenly over the library; the additions are whole new
    albums (hard links from the cached additions) under ``root/Added``.
    """
    files = audio_files(root)
    count = max(1, int(len(files) * fraction))
    step = len(files) // count
    touched = files[0::step][:count]
    deleted = files[step // 2 :: step][:count]
    for path in touched:
        tmp = path + ".tmp"
        shutil.copyfile(path, tmp)  # a new inode: the cached file keeps its mtime
        os.replace(tmp, path)
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    for path in deleted:
        os.unlink(path)
    added = root / "Added"
    subprocess.run(["cp", "-al", str(additions), str(added)], check=True)
    (added / STAMP).unlink(missing_ok=True)
    new = len(audio_files(added))
    return {"touched": len(touched), "deleted": len(deleted), "added": new}
