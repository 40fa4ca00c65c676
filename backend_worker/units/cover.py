"""The cover units (queue deferred): find each album's cover (an image in its folder, else a
picture embedded in one of its tracks), save it in the covers folder and on the album. Covers are
a nicety: a cover unit that fails is given up, and the session still closes."""

from __future__ import annotations

from celery.utils.log import get_task_logger

from backend_worker import db, ledger, library, session_work
from backend_worker.config import settings
from backend_worker.cpu import parsing_turn
from backend_worker.stages import covers
from backend_worker.units.finalize import close_if_done
from backend_worker.units.handoff import skipped

log = get_task_logger(__name__)


def cover_unit(session_id: str, unit_id: str) -> dict:
    covers_dir = settings().covers_dir
    with db.transaction() as conn:
        if ledger.unit_done(conn, session_id, unit_id):
            return skipped(session_id, "unit done")
        albums = library.cover_sources(conn, session_work.planned_albums(conn, session_id, unit_id))
    # One unit at a time in a process, as extract parses (and with the same time-limit rules): a
    # cover is a few system calls and a hash, and threads handing each other the GIL at every call
    # took twice the time and three times the CPU of one (2,000 albums: 0.82 s in six, 0.39 in one).
    with parsing_turn.held():
        found = {
            album_id: _save_cover(folder, embedded_in, covers_dir) for album_id, folder, embedded_in in albums
        }
    with db.transaction() as conn:
        library.set_album_covers(conn, found)
        ledger.finish_unit(conn, session_id, unit_id, {})
    close_if_done(session_id)
    return {"session": session_id, "albums": len(found), "with_cover": sum(1 for v in found.values() if v)}


def give_up_cover_unit(session_id: str, unit_id: str) -> None:
    with db.transaction() as conn:
        ledger.finish_unit(conn, session_id, unit_id, {})
    close_if_done(session_id)


def _save_cover(folder: str, embedded_in: str | None, covers_dir: str) -> str | None:
    """The saved cover's file name, or None when the album has none."""
    image = covers.find_folder_image(folder)
    if image:
        try:
            with open(image, "rb") as fh:
                return covers.store_cover(fh.read(), covers_dir)
        except OSError as exc:
            log.warning("cannot read %s: %s", image, exc)
    if embedded_in:
        from backend_worker.stages import extract  # mutagen: imported on first use

        art = extract.embedded_cover(embedded_in)
        if art:
            return covers.store_cover(art[0], covers_dir, art[1])
    return None
