"""The walk units (queue scan): list folders, compare with what the library holds, hand the changed files to
extract units and the folders left over to more walks."""

from __future__ import annotations

import os

from backend_worker import db, ledger, library, pipeline, session_work, sessions
from backend_worker.config import settings
from backend_worker.pipeline import SendTask
from backend_worker.sessions import is_within
from backend_worker.stages import moves, walk
from backend_worker.units.handoff import advance, send_units, skipped

# Extra walk tasks a walk hands its remaining folders to once it has seen enough entries.
WALK_FANOUT = 4


def walk_unit(send: SendTask, session_id: str, unit_id: str, dirs: list[str], root: bool = False) -> dict:
    conf = settings()
    with db.transaction() as conn:
        if not sessions.is_running(conn, session_id) or ledger.unit_done(conn, session_id, unit_id):
            return skipped(session_id, "session ended or unit done")
        problem = root_problem(conn, dirs[0]) if root else None
        if problem:
            sessions.fail_session(conn, session_id, problem)
            return {"session": session_id, "failed": problem}
    found = walk.walk(dirs, conf.walk_unit_entries)
    with db.transaction() as conn:
        known = library.known_files(conn, found.listed_dirs)
    plan = walk.compare(found.files, known)
    # Files at new paths that are a track's file moved within its file system (same inode, size
    # and time; the track's file gone from its path): they take the track's id, and nothing is read.
    moved = []
    if plan.fresh and not sessions.over_empty_library(db.thread_connection(), session_id):
        with db.transaction() as conn:
            candidates = library.tracks_by_inode(conn, session_id, [f.ino for f in plan.fresh])
        if candidates:
            moved = moves.match(_evidence(plan.fresh), moves.by_inode(plan.fresh, candidates))
    # Unchanged files whose track lacks an audio key (rows of an older release) or was missing.
    audio_keys = moves.audio_keys([f.path for f in plan.restat if known[f.path][2] < 0])
    walk_groups = walk.split_dirs(found.pending_dirs, WALK_FANOUT)
    problems = [{"path": path, "dir": folder, "error": reason} for path, folder, reason in found.problems]
    problems += [{"path": d, "dir": os.path.dirname(d), "error": reason} for d, reason in found.failed_dirs]
    with db.transaction() as conn:
        # A move another session made first leaves its file a new file, read below.
        moved = library.move_tracks(conn, moved)
        moved_paths = {m.path for m in moved}
        new_files = [f.path for f in plan.fresh if f.path not in moved_paths]
        children = [
            pipeline.extract_chunk(session_id, unit_id, i, paths)
            for i, paths in enumerate(walk.chunks([f.path for f in plan.changed], conf.extract_chunk_files))
        ]
        children += [
            pipeline.extract_new_chunk(session_id, unit_id, i, paths)
            for i, paths in enumerate(walk.chunks(new_files, conf.extract_chunk_files))
        ]
        children += [pipeline.sub_walk(session_id, unit_id, i, group) for i, group in enumerate(walk_groups)]
        to_send = ledger.register_units(conn, session_id, children)
        identity = {
            "moved": len(moved),
            "returned": sum(m.track.missing for m in moved)
            + library.refresh_identity(conn, plan.restat, audio_keys),
        }
        if any(identity.values()):
            tally = pipeline.moves_found(pipeline.WALK, unit_id)
            ledger.register_units(conn, session_id, [tally])
            ledger.finish_unit(conn, session_id, tally.id, identity)
        session_work.add_dirs(conn, session_id, found.listed_dirs, [d for d, _ in found.failed_dirs])
        session_work.add_vanished(conn, session_id, plan.vanished)
        library.forget_listing_errors(conn, found.listed_dirs)
        library.save_file_errors(conn, session_id, "scan", problems)
    # Sent before the walk is marked done: a walk that dies here runs again and sends them again.
    send_units(send, to_send)
    # A moved file is found unchanged: it is the file the library read, at its new path.
    counts = {
        "discovered": len(found.files),
        "unchanged": plan.unchanged + len(moved),
        "errors": len(problems),
    }
    with db.transaction() as conn:
        ledger.finish_unit(conn, session_id, unit_id, counts)
    advance(send, session_id)
    return {
        "session": session_id,
        **counts,
        **identity,
        "to_extract": len(plan.changed) + len(new_files),
        "subtrees": len(walk_groups),
    }


def _evidence(files: list[walk.FileStat]) -> list[tuple[str, int, int, int, int]]:
    return [(f.path, f.dev, f.ino, f.size, f.mtime_ns) for f in files]


def root_problem(conn, root: str) -> str | None:
    """Why a library root cannot be scanned (missing, unreadable, or empty while the library holds
    tracks there: unmounted, most likely); None when it can."""
    if not os.path.isdir(root):
        return f"library root {root} does not exist or is not a folder"
    # An empty folder below a library root was emptied; an empty library root may be unmounted.
    root = next((r for r in settings().library_roots if is_within(root, r)), root)
    try:
        empty = not any(True for _ in os.scandir(root))
    except OSError as exc:
        return f"library root {root} cannot be listed: {exc.strerror or exc}"
    if empty:
        held = library.tracks_below(conn, root)
        if held:
            return f"library root {root} is empty but the library holds {held} tracks there: is it mounted?"
    return None
