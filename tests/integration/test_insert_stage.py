"""Insert stage and record buffer against a real PostgreSQL (no workers needed)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from backend_worker import ledger, pipeline, record_buffer, sessions
from backend_worker.stages import fields, insert
from testkit import services

pytestmark = pytest.mark.integration


def record(path, **tags):
    base = dict.fromkeys(fields.RECORD_KEYS)  # unknown, but for these
    base.update(
        {
            "path": path, "size": 1000, "mtime": 1.5, "mtime_ns": 1_500_000_000,
            "title": "T", "artist": "Artist", "album": "Album", "genres": [], "year": 2001, "track": 1,
            "tracktotal": 10, "disc": 1, "disctotal": 1, "comp": False, "length": 6.0,
            "bitrate": 128000, "samplerate": 44100, "channels": 2, "format": "MP3", "has_cover": False,
        }
    )  # fmt: skip
    base.update(tags)
    return base


def counts(conn):
    return conn.execute(
        "SELECT (SELECT count(*) FROM tracks), (SELECT count(*) FROM albums), "
        "(SELECT count(*) FROM artists), (SELECT count(*) FROM genres), (SELECT count(*) FROM track_genres)"
    ).fetchone()


def upsert(conn, records):
    with conn.transaction():
        return insert.upsert_records(conn, records, None)


def test_the_same_batch_twice_duplicates_nothing(db_conn):
    rid = str(uuid.uuid4())
    batch = [
        record("/m/a/1.mp3", genres=["Rock", "Pop"], mb_trackid=rid, rg_track_gain=-6.5),
        record("/m/a/2.mp3", track=2, genres=["Rock"]),
        record("/m/b/1.mp3", album="Other", artist="Someone"),
    ]
    assert upsert(db_conn, batch) == 3
    first = counts(db_conn)
    assert first == (3, 2, 2, 2, 3)
    ids = db_conn.execute("SELECT path, id FROM tracks ORDER BY path").fetchall()
    assert upsert(db_conn, batch) == 3
    assert counts(db_conn) == first
    assert db_conn.execute("SELECT path, id FROM tracks ORDER BY path").fetchall() == ids
    row = db_conn.execute(
        "SELECT mb_trackid::text, rg_track_gain, year FROM tracks WHERE path = '/m/a/1.mp3'"
    ).fetchone()
    assert row == (rid, -6.5, 2001)
    genres = db_conn.execute(
        "SELECT g.name FROM track_genres tg JOIN genres g ON g.id = tg.genre_id "
        "JOIN tracks t ON t.id = tg.track_id WHERE t.path = '/m/a/1.mp3' ORDER BY tg.position"
    ).fetchall()
    assert genres == [("Rock",), ("Pop",)]


def test_the_paths_already_stored_are_found_whatever_their_folder(db_conn):
    upsert(db_conn, [record("/m/a/1.mp3"), record("/m/a/2.mp3"), record("/m/b/1.mp3")])
    asked = ["/m/a/1.mp3", "/m/a/3.mp3", "/m/b/1.mp3", "/m/c/1.mp3", "/m/a/1.mp3/x.mp3"]
    with db_conn.cursor() as cur:
        assert insert._known_paths(cur, asked) == {"/m/a/1.mp3": False, "/m/b/1.mp3": False}
        assert insert._known_paths(cur, ["/m/new/1.mp3", "/m/new/2.mp3"]) == {}
    # What the stage does with them: known paths updated in place, new ones added.
    before = dict(db_conn.execute("SELECT path, id FROM tracks").fetchall())
    upsert(db_conn, [record(p, title="Again") for p in asked])
    after = dict(db_conn.execute("SELECT path, id FROM tracks").fetchall())
    assert {p: after[p] for p in before} == before and len(after) == 6


def test_a_batch_probes_the_library_by_index_after_a_small_start(db_conn, postgres):
    """psycopg prepares a connection's statements from their 5th run, and PostgreSQL then keeps a
    generic plan. One made while the library held a few rows (a first scan, or a small folder
    tried first) would hash a whole table at every batch of that connection as the library grows."""
    for batch in range(12):  # past psycopg's and PostgreSQL's thresholds, on a tiny table
        upsert(db_conn, [record(f"/m/first/{batch}/{i}.mp3") for i in range(3)])
    with psycopg.connect(postgres.url, autocommit=True) as other:  # other workers fill the library
        bulk = [
            record(f"/m/bulk/{i // 10}/{i}.mp3", artist=f"A{i // 10}", album=f"B{i}") for i in range(20_000)
        ]
        upsert(other, bulk)
    # This backend's scans not yet sent to the shared statistics; none are sent mid-transaction.
    sequential_scans = (
        "SELECT relname, seq_scan FROM pg_stat_xact_user_tables "
        "WHERE relname IN ('tracks', 'albums', 'artists') ORDER BY 1"
    )
    with db_conn.transaction():
        before = db_conn.execute(sequential_scans).fetchall()
        insert.upsert_records(db_conn, [record(f"/m/next/{i}.mp3", album="Next") for i in range(50)], None)
        insert.upsert_records(db_conn, [record("/m/bulk/7/70.mp3", title="Changed")], None)
        after = db_conn.execute(sequential_scans).fetchall()
    assert after == before
    assert db_conn.execute("SELECT title FROM tracks WHERE path = '/m/bulk/7/70.mp3'").fetchone() == (
        "Changed",
    )


def test_keys_follow_the_music_not_the_names(db_conn):
    same_recording = str(uuid.uuid4())
    upsert(
        db_conn,
        [
            # Two files of one recording are two tracks.
            record("/m/x/1.flac", mb_trackid=same_recording),
            record("/m/y/1.mp3", mb_trackid=same_recording),
            # Same artist name, different MusicBrainz artists.
            record("/m/z/1.mp3", artist="Nirvana", mb_artistid=str(uuid.uuid4()), album="A"),
            record("/m/z/2.mp3", artist="Nirvana", mb_artistid=str(uuid.uuid4()), album="B"),
            # One album title used by two artists.
            record("/m/w/1.mp3", artist="P", album="Greatest Hits"),
            record("/m/w/2.mp3", artist="Q", album="Greatest Hits"),
            # A compilation: one album, many track artists.
            record("/m/v/1.mp3", artist="R", albumartist="Various Artists", album="Hits 1", comp=True),
            record("/m/v/2.mp3", artist="S", albumartist="Various Artists", album="Hits 1", comp=True),
        ],
    )
    twins = db_conn.execute("SELECT count(*) FROM tracks WHERE mb_trackid = %s", (same_recording,))
    assert twins.fetchone() == (2,)
    assert db_conn.execute("SELECT count(*) FROM artists WHERE name = 'Nirvana'").fetchone() == (2,)
    assert db_conn.execute("SELECT count(*) FROM albums WHERE title = 'Greatest Hits'").fetchone() == (2,)
    comp = db_conn.execute(
        "SELECT count(*), bool_and(a.comp), count(DISTINCT t.artist_id) FROM albums a "
        "JOIN tracks t ON t.album_id = a.id WHERE a.title = 'Hits 1'"
    ).fetchone()
    assert comp == (2, True, 2)


def test_a_changed_file_moves_and_orphans_are_removed(db_conn):
    upsert(db_conn, [record("/m/a/1.mp3", album="Old", genres=["Jazz"])])
    upsert(db_conn, [record("/m/a/1.mp3", album="New", genres=["Blues"], mtime_ns=2)])
    with db_conn.transaction():
        insert.remove_orphans(db_conn)
    assert db_conn.execute("SELECT title FROM albums").fetchall() == [("New",)]
    assert db_conn.execute("SELECT name FROM genres").fetchall() == [("Blues",)]
    with db_conn.transaction():
        assert insert.remove_tracks(db_conn, ["/m/a/1.mp3"]) == 1
        insert.remove_orphans(db_conn)
    assert counts(db_conn) == (0, 0, 0, 0, 0)
    assert dangling(db_conn) == (0, 0, 0)


def dangling(conn):
    return conn.execute(services.DANGLING_REFERENCES_SQL).fetchone()


def waits_for_the_commit(url: str, holder_tx, waiter, work, what: str) -> None:
    """`work`, run on the connection `waiter` in a thread, waits on a lock (PostgreSQL says so)
    while `holder_tx` is open, and goes through once it commits."""
    import threading
    import time

    import psycopg

    done, failed = threading.Event(), []

    def run():
        try:
            work()
        except BaseException as exc:  # reported below, in the test's thread
            failed.append(exc)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + 10
        while not watcher.execute(waiting, (waiter.info.backend_pid,)).fetchone()[0]:
            assert not done.is_set(), f"{what} went ahead"
            assert time.monotonic() < deadline, f"{what} never waited for the lock"
            time.sleep(0.02)
    holder_tx.__exit__(None, None, None)  # commit
    assert done.wait(10) and not failed, failed
    thread.join()


def test_a_clean_up_waits_for_a_batch_in_flight_and_a_batch_for_a_clean_up(db_conn):
    """A batch that found its album (no track points at it yet) and a clean-up that would delete
    it as an orphan: the library lock orders them, so no track points at a removed album or artist,
    whichever starts first."""
    import psycopg

    url = db_conn.info.dsn
    # The batch first: the clean-up waits for its commit, then finds the album in use.
    upsert(db_conn, [record("/m/a/1.mp3", album="Kept"), record("/m/b/1.mp3", album="Gone")])
    with psycopg.connect(url) as batch, psycopg.connect(url) as cleanup:
        with cleanup.transaction():
            insert.remove_tracks(cleanup, ["/m/a/1.mp3"])  # "Kept" is now an orphan ...
        batch_tx = batch.transaction()
        batch_tx.__enter__()
        insert.upsert_records(batch, [record("/m/c/1.mp3", album="Kept", genres=["Jazz"])], None)

        def clean_up():
            with cleanup.transaction():
                insert.remove_orphans(cleanup)

        waits_for_the_commit(url, batch_tx, cleanup, clean_up, "the clean-up, while a batch was writing,")
    assert sorted(r[0] for r in db_conn.execute("SELECT title FROM albums")) == ["Gone", "Kept"]
    assert dangling(db_conn) == (0, 0, 0)

    # The clean-up first: the batch waits for its commit, then writes the artist it removed again.
    with psycopg.connect(url) as batch, psycopg.connect(url) as cleanup:
        cleanup_tx = cleanup.transaction()
        cleanup_tx.__enter__()
        insert.remove_tracks(cleanup, ["/m/b/1.mp3", "/m/c/1.mp3"])
        insert.remove_orphans(cleanup)

        def write():
            with batch.transaction():
                insert.upsert_records(batch, [record("/m/d/1.mp3", album="Kept", genres=["Jazz"])], None)

        waits_for_the_commit(url, cleanup_tx, batch, write, "a batch, while the clean-up was removing,")
    assert counts(db_conn) == (1, 1, 1, 1, 1)
    assert dangling(db_conn) == (0, 0, 0)


def test_buffer_groups_chunks_into_batches_and_ignores_redelivered_chunks(db_conn):
    with db_conn.transaction():
        session = sessions.create_session(db_conn, ["/m"])
        for i in range(7):
            chunk = [record(f"/m/{i:02}/{n}.mp3") for n in range(30)]
            assert record_buffer.buffer_records(db_conn, session, f"x{i}", chunk)
        assert not record_buffer.buffer_records(db_conn, session, "x3", [record("/m/03/0.mp3")])
        # 210 rows in chunks of 30, target 100: one batch of 120; the 90-row rest waits (no flush).
        batches = [b.id for b in record_buffer.cut_batches(db_conn, session, 100, flush=False)]
    assert len(batches) == 1
    assert ledger.pending(db_conn, session).unbatched == 3
    with db_conn.transaction():
        rest = record_buffer.cut_batches(db_conn, session, 100, flush=True)
    assert len(rest) == 1 and ledger.pending(db_conn, session).unbatched == 0
    assert ledger.pending(db_conn, session).inserts == 2
    with db_conn.transaction():
        taken = record_buffer.take_batch(db_conn, session, batches[0])
    assert [r["path"] for r in taken][:2] == ["/m/00/0.mp3", "/m/00/1.mp3"]
    assert len(taken) == 120
    with db_conn.transaction():
        assert record_buffer.take_batch(db_conn, session, batches[0]) == []


def test_buffered_chunks_and_unit_messages_are_compressed_with_lz4(db_conn):
    # The server compresses them (migration 0007); extract no longer does.
    with db_conn.transaction():
        session = sessions.create_session(db_conn, ["/m"])
        record_buffer.buffer_records(db_conn, session, "x0", [record(f"/m/a/{n}.mp3") for n in range(200)])
        paths = [f"/m/a/{n:04}.mp3" for n in range(1000)]
        ledger.register_units(db_conn, session, [pipeline.extract_chunk(session, "walk:0", 0, paths)])
    stored = db_conn.execute(
        "SELECT (SELECT pg_column_compression(payload) FROM record_buffer WHERE unit_id = 'x0'), "
        "(SELECT pg_column_compression(message) FROM scan_units WHERE unit_id = 'walk:0/x0')"
    ).fetchone()
    assert stored == ("lz4", "lz4")
    with db_conn.transaction():
        (batch,) = record_buffer.cut_batches(db_conn, session, 100, flush=True)
        assert len(record_buffer.take_batch(db_conn, session, batch.id)) == 200


def test_unit_counts_are_counted_once(db_conn):
    with db_conn.transaction():
        session = sessions.create_session(db_conn, ["/m"])
        ledger.register_units(db_conn, session, [pipeline.Unit("walk:0", "walk")])
        ledger.register_units(db_conn, session, [pipeline.Unit("walk:0", "walk")])
        assert ledger.finish_unit(db_conn, session, "walk:0", {"discovered": 5, "unchanged": 2})
        assert not ledger.finish_unit(db_conn, session, "walk:0", {"discovered": 5, "unchanged": 2})
    assert ledger.progress(db_conn, session) == {
        "discovered": 5, "unchanged": 2, "extracted": 0, "inserted": 0, "errors": 0,
        "moved": 0, "returned": 0, "missing": 0, "purged": 0,
    }  # fmt: skip
    assert ledger.pending(db_conn, session).upstream == 0
    with db_conn.transaction():
        assert sessions.close_session(db_conn, session, "completed")
        assert not sessions.close_session(db_conn, session, "failed")
    row = db_conn.execute("SELECT status, discovered, ended_at IS NOT NULL FROM scan_sessions").fetchone()
    assert row == ("completed", 5, True)


def test_numbers_no_column_can_hold_are_stored_as_unknown(db_conn):
    upsert(db_conn, [record("/m/a/1.flac", year=99_999_999_999, track=-(2**40), bpm=120)])
    row = db_conn.execute("SELECT year, track, bpm FROM tracks").fetchone()
    assert row == (None, None, 120)


def test_one_bad_record_does_not_sink_its_batch(db_conn):
    """A record the database refuses is recorded as an error; the rest of its batch is stored."""
    from backend_worker.units.insert import insert_one_by_one

    with db_conn.transaction():
        session = sessions.create_session(db_conn, ["/m"])
        good = [record(f"/m/a/{n}.mp3", track=n) for n in range(5)]
        poisoned = record("/m/a/bad.mp3", mb_trackid="not-a-uuid")
        record_buffer.buffer_records(db_conn, session, "x0", [*good[:2], poisoned, *good[2:]])
        (batch_id,) = [b.id for b in record_buffer.cut_batches(db_conn, session, 100, flush=True)]
    assert insert_one_by_one(session, batch_id) == 5
    assert [p for (p,) in db_conn.execute("SELECT path FROM tracks ORDER BY path")] == sorted(
        r["path"] for r in good
    )
    (reason,) = db_conn.execute("SELECT reason FROM file_errors WHERE path = '/m/a/bad.mp3'").fetchone()
    assert reason.startswith("cannot store: InvalidTextRepresentation")
    assert ledger.progress(db_conn, session)["inserted"] == 5
    assert ledger.progress(db_conn, session)["errors"] == 1
    assert insert_one_by_one(session, batch_id) == 0, "a second run finds the batch done"


def cut_one_batch(conn, session_id: str, chunk: str) -> pipeline.Unit:
    with conn.transaction():
        ledger.register_units(conn, session_id, [pipeline.Unit(chunk, "collect")])
        record_buffer.buffer_records(conn, session_id, chunk, [{"path": f"/m/{chunk}.mp3"}])
        ledger.finish_unit(conn, session_id, chunk, {})
        (batch,) = record_buffer.cut_batches(conn, session_id, 100, flush=True)
    return batch


def test_an_insert_batch_is_sent_once_whichever_task_sends_it(db_conn):
    """The task that cut a batch and another task's `advance` both find it unsent: the one that
    claims it sends it, the other sends nothing (both used to send it, under one task id). A send
    the broker refuses leaves the batch for the next task to send."""
    from backend_worker.units import handoff

    session = sessions.create_session(db_conn, ["/m"])
    batch = cut_one_batch(db_conn, session, "x0/c")
    sent: list[tuple] = []

    def send(task: str, kwargs: dict, task_id: str) -> None:
        sent.append((task, kwargs, task_id))

    handoff.advance(send, session)  # another task finished first and found the batch unsent
    assert handoff.send_unsent(send, session, "insert", [batch.id]) == 0, "the cutter finds it claimed"
    assert sent == [("insert.records", batch.kwargs, batch.task_id)]

    def refused(task: str, kwargs: dict, task_id: str) -> None:
        raise ConnectionError("the broker is down")

    second = cut_one_batch(db_conn, session, "x1/c")
    with pytest.raises(ConnectionError):
        handoff.send_unsent(refused, session, "insert", [second.id])
    handoff.advance(send, session)
    assert sent[1:] == [("insert.records", second.kwargs, second.task_id)]
    handoff.advance(send, session)
    assert len(sent) == 2, "sent once each"
