"""Our artists and album artists lists equal beets' mediafile's on beets' own test files, as
they are and after mediafile itself writes multi-valued artists into them (docs/tags.md)."""

from __future__ import annotations

import shutil

import mediafile
import pytest

from backend_worker.stages.extract import ExtractError, read_record
from testkit import beets_files
from testkit.mediafile_parity import split_single_artists

LISTS = ("artists", "albumartists", "mb_artistids", "mb_albumartistids")
FILES = beets_files.audio_files()


def mediafile_lists(path) -> dict:
    """mediafile's lists, normalised only as docs/tags.md says: absent is [], and artists / album
    artists without a multi-valued tag are the single tag split on the separators."""
    mf = mediafile.MediaFile(str(path))
    view = {name: getattr(mf, name) or [] for name in LISTS}
    split_single_artists(mf, view)
    return view


def ours(path) -> dict:
    record = read_record(str(path))
    return {name: record[name] for name in LISTS}


def readable(path) -> bool:
    try:
        mediafile.MediaFile(str(path))
        read_record(str(path))
    except (mediafile.UnreadableFileError, ExtractError):
        return False
    return True


def test_beets_test_files_are_there_in_every_family():
    suffixes = {path.suffix for path in FILES if path.name.startswith("full.")}
    assert suffixes == set(beets_files.AUDIO_SUFFIXES), suffixes
    assert sum(readable(path) for path in FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_artists_lists_equal_mediafiles_on_beets_test_files(path):
    if not readable(path):  # the "unparseable" ones: both refuse them
        with pytest.raises(ExtractError):
            read_record(str(path))
        return
    assert ours(path) == mediafile_lists(path)


FULL = [path for path in FILES if path.name.startswith("full.")]


@pytest.mark.parametrize("path", FULL, ids=[path.name for path in FULL])
def test_multi_valued_artists_written_by_mediafile_read_the_same(tmp_path, path):
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    mf = mediafile.MediaFile(str(copy))
    mf.artists = ["Daft Punk", "Pharrell Williams", "Nile Rodgers"]
    mf.albumartists = ["Daft Punk", "Various"]
    mf.mb_artistids = ["056e4f3e-d505-4dad-8ec1-d04f521cbb56", "149e6720-4e4a-41a4-afca-6d29083fc091",
                       "dc4f3c08-4c7f-4c7c-9c4a-7a2c3f1b0e21"]  # fmt: skip
    mf.save()
    read = ours(copy)
    assert read == mediafile_lists(copy)
    assert read["artists"] == ["Daft Punk", "Pharrell Williams", "Nile Rodgers"]
    assert len(read["mb_artistids"]) == 3
