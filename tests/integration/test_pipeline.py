"""The whole pipeline on real workers: scan a real library, then assert the exact rows."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from testkit import audio_fixtures

pytestmark = pytest.mark.integration

# A session's counts of moved, returned, missing and purged tracks when it found none.
NO_IDENTITY_CHANGE = {"moved": 0, "returned": 0, "missing": 0, "purged": 0}
TRACK_FIELDS = ("title", "artist", "album", "albumartist", "track", "tracktotal", "disc", "year", "comp")


def track_rows(pipeline) -> dict[str, dict]:
    cur = pipeline.conn.execute(
        f"SELECT path, {', '.join(TRACK_FIELDS)}, mb_trackid::text, mb_albumid::text, "
        "ARRAY(SELECT g.name FROM track_genres tg JOIN genres g ON g.id = tg.genre_id "
        "      WHERE tg.track_id = t.id ORDER BY tg.position) AS genres "
        "FROM present_tracks t ORDER BY path"
    )
    names = [d.name for d in cur.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def expected_rows(expected: list[dict]) -> dict[str, dict]:
    keys = ("path", *TRACK_FIELDS, "mb_trackid", "mb_albumid", "genres")
    return {e["path"]: {k: e.get(k) for k in keys} for e in expected}


def retag(expected: dict) -> dict:
    """The tags to write so a file reads back as `expected`."""
    return {k: v for k, v in expected.items() if k in audio_fixtures.TAG_KEYS and v not in (None, [], False)}


def session_units(pipeline, session_id) -> dict[str, int]:
    return dict(
        pipeline.rows(
            "SELECT stage, count(*) FROM scan_units WHERE session_id = %s GROUP BY stage", session_id
        )
    )


def test_scan_lands_exact_rows_then_rescans_only_what_changed(pipeline, library):
    expected = audio_fixtures.build_library(library, artists=4, albums_per_artist=3, tracks_per_album=6)
    assert len(expected) == 72

    first = pipeline.scan(library)
    assert first["status"] == "completed", first
    assert first["counts"] == {
        "discovered": 72, "unchanged": 0, "extracted": 72, "inserted": 72, "errors": 0,
        **NO_IDENTITY_CHANGE,
    }  # fmt: skip
    assert track_rows(pipeline) == expected_rows(expected)
    units = session_units(pipeline, first["id"])
    assert units["walk"] > 1, "the walk fanned out into subtree tasks"
    assert units["extract"] >= 2 and units["insert"] >= 1
    # Albums and artists are normalised; every album got its cover file.
    albums = pipeline.rows("SELECT title, cover_hash FROM albums ORDER BY title")
    album_keys = {(e["albumartist"] or e["artist"], e["album"], e["mb_albumid"]) for e in expected}
    assert len(albums) == len(album_keys)
    for title, cover_hash in albums:
        assert cover_hash, f"album {title} has no cover"
        assert (pipeline.covers_dir / cover_hash[:2] / cover_hash).is_file()
    assert pipeline.rows("SELECT count(*) FROM record_buffer WHERE payload IS NOT NULL") == [(0,)]
    updated_before = dict(pipeline.rows("SELECT path, updated_at FROM present_tracks"))

    # Unchanged rescan: nothing is read again, nothing is written.
    second = pipeline.scan(library)
    assert second["status"] == "completed"
    assert second["counts"] == {
        "discovered": 72, "unchanged": 72, "extracted": 0, "inserted": 0, "errors": 0,
        **NO_IDENTITY_CHANGE,
    }  # fmt: skip
    assert set(session_units(pipeline, second["id"])) <= {"walk", "finalize"}
    assert dict(pipeline.rows("SELECT path, updated_at FROM present_tracks")) == updated_before

    # Touch two files' tags, add three, delete two, delete a whole album folder.
    by_album = {}
    for e in expected:
        by_album.setdefault(os.path.dirname(e["path"]), []).append(e)
    albums_dirs = sorted(by_album)
    retagged = by_album[albums_dirs[0]][:2]
    for e in retagged:
        e["title"] += " (remaster)"
        audio_fixtures.write_tags(Path(e["path"]), retag(e))
    deleted = by_album[albums_dirs[1]][:2]
    for e in deleted:
        os.unlink(e["path"])
        expected.remove(e)
    gone_album = albums_dirs[2]
    shutil.rmtree(gone_album)
    expected = [e for e in expected if os.path.dirname(e["path"]) != gone_album]
    added = []
    for n, source in enumerate(by_album[albums_dirs[3]][:3]):
        new_path = Path(albums_dirs[3]) / f"bonus {n}{Path(source['path']).suffix}"
        shutil.copy(source["path"], new_path)
        bonus = {**source, "path": str(new_path), "title": f"Bonus {n}", "track": 90 + n}
        audio_fixtures.write_tags(new_path, retag(bonus))
        added.append(bonus)
    expected += added

    third = pipeline.scan(library)
    assert third["status"] == "completed"
    assert third["counts"]["extracted"] == 5
    assert third["counts"]["inserted"] == 5
    assert third["counts"]["missing"] == 2 + 6
    assert third["counts"]["unchanged"] == 72 - 2 - 6 - 2
    assert track_rows(pipeline) == expected_rows(expected)
    # The files gone are missing tracks, kept with their album until they are purged.
    assert pipeline.rows("SELECT count(*) FROM tracks WHERE missing_since IS NOT NULL") == [(8,)]
    orphans = ("SELECT count(*) FROM albums a WHERE NOT EXISTS "
               "(SELECT 1 FROM present_tracks t WHERE t.album_id = a.id)")  # fmt: skip
    assert pipeline.rows(orphans) == [(1,)]
    purge = pipeline.cli("purge")
    assert purge.stderr.strip() == "purged 8 missing tracks"
    assert track_rows(pipeline) == expected_rows(expected)
    # The album whose folder is gone is gone too, with no orphan left behind.
    assert pipeline.rows(orphans) == [(0,)]


# What each awkward input becomes when the workers run unprivileged (as in production): a track, or
# an error record whose `soniquebay errors` line ("<stage>: <reason>") starts with the text given.
# The two inputs add_bad_files() leaves out of its map (the folder named album.mp3 and the file in the
# mode-000 folder) must yield nothing: the whole sets of tracks and error paths below say so.
TRACK = None
BAD_FILE_EXPECTATIONS = {
    "zero_byte": "extract: empty file",
    "truncated_header": "extract: truncated FLAC stream",
    "truncated_audio": TRACK,
    "garbage": "extract: not an audio file mutagen can read",
    "text_as_audio": "extract: not an audio file mutagen can read",
    "flac_named_mp3": TRACK,
    "newline_in_name": TRACK,
    # PostgreSQL text holds UTF-8 only: recorded under a printable name, with what to do.
    "non_utf8_name": "scan: name is not valid UTF-8; rename it to import it",
    "symlink_loop": "scan: symlink loop, not followed",
    "inside_symlink_loop": TRACK,
    "inside_dir_named_like_audio": TRACK,
    "fifo": "scan: not a regular file",
    "unreadable_dir": "scan: cannot list folder: ",
    "unreadable_file": "extract: permission denied",
    "ogg_named_mp3": TRACK,
    "garbage_named_audio": "extract: not an audio file mutagen can read",
    "huge_comment": TRACK,
    "huge_picture": TRACK,
    "huge_title": TRACK,
    # The artists index cannot hold a 20,000-character name: insert records it, the batch goes on.
    "huge_artist": "insert: cannot store: ProgramLimitExceeded: index row ",
    "latin1_id3v1": TRACK,
    "latin1_id3v23": TRACK,
    "utf16_id3v23": TRACK,
    "nul_in_tag": TRACK,
}


class WorkerWatch:
    """Worker main and pool PIDs, and where each log ended, before a scan: check() then says no
    worker process died or was replaced meanwhile and no task was lost with a dead worker."""

    def __init__(self, workers):
        self.workers = workers
        self.pids = {q: (p.pid, sorted(workers.pool_children(q))) for q, p in workers.procs.items()}
        self.offsets = {q: workers.log_size(q) for q in workers.procs}

    def check(self) -> None:
        for queue, (main, pool) in self.pids.items():
            assert self.workers.procs[queue].poll() is None, f"{queue} worker exited"
            assert self.workers.procs[queue].pid == main
            assert sorted(self.workers.pool_children(queue)) == pool, f"{queue}: pool processes replaced"
            log = self.workers.log_since(queue, self.offsets[queue])
            for sign in ("WorkerLostError", "exited with", "Traceback", "raised unexpected"):
                assert sign not in log, f"{queue} worker log:\n{log[-3000:]}"


def test_broken_and_odd_files_become_error_records_and_the_session_closes(pipeline, library):
    from backend_worker.stages.walk import printable

    expected = audio_fixtures.build_library(library, artists=1, albums_per_artist=2, tracks_per_album=3)
    made = audio_fixtures.add_bad_files(library)
    bad = {path: kind.rpartition(":")[2] for path, kind in made.items()}
    assert set(bad.values()) == {k.rpartition(":")[2] for k in audio_fixtures.BAD_FILE_KINDS}, "all made"
    assert set(bad.values()) == set(BAD_FILE_EXPECTATIONS), "every awkward case has an expectation"
    watch = WorkerWatch(pipeline.workers)
    session = pipeline.scan(library)
    assert session["status"] == "completed", session
    watch.check()
    errors = {e["path"]: e for e in map(json.loads, pipeline.cli("errors", "--json").stdout.splitlines())}
    stored = {p for (p,) in pipeline.rows("SELECT path FROM present_tracks")}
    wanted_tracks = {e["path"] for e in expected}
    wanted_errors = set()
    for path, kind in bad.items():
        line = BAD_FILE_EXPECTATIONS[kind]
        if line is TRACK:
            wanted_tracks.add(path)
            continue
        shown = printable(path)
        wanted_errors.add(shown)
        assert shown in errors, f"{kind}: no error record for {shown!r}"
        assert f"{errors[shown]['stage']}: {errors[shown]['error']}".startswith(line), (
            f"{kind}: {errors[shown]}"
        )
    assert stored == wanted_tracks
    assert set(errors) == wanted_errors
    # 6 good files and 26 odd inputs: 19 tracks (6 + 13 odd), 13 error records. The walk records 4
    # (the non-UTF-8 name, the symlink, the pipe, the locked folder) and finds the other 28 files;
    # extract reads 20 of them and records 8; insert refuses 1 of the 20.
    assert len(stored) == 19
    assert Counter(e["stage"] for e in errors.values()) == {"scan": 4, "extract": 8, "insert": 1}
    assert session["counts"] == {
        "discovered": 28, "unchanged": 0, "extracted": 20, "inserted": 19, "errors": 13,
        **NO_IDENTITY_CHANGE,
    }  # fmt: skip
    # The plain listing names every one of them, with its reason.
    listed = pipeline.cli("errors").stdout
    for path, e in errors.items():
        assert f"{path}\t{e['stage']}: {e['error']}" in listed
    # Odd tag encodings are read right; the 5 MB embedded picture is the album's cover.
    titles = dict(pipeline.rows("SELECT path, title FROM present_tracks"))
    for path, kind in made.items():
        if kind in audio_fixtures.ODD_TITLES:
            assert titles[path] == audio_fixtures.ODD_TITLES[kind], kind
    huge_title = next(p for p, kind in bad.items() if kind == "huge_title")
    assert len(titles[huge_title]) == 100_000
    [(cover,)] = pipeline.rows("SELECT cover_hash FROM albums WHERE title = 'Bad Files'")
    assert (pipeline.covers_dir / cover[:2] / cover).stat().st_size > 5_000_000
    print(
        f"\nbad input corpus: {len(bad)} inputs ({len(set(bad.values()))} kinds), {len(expected)} good "
        f"files: {len(stored)} tracks, {len(errors)} error records, 1 session completed; "
        f"counts {session['counts']}"
    )

    # Nothing broken is retried and nothing is lost: an unchanged rescan reads nothing again.
    again = pipeline.scan(library)
    assert again["status"] == "completed"
    # The walk meets its 4 again; the 9 files extract or insert refused are unchanged, not read again.
    assert again["counts"] == {
        "discovered": 28, "unchanged": 28, "extracted": 0, "inserted": 0, "errors": 4,
        **NO_IDENTITY_CHANGE,
    }  # fmt: skip
    watch.check()
    assert {json.loads(line)["path"] for line in pipeline.cli("errors", "--json").stdout.splitlines()} == set(
        errors
    )
    assert {p for (p,) in pipeline.rows("SELECT path FROM present_tracks")} == wanted_tracks


def test_files_deleted_between_the_walk_and_extract_leave_nothing_behind(pipeline, library):
    """The walk lists files, then they are deleted before an extract task reads them (extract is
    held back by stopping its worker): a known track is marked missing, a new file leaves no row and no
    error record, and the session completes."""
    expected = audio_fixtures.build_library(library, artists=1, albums_per_artist=2, tracks_per_album=4)
    assert pipeline.scan(library)["counts"]["inserted"] == 8
    changed = expected[:2]
    for e in changed:  # changed since the last scan: the walk sends them to extract
        audio_fixtures.write_tags(Path(e["path"]), {"title": e["title"] + " (edit)"})
    new = []
    for n in range(3):
        path = Path(expected[-1]["path"]).with_name(f"new {n}{Path(expected[-1]['path']).suffix}")
        shutil.copy(expected[-1]["path"], path)
        new.append(str(path))
    workers = pipeline.workers
    workers.stop(["extract"])
    try:
        session_id = pipeline.cli("scan", str(library)).stdout.strip()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pending = dict(
                pipeline.rows(
                    "SELECT stage, count(*) FILTER (WHERE done_at IS NULL) FROM scan_units "
                    "WHERE session_id = %s GROUP BY stage",
                    session_id,
                )
            )
            if pending.get("walk") == 0 and pending.get("extract"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the walk did not finish: {pending}")
        gone = [e["path"] for e in changed] + new[:2]
        for path in gone:
            os.unlink(path)
    finally:
        workers.start(["extract"])
    assert pipeline.wait_closed(session_id) == "completed"
    [counts] = pipeline.rows(
        "SELECT discovered, unchanged, extracted, inserted, errors, missing FROM scan_sessions WHERE id = %s",
        session_id,
    )
    assert counts == (8 + 3, 6, 1, 1, 0, 2)
    stored = {p for (p,) in pipeline.rows("SELECT path FROM present_tracks")}
    assert stored == {e["path"] for e in expected[2:]} | {new[2]}
    assert pipeline.rows("SELECT count(*) FROM file_errors") == [(0,)]
    assert pipeline.cli("errors").stdout == ""


def test_an_unreadable_folder_keeps_its_tracks(pipeline, library):
    audio_fixtures.build_library(library, artists=2, albums_per_artist=1, tracks_per_album=3)
    assert pipeline.scan(library)["counts"]["inserted"] == 6
    locked = sorted(p for p in library.iterdir() if p.is_dir())[0]
    locked.chmod(0)
    try:
        session = pipeline.scan(library)
    finally:
        locked.chmod(0o755)
    assert session["status"] == "completed"
    assert session["counts"]["missing"] == 0
    assert pipeline.rows("SELECT count(*) FROM present_tracks") == [(6,)]
    errors = pipeline.rows("SELECT path, reason FROM file_errors WHERE stage = 'scan'")
    assert errors and errors[0][0] == str(locked) and "cannot list folder" in errors[0][1]


def test_a_missing_root_fails_the_session_and_removes_nothing(pipeline, library):
    audio_fixtures.build_library(library, artists=1, albums_per_artist=1, tracks_per_album=2)
    assert pipeline.scan(library)["status"] == "completed"
    proc = pipeline.cli("scan", str(library / "nope"), "--wait", check=False)
    assert proc.returncode == 1
    assert "does not exist" in proc.stdout
    # An emptied root (an unmounted disk) is refused, not taken as "everything was deleted".
    for child in library.iterdir():
        shutil.rmtree(child)
    failed = pipeline.scan(library)
    assert failed["status"] == "failed" and "is it mounted" in failed["message"]
    assert pipeline.rows("SELECT count(*) FROM present_tracks") == [(2,)]


INSERT_SUCCEEDED = re.compile(r"Task insert\.records\[([0-9a-f-]+)\] succeeded in [0-9.]+s: (\{.*\})")


def _consumer_name(queue: str) -> str:
    return f"{queue}-1@{socket.gethostname()}"


@contextlib.contextmanager
def consumers_paused(*queues: str):
    """The queues' workers stop taking messages (Celery's cancel_consumer) until resumed, or until
    the block ends: messages wait in Redis meanwhile, in the order they were sent."""
    from backend_worker.app import app

    def resume(queue: str) -> None:
        name = _consumer_name(queue)
        replies = app.control.add_consumer(queue, destination=[name], reply=True, timeout=5)
        assert replies and name in replies[0], replies

    try:
        for queue in queues:
            name = _consumer_name(queue)
            replies = app.control.cancel_consumer(queue, destination=[name], reply=True, timeout=5)
            assert replies and "ok" in replies[0][name], replies
        yield resume
    finally:
        for queue in queues:
            resume(queue)


def test_a_redelivered_insert_batch_is_applied_once(pipeline, library):
    """Every insert message of a running session delivered twice, as after a crash: both copies wait
    in the queue before either runs. Each batch is applied by one copy; its twin finds it done."""
    from backend_worker import delivery
    from backend_worker.app import app

    expected = audio_fixtures.build_library(library, artists=2, albums_per_artist=3, tracks_per_album=20)
    broker = redis.Redis.from_url(os.environ["SONIQUEBAY_BROKER_URL"])
    # The final step (deferred) is held too: the twins must run while the session is still running.
    with consumers_paused("insert", "deferred") as resume:
        session_id = pipeline.cli("scan", str(library)).stdout.strip()
        deadline = time.monotonic() + 60
        while True:
            [(upstream, unbatched)] = pipeline.rows(
                "SELECT (SELECT count(*) FROM scan_units WHERE session_id = %s AND done_at IS NULL "
                "        AND stage IN ('walk', 'extract', 'collect')), "
                "       (SELECT count(*) FROM record_buffer WHERE session_id = %s AND batch_id IS NULL)",
                session_id, session_id,
            )  # fmt: skip
            batches = dict(
                pipeline.rows(
                    "SELECT task_id, message FROM scan_units WHERE session_id = %s AND stage = 'insert'",
                    session_id,
                )
            )
            if (
                upstream == unbatched == 0
                and batches
                and set(batches) <= delivery.queued_task_ids(broker, ["insert"])
            ):
                break
            assert time.monotonic() < deadline, (
                f"the insert batches were never all queued: {upstream} upstream units pending, "
                f"{unbatched} chunks unbatched, {len(batches)} batches"
            )
            time.sleep(0.1)
        assert len(batches) >= 2, "several batches, so twins and other batches interleave"
        twins = {}
        for task_id, message in batches.items():
            twins[task_id] = str(uuid.uuid4())
            app.send_task(message["task"], kwargs=message["kwargs"], task_id=twins[task_id])
        offset = pipeline.workers.log_size("insert")
        resume("insert")
        # Done when the insert worker is idle (nothing queued, nothing held) and every copy ran.
        # (A batch may also run twice under its own id: its sender and `advance` can both send it.)
        sent = set(batches) | set(twins.values())
        deadline = time.monotonic() + 60
        while True:
            idle = insert_worker_idle(broker)
            runs = insert_runs(pipeline.workers.log_since("insert", offset))
            if idle and sent <= {task_id for task_id, _ in runs}:
                break
            assert time.monotonic() < deadline, (
                f"{len(sent - {t for t, _ in runs})} of {len(sent)} insert tasks never ran (idle: {idle})"
            )
            time.sleep(0.1)
        [(status,)] = pipeline.rows("SELECT status FROM scan_sessions WHERE id = %s", session_id)
        assert status == "running", "the twins ran while the session was running"
    assert pipeline.wait_closed(session_id) == "completed"
    for original, twin in twins.items():
        batch = batches[original]["kwargs"]["batch_id"]
        results = [result for task_id, result in runs if task_id in (original, twin)]
        applied = [r for r in results if r.get("inserted")]
        assert len(applied) == 1, f"{batch} applied {len(applied)} times: {results}"
        assert {"session": session_id, "skipped": "already inserted"} in results, results
    assert sum(r.get("inserted", 0) for _, r in runs) == len(expected)
    assert [p for (p,) in pipeline.rows("SELECT path FROM present_tracks ORDER BY path")] == sorted(
        e["path"] for e in expected
    )
    [counts] = pipeline.rows(
        "SELECT extracted, inserted, errors FROM scan_sessions WHERE id = %s", session_id
    )
    assert counts == (len(expected), len(expected), 0)


def insert_runs(text: str) -> list[tuple[str, dict]]:
    """(task id, result) of every insert task that succeeded in this part of the worker's log."""
    return [(task_id, ast.literal_eval(result)) for task_id, result in INSERT_SUCCEEDED.findall(text)]


def insert_worker_idle(broker) -> bool:
    from backend_worker import delivery
    from backend_worker.app import app

    if delivery.queued_task_ids(broker, ["insert"]):
        return False
    name = _consumer_name("insert")
    inspect = app.control.inspect([name], timeout=5)
    active, reserved = inspect.active(), inspect.reserved()
    assert active and reserved, "the insert worker answers"
    return not active[name] and not reserved[name]


def test_extract_json_prints_one_line_per_argument(pipeline, library):
    expected = audio_fixtures.build_library(library, artists=1, albums_per_artist=1, tracks_per_album=2)
    garbage = library / "garbage.mp3"
    garbage.write_bytes(b"this is not audio" * 10)
    args = [expected[0]["path"], str(garbage), str(library / "missing.flac"), expected[1]["path"]]
    proc = pipeline.cli("extract", *args, "--json")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["path"] for line in lines] == args
    assert lines[0]["title"] == expected[0]["title"] and "error" not in lines[0]
    assert lines[1]["error"] and lines[2]["error"] and "title" not in lines[1]


def test_cli_reports_unreachable_services_in_one_line(pipeline, library):
    env_backup = dict(os.environ)
    try:
        os.environ["SONIQUEBAY_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
        proc = pipeline.cli("status", check=False)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1
        assert "cannot use PostgreSQL at postgresql://127.0.0.1:1/none" in proc.stderr
        os.environ.update(env_backup)
        os.environ["SONIQUEBAY_BROKER_URL"] = "redis://:secret@127.0.0.1:1/0"
        proc = pipeline.cli("scan", str(library), check=False)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1
        assert "cannot use the broker at redis://127.0.0.1:1/0" in proc.stderr
        assert "secret" not in proc.stderr
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    assert pipeline.rows("SELECT count(*) FROM scan_sessions") == [(0,)]


def test_scan_without_paths_scans_the_library_roots_setting_and_nothing_else(pipeline, library, monkeypatch):
    roots = [library / "first", library / "second"]
    wanted = []
    for seed, root in enumerate(roots):
        wanted += audio_fixtures.build_library(
            root, artists=1, albums_per_artist=1, tracks_per_album=2, seed=seed
        )
    audio_fixtures.build_library(library / "elsewhere", artists=1, albums_per_artist=1, tracks_per_album=2)
    # Colon-separated, as the deployment writes it: an empty entry and a trailing slash are harmless.
    monkeypatch.setenv("SONIQUEBAY_LIBRARY_ROOTS", f"{roots[1]}/::{roots[0]}")
    session = pipeline.scan()
    assert session["status"] == "completed", session
    assert session["roots"] == [str(root) for root in roots]
    assert session["counts"]["inserted"] == 4
    assert [p for (p,) in pipeline.rows("SELECT path FROM present_tracks ORDER BY path")] == sorted(
        e["path"] for e in wanted
    )
    assert pipeline.rows("SELECT roots FROM scan_sessions") == [([str(root) for root in roots],)]
    # Neither a PATH nor the setting: refused, no session.
    monkeypatch.delenv("SONIQUEBAY_LIBRARY_ROOTS")
    proc = pipeline.cli("scan", check=False)
    assert (proc.returncode, proc.stderr) == (
        1,
        "soniquebay: give at least one folder to scan, or set SONIQUEBAY_LIBRARY_ROOTS\n",
    )
    assert pipeline.rows("SELECT count(*) FROM scan_sessions") == [(1,)]


def test_status_limit_shows_that_many_of_the_newest_sessions(pipeline, library):
    from backend_worker import sessions

    audio_fixtures.build_library(library, artists=1, albums_per_artist=1, tracks_per_album=2)
    # Two older sessions written by the ledger as a scan would (cheaper than two more scans), then a scan.
    ids = [sessions.create_session(pipeline.conn, [str(library)]) for _ in range(2)]
    for older in ids:
        sessions.fail_session(pipeline.conn, older, "an older session")
    ids.append(pipeline.scan(library)["id"])
    newest_two = json.loads(pipeline.cli("status", "--json", "--limit", "2").stdout)["sessions"]
    assert [s["id"] for s in newest_two] == [ids[2], ids[1]]
    by_default = json.loads(pipeline.cli("status", "--json").stdout)["sessions"]
    assert [s["id"] for s in by_default] == ids[::-1]
    library_line, *lines = pipeline.cli("status", "--limit", "1").stdout.splitlines()
    # Artists: the one artist (with its MusicBrainz id), a composer, and the artist again credited as
    # a performer (without an id: artists are keyed by name and id).
    assert library_line == "library: 2 tracks, 0 missing, 1 albums, 3 artists, 1 genres, 0 errors"
    assert len(lines) == 1 and f" {ids[2]} completed " in lines[0], lines


def test_retry_failed_reads_fixed_files_again(pipeline, library):
    expected = audio_fixtures.build_library(library, artists=1, albums_per_artist=1, tracks_per_album=3)
    locked = Path(expected[0]["path"])
    locked.chmod(0)  # the workers run unprivileged: this file cannot be read
    first = pipeline.scan(library)
    assert first["counts"]["errors"] == 1 and first["counts"]["inserted"] == 2
    assert "ermission denied" in pipeline.rows("SELECT reason FROM file_errors")[0][0]
    locked.chmod(0o644)  # the fix does not change the file: a plain rescan leaves it alone
    assert pipeline.scan(library)["counts"]["extracted"] == 0
    proc = pipeline.cli("retry-failed", "--wait", "--json")
    retried = json.loads(proc.stdout.splitlines()[-1])
    assert retried["status"] == "completed" and retried["roots"] == [str(library)]
    assert retried["counts"]["extracted"] == 1 and retried["counts"]["errors"] == 0
    assert pipeline.rows("SELECT count(*) FROM present_tracks") == [(3,)]
    assert pipeline.rows("SELECT count(*) FROM file_errors") == [(0,)]
    assert "no failed files" in pipeline.cli("retry-failed").stdout
