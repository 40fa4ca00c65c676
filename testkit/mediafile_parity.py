"""beets' mediafile read the way docs/tags.md says ours differs from it, for the parity tests
(tests/unit/test_fixtures_parity.py, tests/unit/test_beets_files_parity.py)."""

from __future__ import annotations

from backend_worker.stages import tags


def split_single_artists(mf, view: dict) -> None:
    """Artists / album artists without a multi-valued tag: mediafile has none, we split the single
    tag on the separators. `view` (mediafile's values by field) gets ours."""
    for name, single in (("artists", mf.artist), ("albumartists", mf.albumartist)):
        if not view[name] and single:
            view[name] = tags.name_splitter().split(single)
