"""`soniquebay watch`: the library follows the disk.

inotify reports what changes under the library roots, through watchdog: it watches a tree
recursively, adds a watch to each new folder as it appears, and reports a tree moved in file by
file. The folders that changed are collected; once nothing changed for the quiet period (a copy
in progress is one change), one scan session over just those folders starts. A file written
slowly keeps its folder changing, so it is read once it is complete; read early anyway (a writer
that paused longer than the quiet period), its next change has it read again, since a scan reads
every file whose size or mtime changed.

Where inotify cannot see changes (network file systems) or cannot watch every folder
(fs.inotify.max_user_watches), this logs why and keeps going: soniquebay-scan.timer still scans.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from backend_worker.failures import one_line
from backend_worker.sessions import is_within, normalise_roots

log = logging.getLogger("backend_worker.watch")

# After this long, folders that keep changing are scanned anyway (a library that never goes
# quiet still gets scanned); a file caught half-written is read again after its next change.
LONGEST_WAIT_SECONDS = 300
RETRY_SECONDS = 5  # a folder a running session already scans waits for it this long at a time
CHECK_WATCHES_SECONDS = 30  # how often roots that could not be watched are tried again

# File systems whose changes made on another machine never reach this machine's inotify.
NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "fuse.glusterfs",
     "fuse.sshfs", "fuse.rclone", "davfs", "fuse.davfs2", "afs", "lustre", "gpfs", "beegfs"}
)  # fmt: skip
# Not opened, closed without writing, or read: the workers reading the files would otherwise make
# every scan start another.
WATCHED_EVENTS = [
    FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
]  # fmt: skip
WATCH_LIMIT = "fs.inotify.max_user_watches"
REMOTE = "a network file system"


def changed_folders(kind: str, path: str, dest: str = "", is_dir: bool = False) -> set[str]:
    """The folders whose files an event changed: the ones a scan must walk again.

    A new folder (created, or moved in) is walked itself; a file changed, added or removed has
    its folder walked; a folder removed or moved away has its parent walked."""
    if kind == "modified" and is_dir:
        return set()  # a folder's own metadata; its files' events say what changed
    if kind == "moved":
        return {os.path.dirname(path), dest if is_dir else os.path.dirname(dest)}
    if kind == "created" and is_dir:
        return {path}
    return {os.path.dirname(path)}


def scan_roots(folders: Iterable[str], library_roots: Iterable[str], isdir=os.path.isdir) -> list[str]:
    """The session roots for changed folders: each one, or its nearest existing parent (a folder
    deleted is walked from its parent, so its tracks go), inside the library roots; folders
    outside them are dropped and folders inside another one collapse into it."""
    library_roots = normalise_roots(library_roots)
    roots = set()
    for folder in folders:
        library_root = next((r for r in library_roots if is_within(folder, r)), None)
        if library_root is None:
            continue
        while folder != library_root and not isdir(folder):
            folder = os.path.dirname(folder)
        roots.add(folder)
    return normalise_roots(roots)


@dataclass
class Changes:
    """Changed folders waiting to be scanned. Due once nothing changed for `quiet` seconds, or when
    the first of them has waited `longest` seconds; never before `not_before`."""

    quiet: float
    longest: float = LONGEST_WAIT_SECONDS
    folders: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None
    not_before: float = 0.0

    def note(self, folders: Iterable[str], now: float) -> None:
        folders = set(folders)
        if not folders:
            return
        self.folders |= folders
        self.first = now if self.first is None else self.first
        self.last = now

    def due_in(self, now: float) -> float | None:
        """Seconds until due (0: due now), or None when nothing waits."""
        if not self.folders:
            return None
        due = max(self.not_before, min(self.last + self.quiet, self.first + self.longest))
        return max(0.0, due - now)

    def take(self) -> set[str]:
        folders = self.folders
        self.folders, self.first, self.last, self.not_before = set(), None, None, 0.0
        return folders

    def put_back(self, folders: Iterable[str], not_before: float) -> None:
        """Folders that could not be scanned yet: due again at `not_before`, or later if newer
        changes keep coming."""
        folders = set(folders)
        if not folders:
            return
        if self.first is None:
            self.first = self.last = not_before - self.quiet
        self.folders |= folders
        self.not_before = max(self.not_before, not_before)


def network_file_system(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the network file system path lives on, or None for a local one."""
    best, fstype = "", None
    try:
        with open(mountinfo) as fh:
            for line in fh:
                fields = line.split()
                mount_point = fields[4].encode().decode("unicode_escape")
                kind = fields[fields.index("-") + 1]
                if is_within(path, mount_point) and len(mount_point) > len(best):
                    best, fstype = mount_point, kind
    except OSError:
        return None
    return fstype if fstype in NETWORK_FILE_SYSTEMS else None


def _open_fds() -> set[int]:
    # Not the one listdir itself had open while listing (closed by now).
    return {int(fd) for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")}


def _close_inotify_fds(fds: set[int]) -> None:
    """watchdog leaves the inotify instance of a watch it could not finish open, holding the
    watches it did add (counted against the limit, so the next root would be refused too)."""
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in ("anon_inode:inotify", "anon_inode:[inotify]"):
                os.close(fd)
        except OSError:
            pass


class Watcher:
    """The inotify side: watches each library root, hands changed folders to a queue, and says
    once, in one line, why a root is not watched."""

    def __init__(self, roots: list[str], changes: queue.SimpleQueue):
        self.roots = roots
        self.changes = changes
        self.observer = Observer()
        self.watches: dict = {}  # root -> watchdog's ObservedWatch
        self.refused: dict[str, str] = {}  # root -> why it is not watched (logged once)

    def start(self) -> None:
        self.observer.daemon = True
        self.observer.start()
        self.check()

    def check(self) -> None:
        """Watch the roots not watched yet: new, or back after being unmounted or deleted. A root
        refused for the watch limit or a network file system is not tried again (a restart of the
        unit is, once the limit is raised)."""
        alive = {emitter.watch for emitter in self.observer.emitters if emitter.is_alive()}
        for root, watch in list(self.watches.items()):
            if watch not in alive:  # the root was deleted or unmounted
                self.observer.unschedule(watch)
                del self.watches[root]
        for root in self.roots:
            why = self.refused.get(root, "")
            if root not in self.watches and REMOTE not in why and WATCH_LIMIT not in why:
                self._watch(root)

    def _watch(self, root: str) -> None:
        if not os.path.isdir(root):
            self._refuse(root, "it is not a folder (not mounted?); watching it once it is one")
            return
        remote = network_file_system(root)
        if remote:
            self._refuse(
                root,
                f"it is on {remote}, {REMOTE}: inotify does not see changes made on "
                "other machines; soniquebay-scan.timer scans it on schedule",
            )
            return
        changes = self.changes

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                folders = changed_folders(
                    event.event_type, event.src_path, event.dest_path, event.is_directory
                )
                changes.put(folders)

        before = _open_fds()
        try:
            self.watches[root] = self.observer.schedule(
                Handler(), root, recursive=True, event_filter=WATCHED_EVENTS
            )
        except OSError as exc:
            _close_inotify_fds(_open_fds() - before)
            if exc.errno == errno.ENOSPC:  # more folders than fs.inotify.max_user_watches
                self._refuse(
                    root,
                    f"it has more folders than inotify may watch ({WATCH_LIMIT}); raise it "
                    f"(`sysctl -w {WATCH_LIMIT}=1048576`, and the same line in a file of /etc/sysctl.d/) "
                    "and restart soniquebay-watch.service; until then soniquebay-scan.timer scans it",
                )
            else:
                self._refuse(root, f"inotify refused it: {one_line(exc)}")
            return
        if root in self.refused:
            del self.refused[root]
            log.info("watching %s again", root)

    def _refuse(self, root: str, why: str) -> None:
        if self.refused.get(root) != why:
            log.error("cannot watch %s: %s", root, why)
        self.refused[root] = why


def start_watch_session(roots: list[str]) -> tuple[str | None, list[str]]:
    """Start one session over the roots no running session scans. Returns its id (None when every
    root is busy) and the busy roots, which wait for their session to end."""
    from backend_worker import sessions

    started = sessions.start(roots, "watch", skip_busy=True)
    return started.session_id, list(started.busy)


def follow(
    library_roots: list[str], changes: queue.SimpleQueue, pending: Changes, on_idle: Callable[[], None]
) -> None:
    """The loop: collect changed folders from `changes`, start a session when they are due."""
    failures = 0
    waiting_for: list[str] = []  # busy roots already logged (once, not every retry)
    next_idle = time.monotonic() + CHECK_WATCHES_SECONDS
    while True:
        now = time.monotonic()
        wait = pending.due_in(now)
        try:
            pending.note(changes.get(timeout=min(wait if wait is not None else 1.0, 1.0)), time.monotonic())
            while True:  # everything already queued, at once
                pending.note(changes.get_nowait(), time.monotonic())
        except queue.Empty:
            pass
        now = time.monotonic()
        if now >= next_idle:
            next_idle = now + CHECK_WATCHES_SECONDS
            on_idle()
        if pending.due_in(now) != 0:
            continue
        roots = scan_roots(pending.take(), library_roots)
        if not roots:
            continue
        try:
            session_id, busy = start_watch_session(roots)
        except Exception as exc:  # the database or the broker is down: try again, with backoff
            failures += 1
            after = min(RETRY_SECONDS * 2**failures, 120)
            what = " ".join(roots)
            log.error("cannot start a scan of %s: %s; trying again in %d s", what, one_line(exc), after)
            pending.put_back(roots, now + after)
            continue
        failures = 0
        if session_id:
            log.info("session %s scans %d changed folders: %s", session_id, len(roots) - len(busy),
                     " ".join(r for r in roots if r not in busy))  # fmt: skip
        if busy and busy != waiting_for:
            log.info("waiting for the running session that scans %s", " ".join(busy))
        waiting_for = busy
        pending.put_back(busy, now + RETRY_SECONDS)


def run(library_roots: list[str], quiet: float) -> None:
    roots = normalise_roots(library_roots)
    changes: queue.SimpleQueue = queue.SimpleQueue()
    watcher = Watcher(roots, changes)
    watcher.start()
    watched = sorted(watcher.watches)
    log.info(
        "watching %s; a scan starts %g s after the last change",
        " ".join(watched) if watched else "nothing (see above)",
        quiet,
    )
    follow(roots, changes, Changes(quiet), on_idle=watcher.check)
