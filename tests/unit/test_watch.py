"""soniquebay watch's folder-set and debounce logic, as plain functions."""

from __future__ import annotations

import pytest

from backend_worker.watch import Changes, changed_folders, network_file_system, scan_roots


@pytest.mark.parametrize(
    ("kind", "path", "dest", "is_dir", "expected"),
    [
        ("created", "/m/a/b/1.flac", "", False, {"/m/a/b"}),
        ("modified", "/m/a/b/1.flac", "", False, {"/m/a/b"}),
        ("closed", "/m/a/b/1.flac", "", False, {"/m/a/b"}),
        ("deleted", "/m/a/b/1.flac", "", False, {"/m/a/b"}),
        # A new folder is walked itself; a removed one from its parent.
        ("created", "/m/a/new", "", True, {"/m/a/new"}),
        ("deleted", "/m/a/old", "", True, {"/m/a"}),
        ("moved", "/m/a/1.flac", "/m/b/1.flac", False, {"/m/a", "/m/b"}),
        ("moved", "/m/a/old", "/m/b/new", True, {"/m/a", "/m/b/new"}),
        # A folder's own metadata says nothing about its files.
        ("modified", "/m/a", "", True, set()),
    ],
)
def test_changed_folders(kind, path, dest, is_dir, expected):
    assert changed_folders(kind, path, dest, is_dir) == expected


def test_scan_roots_use_the_nearest_existing_folder_inside_the_library(tmp_path):
    library = tmp_path / "music"
    (library / "artist" / "album").mkdir(parents=True)
    (library / "other").mkdir()
    roots = scan_roots(
        [
            str(library / "artist" / "album"),
            str(library / "artist" / "gone" / "deeper"),  # deleted: walked from artist/
            str(library / "other"),
            str(tmp_path / "elsewhere"),  # not in the library: never scanned
        ],
        [str(library)],
    )
    # artist/album collapses into artist/, which the deleted folder needs walked.
    assert roots == [str(library / "artist"), str(library / "other")]


def test_scan_roots_stop_at_the_library_root(tmp_path):
    library = tmp_path / "music"
    library.mkdir()
    assert scan_roots([str(library / "a" / "b")], [str(library)]) == [str(library)]
    # A library root that is gone itself stays the root (its walk says it is missing).
    assert scan_roots([str(tmp_path / "gone" / "x")], [str(tmp_path / "gone")]) == [str(tmp_path / "gone")]


def test_changes_are_due_after_the_quiet_period():
    changes = Changes(quiet=10, longest=300)
    assert changes.due_in(0) is None
    changes.note({"/m/a"}, now=0)
    changes.note({"/m/b"}, now=4)  # a copy in progress: the period starts again
    assert changes.due_in(10) == pytest.approx(4)
    assert changes.due_in(14) == 0
    assert changes.take() == {"/m/a", "/m/b"}
    assert changes.due_in(14) is None


def test_changes_that_never_stop_are_due_after_the_longest_wait():
    changes = Changes(quiet=10, longest=60)
    for second in range(0, 70, 5):
        changes.note({f"/m/{second}"}, now=second)
        if second < 60:
            assert changes.due_in(second) > 0
    assert changes.due_in(60) == 0


def test_nothing_noted_changes_nothing():
    changes = Changes(quiet=10)
    changes.note(set(), now=5)
    assert changes.due_in(5) is None


def test_folders_put_back_wait_until_not_before():
    changes = Changes(quiet=10, longest=60)
    changes.note({"/m/a"}, now=0)
    taken = changes.take()
    changes.put_back(taken, not_before=105)  # busy: try again later
    assert changes.due_in(100) == pytest.approx(5)
    assert changes.due_in(105) == 0
    # New changes meanwhile wait for their own quiet period.
    changes.note({"/m/b"}, now=104)
    assert changes.due_in(105) == pytest.approx(9)
    assert changes.take() == {"/m/a", "/m/b"}


def test_network_file_systems_are_recognised(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /srv/music rw,relatime shared:20 - nfs4 nas:/music rw,vers=4.2\n"
        "41 22 0:51 / /srv/local\\040music rw,relatime shared:21 - xfs /dev/sdb1 rw\n"
    )
    assert network_file_system("/srv/music/artist", str(mountinfo)) == "nfs4"
    assert network_file_system("/srv/music", str(mountinfo)) == "nfs4"
    assert network_file_system("/srv/musical", str(mountinfo)) is None  # ext4, not below /srv/music
    assert network_file_system("/srv/local music/a", str(mountinfo)) is None
    assert network_file_system("/home", str(tmp_path / "missing")) is None
