"""Real encoded audio for tests and benchmarks, one module per thing: seeds (and the cache),
tagging, whole libraries, bad files. Import what you need from here (``from testkit import
audio_fixtures as af``).

- ``make_seed(fmt, dest_dir, seconds=1.0)``: a short untagged file per format (ffmpeg sine;
  mpcenc for Musepack; Monkey's Audio and DSF are written by hand, see ``_ape_bytes`` /
  ``_dsf_bytes``). Seeds are cached in ``cache_dir()`` ($SONIQUEBAY_FIXTURE_CACHE, else
  /var/cache/soniquebay/fixtures) so repeated runs don't re-encode.
- ``write_tags(path, tags, replace=False)``: sets the given fields (beets' names) in each tag
  family's usual shapes (ID3 UFID/TXXX, MP4 freeform, Vorbis comments, APEv2, ASF), leaving the
  others alone unless ``replace``.
- ``build_library(root, ...)``: ``root/<Artist>/<Album>/<NN - Title>.<ext>`` with realistic tags;
  returns the expected record subset per file (EXPECTED_KEYS). ~2,000 files in 3-5 s.
- ``add_bad_files(root)``: the awkward cases as {path: kind}; the kind's prefix ("track:" or
  "error:") is what the pipeline must make of it, ``BAD_FILE_KINDS`` explains each.
"""

from testkit.audio_fixtures.bad_files import (  # noqa: F401
    BAD_FILE_KINDS,
    ODD_TITLES,
    add_bad_files,
)
from testkit.audio_fixtures.libraries import (  # noqa: F401
    EXPECTED_KEYS,
    REPEATED_ALBUM_TITLE,
    STREAM_KEYS,
    VARIOUS_ARTISTS,
    VARIOUS_ARTISTS_MBID,
    build_library,
    expected_tags,
    make_distinct,
)
from testkit.audio_fixtures.seeds import (  # noqa: F401
    _FFMPEG,
    CHANNELS,
    DSF_RATE,
    DSF_SECONDS,
    EXTENSIONS,
    FORMAT_NAMES,
    FORMATS,
    LOSSLESS,
    RECIPE_VERSION,
    SAMPLE_RATE,
    UNTAGGABLE,
    _dsf_bytes,
    _ffmpeg_lavfi,
    cache_dir,
    cached_seed,
    cover_jpeg,
    make_seed,
    seed_seconds,
)
from testkit.audio_fixtures.tagging import (  # noqa: F401
    SAMPLE_TAGS,
    TAG_KEYS,
    write_tags,
)
