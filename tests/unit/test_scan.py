"""The scan stage as plain functions, on real folders."""

from __future__ import annotations

import os

from backend_worker.stages import walk


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_finds_audio_by_extension_case_insensitively(tmp_path):
    for name in ("a.mp3", "b.FLAC", "c.Ogg", "d.oga", "e.opus", "f.m4a", "g.mp4", "h.alac", "i.aac",
                 "j.wav", "k.aiff", "l.WMA", "m.ape", "n.wv", "o.mpc", "p.dsf"):  # fmt: skip
        _touch(tmp_path / "x" / name)
    for name in ("cover.jpg", "notes.txt", "mp3", ".mp3.part", "playlist.m3u"):
        _touch(tmp_path / "x" / name)
    found = walk.walk([str(tmp_path)], max_entries=10_000)
    assert sorted(os.path.basename(f.path) for f in found.files) == sorted(
        ["a.mp3", "b.FLAC", "c.Ogg", "d.oga", "e.opus", "f.m4a", "g.mp4", "h.alac", "i.aac",
         "j.wav", "k.aiff", "l.WMA", "m.ape", "n.wv", "o.mpc", "p.dsf"]
    )  # fmt: skip
    assert found.listed_dirs == [str(tmp_path), str(tmp_path / "x")]
    assert found.pending_dirs == []
    f = next(f for f in found.files if f.path.endswith("a.mp3"))
    st = os.stat(f.path)
    assert (f.mtime_ns, f.size, f.dir) == (st.st_mtime_ns, st.st_size, str(tmp_path / "x"))


def test_stops_after_the_entry_budget_and_hands_over_the_rest(tmp_path):
    for artist in range(5):
        for album in range(3):
            _touch(tmp_path / f"artist{artist}" / f"album{album}" / "01.mp3")
    found = walk.walk([str(tmp_path)], max_entries=8)
    walked = set(found.listed_dirs)
    assert found.pending_dirs, "a small budget leaves folders for other tasks"
    assert not walked & set(found.pending_dirs)
    rest = walk.walk(found.pending_dirs, max_entries=10_000)
    all_files = {f.path for f in found.files} | {f.path for f in rest.files}
    assert len(all_files) == 15


def test_survives_symlink_loops_and_reports_them(tmp_path):
    _touch(tmp_path / "a" / "song.mp3")
    os.symlink("..", tmp_path / "a" / "loop")
    os.symlink(str(tmp_path / "a"), tmp_path / "a" / "self")
    found = walk.walk([str(tmp_path)], max_entries=10_000)
    assert [f.path for f in found.files] == [str(tmp_path / "a" / "song.mp3")]
    reasons = {os.path.basename(p): r for p, _, r in found.problems}
    assert reasons == {"loop": "symlink loop, not followed", "self": "symlink loop, not followed"}


def test_follows_symlinked_folders_that_do_not_loop(tmp_path):
    _touch(tmp_path / "elsewhere" / "album" / "song.flac")
    (tmp_path / "lib").mkdir()
    os.symlink(tmp_path / "elsewhere" / "album", tmp_path / "lib" / "album")
    found = walk.walk([str(tmp_path / "lib")], max_entries=10_000)
    assert [f.path for f in found.files] == [str(tmp_path / "lib" / "album" / "song.flac")]


def test_records_names_that_are_not_utf8(tmp_path):
    _touch(tmp_path / "ok.mp3")
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9.mp3")
    with open(bad, "wb") as fh:
        fh.write(b"x")
    found = walk.walk([str(tmp_path)], max_entries=10_000)
    assert [os.path.basename(f.path) for f in found.files] == ["ok.mp3"]
    assert len(found.problems) == 1
    path, folder, reason = found.problems[0]
    assert path.endswith("caf\\xe9.mp3") and folder == str(tmp_path)
    assert "UTF-8" in reason
    path.encode("utf-8")  # storable as text


def test_a_missing_folder_is_a_failed_folder_not_a_crash(tmp_path):
    found = walk.walk([str(tmp_path / "nope")], max_entries=10)
    assert found.failed_dirs and found.failed_dirs[0][0] == str(tmp_path / "nope")
    assert "cannot list folder" in found.failed_dirs[0][1]


def test_compare_sorts_files_into_unchanged_changed_new_and_vanished():
    files = [
        walk.FileStat("/m/a/1.mp3", "/m/a", 100, 10, 1, 11),
        walk.FileStat("/m/a/2.mp3", "/m/a", 200, 20, 1, 12),
        walk.FileStat("/m/a/3.mp3", "/m/a", 300, 30, 1, 13),
        walk.FileStat("/m/a/4.mp3", "/m/a", 400, 40, 1, 14),
        walk.FileStat("/m/a/5.mp3", "/m/a", 500, 50, 1, 15),
        walk.FileStat("/m/a/6.mp3", "/m/a", 600, 60, 1, 16),
        walk.FileStat("/m/a/bad.mp3", "/m/a", 700, 70, 1, 17),
    ]
    known = {
        "/m/a/1.mp3": (100, 10, 1, 11),  # unchanged
        "/m/a/2.mp3": (200, 21, 1, 12),  # changed
        "/m/a/4.mp3": (400, 40, 1, 99),  # unchanged, another inode (a copy put back): refreshed
        "/m/a/5.mp3": (500, 50, walk.MISSING_TRACK, 15),  # missing, back unchanged
        "/m/a/6.mp3": (600, 60, walk.NO_AUDIO_KEY, 16),  # a row of an older release
        "/m/a/bad.mp3": (700, 70, None, None),  # an error record, unchanged: not read again
        "/m/a/gone.mp3": (1, 1, 1, 1),
    }
    plan = walk.compare(files, known)
    assert [f.path for f in plan.changed] == ["/m/a/2.mp3"]
    assert [f.path for f in plan.fresh] == ["/m/a/3.mp3"]
    assert [f.path for f in plan.restat] == ["/m/a/4.mp3", "/m/a/5.mp3", "/m/a/6.mp3"]
    assert plan.unchanged == 5
    assert plan.vanished == ["/m/a/gone.mp3"]


def test_the_walk_records_each_files_device_and_inode(tmp_path):
    (tmp_path / "a.mp3").write_bytes(b"x")
    (found,) = walk.walk([str(tmp_path)], max_entries=10).files
    st = os.stat(tmp_path / "a.mp3")
    assert (found.dev, found.ino, found.size, found.mtime_ns) == (st.st_dev, st.st_ino, 1, st.st_mtime_ns)


def test_chunks_and_split_dirs_keep_order_and_cover_everything():
    items = list(range(1001))
    parts = walk.chunks(items, 250)
    assert [len(p) for p in parts] == [250, 250, 250, 250, 1]
    assert sum(parts, []) == items
    dirs = [f"d{i:02}" for i in range(10)]
    groups = walk.split_dirs(dirs, 4)
    assert [len(g) for g in groups] == [3, 3, 2, 2]
    assert sum(groups, []) == dirs
    assert walk.split_dirs(["only"], 4) == [["only"]]
    assert walk.split_dirs([], 4) == []
