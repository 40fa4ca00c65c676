"""Scan stage: list library folders, compare with what the database knows, plan the work.

Plain functions (no Celery, no database): the task feeds them the snapshot it loaded.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from backend_worker.formats import is_audio_name
from backend_worker.stages.fields import signed64

_BIT63 = 2**63


class FileStat(NamedTuple):  # a tuple: made once per file on every scan, 5x cheaper than a dataclass
    path: str
    dir: str
    mtime_ns: int
    size: int
    dev: int  # st_dev and st_ino as a bigint column holds them (fields.signed64)
    ino: int


@dataclass
class WalkResult:
    listed_dirs: list[str] = field(default_factory=list)
    # Folders that could not be listed (reason): their known tracks are kept, not removed.
    failed_dirs: list[tuple[str, str]] = field(default_factory=list)
    files: list[FileStat] = field(default_factory=list)
    # Entries we could not take in, with a reason (bad names, symlink loops, unreadable entries).
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (path, dir, reason)
    # Folders found but not walked yet: handed to other scan tasks.
    pending_dirs: list[str] = field(default_factory=list)


def printable(path: str) -> str:
    """A path as UTF-8 text, undecodable bytes shown as \\xNN (names on disk are bytes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    if name.isascii():  # nearly every name, and checked without encoding it
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _symlink_loops(link_path: str, target: str) -> bool:
    """True when a symlinked folder points at itself or at one of the folders above it."""
    parent = os.path.dirname(link_path)
    while True:
        if os.path.realpath(parent) == target:
            return True
        up = os.path.dirname(parent)
        if up == parent:
            return False
        parent = up


def walk(dirs: list[str], max_entries: int) -> WalkResult:
    """List `dirs` and the folders below them, breadth first, until about `max_entries` entries
    were seen; folders not reached by then are returned in `pending_dirs`."""
    result = WalkResult()
    queue = deque(dirs)
    seen = 0
    while queue and seen < max_entries:
        folder = queue.popleft()
        subdirs = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    name = entry.name
                    path = entry.path
                    if not _is_utf8(name):
                        result.problems.append(
                            (printable(path), folder, "name is not valid UTF-8; rename it to import it")
                        )
                        continue
                    try:
                        if entry.is_dir():
                            if entry.is_symlink():
                                target = os.path.realpath(path)
                                if _symlink_loops(path, target):
                                    result.problems.append((path, folder, "symlink loop, not followed"))
                                    continue
                            subdirs.append(path)
                        elif is_audio_name(name):
                            if entry.is_file():
                                st = entry.stat()
                                dev, ino = st.st_dev, st.st_ino
                                if ino >= _BIT63 or dev >= _BIT63:
                                    dev, ino = signed64(dev), signed64(ino)
                                result.files.append(
                                    FileStat(path, folder, st.st_mtime_ns, st.st_size, dev, ino)
                                )
                            elif entry.is_symlink() and not os.path.exists(path):
                                result.problems.append((path, folder, "broken symlink"))
                            else:  # a fifo or device would block or make no sense to read
                                result.problems.append((path, folder, "not a regular file"))
                    except OSError as exc:
                        result.problems.append((path, folder, exc.strerror or str(exc)))
        except OSError as exc:
            result.failed_dirs.append((folder, f"cannot list folder: {exc.strerror or exc}"))
            continue
        result.listed_dirs.append(folder)
        subdirs.sort()
        queue.extend(subdirs)
    result.pending_dirs = list(queue)
    return result


@dataclass
class Plan:
    changed: list[FileStat]  # at a path the library knows, with another (mtime, size): read again
    unchanged: int
    vanished: list[str]
    # At a path the library does not know: a new file, or one it knows elsewhere (moved, copied).
    fresh: list[FileStat] = field(default_factory=list)
    # Unchanged, but the track's identity is to be refreshed: a file system identity that changed
    # (a copy put back, a device renumbered), no audio key yet (a row of an older release), or a
    # track marked missing whose file is back.
    restat: list[FileStat] = field(default_factory=list)


# What library.known_files says of a track in place of its st_dev when the walk must refresh its
# identity even if its file is unchanged.
MISSING_TRACK = -1  # marked missing: its file came back
NO_AUDIO_KEY = -2  # no audio key yet


def compare(files: list[FileStat], known: dict[str, tuple]) -> Plan:
    """Split walked files by (path, mtime, size): unchanged, changed at a known path, or at a new
    path; files the database knows but the walk did not find have vanished.

    `known` maps path -> (mtime_ns, size, dev, ino) for the files the database holds in the folders
    this walk listed (library.known_files), and only those: a track's dev is MISSING_TRACK or
    NO_AUDIO_KEY when its identity must be refreshed, None for a file error record.
    """
    changed, fresh, restat = [], [], []
    unchanged = 0
    on_disk = set()
    for f in files:
        path, _, mtime_ns, size, dev, ino = f
        on_disk.add(path)
        held = known.get(path)
        if held is None:
            fresh.append(f)
        elif held == (mtime_ns, size, dev, ino):
            unchanged += 1
        elif held[0] == mtime_ns and held[1] == size:
            unchanged += 1
            if held[2] is not None:  # a track, not an error record (those have no identity)
                restat.append(f)
        else:
            changed.append(f)
    vanished = sorted(p for p in known if p not in on_disk)
    changed.sort(key=lambda f: f.path)
    fresh.sort(key=lambda f: f.path)
    return Plan(changed, unchanged, vanished, fresh, restat)


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def split_dirs(dirs: list[str], parts: int) -> list[list[str]]:
    """Split pending folders into at most `parts` contiguous groups (neighbours stay together)."""
    if not dirs:
        return []
    parts = max(1, min(parts, len(dirs)))
    size, extra = divmod(len(dirs), parts)
    groups, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        groups.append(dirs[start:end])
        start = end
    return groups
