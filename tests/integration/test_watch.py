"""`soniquebay watch` for real: its own process on real inotify, real files copied, written and
deleted under the library, the suite's real workers scanning what it starts. The quiet period is
the shipped default (10 s): the latencies asserted are the ones an operator gets."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from backend_worker import sessions
from testkit import audio_fixtures, services
from testkit.stack import wait_count, write_slowly

pytestmark = pytest.mark.integration

LATENCY = 30  # seconds from a change on disk to the library showing it (the README's promise)


class Watch:
    """`soniquebay watch` run as the workers' unprivileged user, its log in a file; or with at most
    `max_watches` inotify watches (in a user namespace of its own, whose limit it sets)."""

    def __init__(self, roots: list[Path], log: Path, max_watches: int | None = None):
        self.log = log
        command = str(services.VENV_BIN / "soniquebay")
        if max_watches is None:
            argv = ["setpriv", f"--reuid={services.WORKER_USER}", "--regid=nogroup", "--clear-groups",
                    command, "watch"]  # fmt: skip
        else:
            limit = f"echo {max_watches} > /proc/sys/user/max_inotify_watches && exec {command} watch"
            argv = ["unshare", "--user", "--map-root-user", "sh", "-c", limit]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env={**os.environ, "SONIQUEBAY_LIBRARY_ROOTS": ":".join(map(str, roots))},
                cwd="/", stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.wait_logged("INFO watching ")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_logged(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return self.text()
            assert self.proc.poll() is None, f"soniquebay watch exited {self.proc.returncode}:\n{self.text()}"
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not logged after {timeout} s:\n{self.text()}")

    def stop(self) -> None:
        services.stop_process_groups([self.proc])


@pytest.fixture()
def watch(pipeline, library, tmp_path):
    watches = []

    def start(*roots: Path, max_watches: int | None = None) -> Watch:
        log = tmp_path / f"watch-{len(watches)}.log"
        watches.append(Watch(list(roots or [library]), log, max_watches))
        return watches[-1]

    yield start
    for started in watches:
        started.stop()


def staged(tmp_path: Path, name: str, **layout) -> tuple[Path, list[dict]]:
    """An album built outside the library, ready to be copied in."""
    staging = tmp_path / "staging" / name
    expected = audio_fixtures.build_library(staging, **layout)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path / "staging")], check=True)
    return staging, expected


def tracks_under(pipeline, folder: Path) -> int:
    prefix = str(folder) + "/"
    return pipeline.rows("SELECT count(*) FROM present_tracks WHERE starts_with(path, %s)", prefix)[0][0]


def wait_tracks(pipeline, folder: Path, count: int, timeout: float) -> float:
    """Seconds until the library holds `count` tracks under folder; fails at the deadline."""
    return wait_count(lambda: tracks_under(pipeline, folder), count, timeout, f"tracks under {folder}")


def watch_sessions(pipeline, timeout: float = 60) -> list[tuple]:
    """(roots, status, extracted, errors, missing) of the watch's sessions, once none is running."""
    deadline = time.monotonic() + timeout
    while True:
        sessions = pipeline.rows(
            "SELECT roots, status, extracted, errors, missing FROM scan_sessions WHERE origin = 'watch' "
            "ORDER BY started_at"
        )
        if all(status != "running" for _, status, *_ in sessions):
            return sessions
        assert time.monotonic() < deadline, f"watch sessions still running after {timeout} s: {sessions}"
        time.sleep(0.2)


def test_a_folder_copied_in_is_imported_renamed_with_its_ids_and_its_deletion_seen_with_nobody_scanning(
    pipeline, library, watch, tmp_path
):
    kept, _ = staged(tmp_path, "kept", artists=1, albums_per_artist=1, tracks_per_album=3)
    shutil.copytree(kept, library / "kept")
    stale, _ = staged(tmp_path, "stale", artists=1, albums_per_artist=1, tracks_per_album=2)
    shutil.copytree(stale, library / "stale")
    assert pipeline.scan(library)["counts"]["inserted"] == 5
    # Gone while nothing watched: only a scan of library/ (or of stale/) may remove its tracks.
    shutil.rmtree(library / "stale")
    watch()
    album, expected = staged(tmp_path, "new", artists=1, albums_per_artist=1, tracks_per_album=10)
    assert len(expected) == 10
    shutil.copytree(album, library / "incoming")
    seconds = wait_tracks(pipeline, library / "incoming", 10, timeout=LATENCY)
    print(f"10 files copied in: in the library after {seconds:.1f} s")
    (roots, status, extracted, errors, missing), *more = watch_sessions(pipeline)
    assert more == [] and status == "completed", watch_sessions(pipeline)
    assert roots == [str(library / "incoming")]
    assert (extracted, errors, missing) == (10, 0, 0)
    # A session over a few folders never removes tracks outside them.
    assert tracks_under(pipeline, library / "stale") == 2 and tracks_under(pipeline, library / "kept") == 3
    # origin shows in `soniquebay status`.
    newest = pipeline.cli("status", "--limit", "1").stdout.splitlines()[1]
    assert " completed watch " in newest, newest

    # A rename: the tracks follow their files to the new paths, ids kept, nothing read again.
    ids = (
        "SELECT id, path, album_id, artist_id FROM present_tracks "
        "WHERE path ~ '/(incoming|renamed)/' ORDER BY id"
    )
    before = pipeline.rows(ids)
    assert len(before) == 10
    (library / "incoming").rename(library / "renamed")
    seconds = wait_tracks(pipeline, library / "renamed", 10, timeout=LATENCY)
    print(f"the folder renamed: its tracks at their new paths after {seconds:.1f} s")
    watch_sessions(pipeline)
    assert tracks_under(pipeline, library / "incoming") == 0
    moved = [(i, p.replace("/incoming/", "/renamed/"), album, artist) for i, p, album, artist in before]
    assert pipeline.rows(ids) == moved
    [(extracted, moved_count)] = pipeline.rows(
        "SELECT extracted, moved FROM scan_sessions WHERE origin = 'watch' ORDER BY started_at DESC LIMIT 1"
    )
    assert (extracted, moved_count) == (0, 10)

    shutil.rmtree(library / "renamed")
    seconds = wait_tracks(pipeline, library / "renamed", 0, timeout=LATENCY)
    print(f"the folder deleted: out of the library after {seconds:.1f} s")
    assert tracks_under(pipeline, library / "kept") == 3
    # Deleted folders are walked from the nearest folder that still exists: here the library root.
    assert watch_sessions(pipeline)[-1][0] == [str(library)]


def test_a_file_written_slowly_is_imported_once_and_complete(pipeline, library, watch, tmp_path):
    album, (expected,) = staged(
        tmp_path, "slow", artists=1, albums_per_artist=1, tracks_per_album=1, formats=("mp3",), seconds=20
    )
    source = Path(expected["path"])
    data = source.read_bytes()
    watch()
    target = library / "slow" / source.name
    target.parent.mkdir()
    write_slowly(target, data, seconds=20)
    final = target.stat()
    wait_tracks(pipeline, library / "slow", 1, timeout=LATENCY)
    time.sleep(12)  # a second session (the file read early, then again) would have started by now
    sessions = watch_sessions(pipeline)
    assert [(extracted, errors) for _, _, extracted, errors, _ in sessions] == [(1, 0)], sessions
    ((size, mtime_ns, title, length),) = pipeline.rows(
        "SELECT size, mtime_ns, title, length FROM present_tracks"
    )
    assert (size, mtime_ns) == (final.st_size, final.st_mtime_ns)
    assert title == expected["title"]
    assert length == pytest.approx(20, abs=0.5)
    assert pipeline.rows("SELECT path, reason FROM file_errors") == []


def test_a_burst_of_a_thousand_files_makes_few_sessions(pipeline, library, watch, tmp_path):
    album, expected = staged(
        tmp_path, "burst", artists=1, albums_per_artist=1, tracks_per_album=1, formats=("flac",), seconds=0.5
    )
    tree = tmp_path / "staging" / "tree"
    for folder in range(40):  # 40 folders of 25 files: a box set being copied
        (tree / f"disc {folder:02d}").mkdir(parents=True)
        for track in range(25):
            os.link(expected[0]["path"], tree / f"disc {folder:02d}" / f"{track:02d}.flac")
    watch()
    # 40 new folders side by side: without the quiet period each would start its own session.
    subprocess.run(["cp", "-r", f"{tree}/.", str(library)], check=True)
    wait_tracks(pipeline, library, 1000, timeout=180)
    sessions = watch_sessions(pipeline)
    assert 1 <= len(sessions) <= 2, sessions
    assert sum(extracted for _, _, extracted, _, _ in sessions) == 1000


def test_changes_under_a_running_session_wait_for_it_to_end(pipeline, library, watch, tmp_path):
    running = sessions.create_session(pipeline.conn, [str(library)])  # a scan of the whole library
    album, _ = staged(tmp_path, "late", artists=1, albums_per_artist=1, tracks_per_album=2)
    started = watch()
    shutil.copytree(album, library / "late")
    started.wait_logged(f"waiting for the running session that scans {library / 'late'}", timeout=LATENCY)
    assert watch_sessions(pipeline) == []
    sessions.fail_session(pipeline.conn, running, "ended by the test")
    wait_tracks(pipeline, library / "late", 2, timeout=LATENCY)
    assert [s[0] for s in watch_sessions(pipeline)] == [[str(library / "late")]]


def test_a_library_root_that_appears_later_is_watched_then(pipeline, library, watch, tmp_path):
    missing = library / "not yet mounted"
    started = watch(missing)
    text = started.wait_logged("cannot watch")
    assert f"cannot watch {missing}: it is not a folder (not mounted?); watching it once it is one" in text
    missing.mkdir()
    started.wait_logged(f"watching {missing} again", timeout=60)  # checked every 30 s
    album, _ = staged(tmp_path, "mounted", artists=1, albums_per_artist=1, tracks_per_album=2)
    shutil.copytree(album, missing / "album")
    wait_tracks(pipeline, missing / "album", 2, timeout=LATENCY)


def test_a_root_with_more_folders_than_inotify_may_watch_is_named_and_the_others_watched(
    pipeline, library, watch, tmp_path
):
    big, small = library / "a big root", library / "b small root"
    for folder in range(30):
        (big / f"folder {folder}").mkdir(parents=True)
    small.mkdir()
    started = watch(big, small, max_watches=20)
    text = started.wait_logged(f"INFO watching {small}")
    assert (
        f"ERROR cannot watch {big}: it has more folders than inotify may watch "
        "(fs.inotify.max_user_watches); raise it (`sysctl -w fs.inotify.max_user_watches=1048576`"
    ) in text, text
    # It keeps running, and the root it could watch is followed (the refused one's watches freed).
    album, _ = staged(tmp_path, "fits", artists=1, albums_per_artist=1, tracks_per_album=2)
    shutil.copytree(album, small / "album")
    wait_tracks(pipeline, small / "album", 2, timeout=LATENCY)
    assert started.proc.poll() is None


def test_a_timer_scan_leaves_roots_of_a_running_session_alone(pipeline, library, tmp_path):
    """What soniquebay-scan.service runs: `soniquebay scan --origin timer --skip-busy`."""
    album, _ = staged(tmp_path, "timer", artists=1, albums_per_artist=1, tracks_per_album=2)
    shutil.copytree(album, library / "album")
    running = sessions.create_session(pipeline.conn, [str(library / "album")])  # a watch session, say
    env_roots = {"SONIQUEBAY_LIBRARY_ROOTS": str(library)}
    skipped = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), "scan", "--origin", "timer", "--skip-busy"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env_roots},
    )  # fmt: skip
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stderr == f"{library}: session {running} is already scanning it; not scanning it again\n"
    assert pipeline.rows("SELECT count(*) FROM scan_sessions")[0][0] == 1
    sessions.fail_session(pipeline.conn, running, "ended by the test")
    scanned = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), "scan", "--origin", "timer", "--skip-busy", "--wait"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env_roots},
    )  # fmt: skip
    assert scanned.returncode == 0, scanned.stderr
    assert pipeline.rows("SELECT origin, status, inserted FROM scan_sessions WHERE id <> %s", running) == [
        ("timer", "completed", 2)
    ]
