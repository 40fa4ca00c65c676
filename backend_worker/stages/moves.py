"""Who a file at a new path was: the track whose file it is, moved, renamed, copied elsewhere and
deleted, or retagged and moved (docs/architecture.md, "A track's identity").

Plain functions (no Celery, no database): the walk and the extract units give them the files at
new paths and the tracks that share their evidence, and apply the moves they return.

Only a track whose file is gone can lend its id: a file whose track's file is still at its path is
a duplicate (a copy, a hard link), never a move, so two present files never share a row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

from backend_worker.stages import identity
from backend_worker.stages.fields import signed64


class Candidate(NamedTuple):
    """A track that shares a new file's evidence (its file system identity, or its audio key)."""

    id: int
    path: str
    dev: int | None
    ino: int | None
    size: int
    mtime_ns: int
    audio_key: str | None
    missing: bool  # marked missing by an earlier session


class Move(NamedTuple):
    """A track taking a new path. `same_file`: the file is the one the track was read from (same
    size and modification time), so it need not be read again."""

    track: Candidate
    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    same_file: bool


def is_gone(track: Candidate) -> bool:
    """Whether a track's file is no longer where the library has it: marked missing, or its path
    names nothing now. A path that names a file (even another one, or one that cannot be read)
    keeps its track: its own folder's walk decides what became of it."""
    if track.missing:
        return True
    try:
        os.lstat(track.path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except (OSError, ValueError):  # cannot tell (no permission, a NUL in the path): kept
        pass
    return False


def _preference(path: str, size: int, mtime_ns: int) -> Callable[[Candidate], tuple]:
    """Several gone tracks can share a file's evidence (two copies of an album, both deleted): the
    one with the same file name is taken first, then the same file (size and time), then a present
    one before a missing one, then the oldest track."""
    name = os.path.basename(path)

    def rank(track: Candidate) -> tuple:
        return (
            os.path.basename(track.path) != name,
            (track.size, track.mtime_ns) != (size, mtime_ns),
            track.missing,
            track.id,
        )

    return rank


def match(
    files: Iterable[tuple[str, int, int, int, int]],
    candidates: dict[str, list[Candidate]],
    gone: Callable[[Candidate], bool] = is_gone,
) -> list[Move]:
    """The moves among files at new paths: `files` are (path, dev, ino, size, mtime_ns), in a
    stable order; `candidates` maps a path to the tracks that share its evidence. Each track moves
    to one file at most, each file takes one track at most; a file left without is a new track."""
    taken: set[int] = set()
    moves = []
    gone_cache: dict[int, bool] = {}
    for path, dev, ino, size, mtime_ns in files:
        found = [t for t in candidates.get(path, ()) if t.path != path and t.id not in taken]
        if not found:
            continue
        found.sort(key=_preference(path, size, mtime_ns))
        for track in found:
            if track.id not in gone_cache:
                gone_cache[track.id] = gone(track)
            if gone_cache[track.id]:
                same = (track.size, track.mtime_ns) == (size, mtime_ns)
                moves.append(Move(track, path, dev, ino, size, mtime_ns, same))
                taken.add(track.id)
                break
    return moves


def by_inode(files: Iterable, tracks: Iterable[Candidate]) -> dict[str, list[Candidate]]:
    """Tracks that are the same file as a walked file (scan.FileStat): same device and inode, same
    size and modification time. An inode number is reused as soon as its file is deleted, so it
    counts only with the rest unchanged (a move within a file system changes none of them)."""
    held: dict[tuple[int, int], list[Candidate]] = {}
    for track in tracks:
        held.setdefault((track.dev, track.ino), []).append(track)
    found = {}
    for f in files:
        same = [t for t in held.get((f.dev, f.ino), ()) if (t.size, t.mtime_ns) == (f.size, f.mtime_ns)]
        if same:
            found[f.path] = same
    return found


def by_audio_key(keys: dict[str, str], tracks: Iterable[Candidate]) -> dict[str, list[Candidate]]:
    """Tracks whose audio key is a file's (path -> key): the same audio, whatever its tags."""
    held: dict[str, list[Candidate]] = {}
    for track in tracks:
        held.setdefault(track.audio_key, []).append(track)
    return {path: held[key] for path, key in keys.items() if key in held}


def audio_keys(paths: Iterable[str]) -> dict[str, str]:
    """path -> audio key of these files (identity.audio_key); a file that cannot be read now gets
    none (reading it reports why, or the next scan tries again)."""
    keys = {}
    for path in paths:
        try:
            keys[path] = identity.audio_key(path)
        except (OSError, TypeError, ValueError):  # gone, unreadable, or not a path
            continue
    return keys


def file_identity(st: os.stat_result) -> tuple[int, int]:
    """(dev, ino) of a stat as the tracks table holds them."""
    return signed64(st.st_dev), signed64(st.st_ino)
