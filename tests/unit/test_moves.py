"""Who a file at a new path was (backend_worker.stages.moves), on real files."""

from __future__ import annotations

import os

from backend_worker.stages import moves, walk


def track(id_, path, *, dev=1, ino=10, size=100, mtime_ns=5, key="k", missing=False):
    return moves.Candidate(id_, str(path), dev, ino, size, mtime_ns, key, missing)


def evidence(path, *, dev=1, ino=10, size=100, mtime_ns=5):
    return (str(path), dev, ino, size, mtime_ns)


def test_a_track_whose_path_names_nothing_moves_one_whose_file_is_there_stays(tmp_path):
    still_there = tmp_path / "present.mp3"
    still_there.write_bytes(b"x")
    gone, new, copy = tmp_path / "gone.mp3", tmp_path / "new.mp3", tmp_path / "copy.mp3"
    found = moves.match(
        [evidence(new), evidence(copy)],
        {str(new): [track(1, gone)], str(copy): [track(2, still_there)]},
    )
    assert found == [moves.Move(track(1, gone), str(new), 1, 10, 100, 5, True)]
    # A file in a folder that is now a file, or a path with a NUL: gone, never a crash.
    assert moves.is_gone(track(3, still_there / "below.mp3"))
    assert not moves.is_gone(track(4, still_there))
    assert moves.is_gone(track(5, still_there, missing=True))


def test_each_track_moves_once_and_the_same_file_name_wins(tmp_path):
    first, second = tmp_path / "x" / "01 Song.mp3", tmp_path / "y" / "01 Other.mp3"
    a = track(1, tmp_path / "old" / "01 Other.mp3")
    b = track(2, tmp_path / "old" / "01 Song.mp3", size=99)  # retagged since: not the same file
    found = moves.match(
        [evidence(first), evidence(second)], {str(first): [a, b], str(second): [a, b]}, gone=lambda t: True
    )
    assert [(m.path, m.track.id, m.same_file) for m in found] == [
        (str(first), 2, False),
        (str(second), 1, True),
    ]
    # Two files for one gone track: the first takes it, the other is a new track.
    (only,) = moves.match(
        [evidence(first), evidence(second)], {str(first): [a], str(second): [a]}, lambda t: True
    )
    assert only.path == str(first)


def test_an_inode_counts_only_with_the_same_size_and_time():
    files = [
        walk.FileStat("/n/1.mp3", "/n", 5, 100, 1, 10),
        walk.FileStat("/n/2.mp3", "/n", 5, 101, 1, 11),  # inode reused by a new file
        walk.FileStat("/n/3.mp3", "/n", 5, 100, 2, 10),  # same inode number, another device
    ]
    tracks = [track(1, "/o/1.mp3", ino=10), track(2, "/o/2.mp3", ino=11)]
    assert moves.by_inode(files, tracks) == {"/n/1.mp3": [tracks[0]]}


def test_audio_keys_pair_files_with_the_tracks_of_their_audio(tmp_path):
    tracks = [track(1, "/o/1.mp3", key="aa"), track(2, "/o/2.mp3", key="aa"), track(3, "/o/3.mp3", key="bb")]
    assert moves.by_audio_key({"/n/1.mp3": "aa", "/n/2.mp3": "cc"}, tracks) == {"/n/1.mp3": tracks[:2]}
    song = tmp_path / "song.mp3"
    song.write_bytes(b"ID3" + bytes(200))
    keys = moves.audio_keys([str(song), str(tmp_path / "nothing.mp3")])
    assert list(keys) == [str(song)] and len(keys[str(song)]) == 36
    st = os.stat(song)
    assert moves.file_identity(st) == (st.st_dev, st.st_ino)
