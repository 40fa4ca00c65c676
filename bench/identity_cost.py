"""`python -m bench.identity_cost`: the audio key's CPU cost per file, next to read_record's.

For each format: a handful of real files (testkit seeds of ``--seconds``, tagged as Picard would,
each with other titles), read once to warm the page cache, then ``--calls`` keys and
``--record-calls`` records computed round-robin over them, timed with the process's CPU clock
(user + system: the system calls count). read_record is given the key when it accepts one, so its
column is the rest of extract's work. ``--cover-kb`` also embeds a front cover of that size (the
usual case of a Picard-tagged library: the ID3 tag, the FLAC metadata or the Ogg header pages grow
past the first read). ``--window`` overrides identity.WINDOW to see what the window size costs.

``measure()`` returns the rows for the bench's report.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from backend_worker.stages import identity
from backend_worker.stages.extract import read_record
from testkit import audio_fixtures

FILES_PER_FORMAT = 5


def make_files(fmt: str, folder: Path, *, seconds: float, cover_kb: int) -> list[str]:
    """FILES_PER_FORMAT tagged copies of the ``fmt`` seed."""
    rng = random.Random(fmt)
    cover = None
    if cover_kb:
        cover = audio_fixtures.cover_jpeg(fmt) + rng.randbytes(cover_kb * 1024)
    paths = []
    for index in range(FILES_PER_FORMAT):
        name = f"{fmt}-{index}{audio_fixtures.EXTENSIONS[fmt]}"
        path = audio_fixtures.make_seed(fmt, folder, seconds=seconds, name=name)
        if fmt not in audio_fixtures.UNTAGGABLE:
            tags = dict(audio_fixtures.SAMPLE_TAGS, title=f"Track {index}", track=index + 1)
            if cover:
                tags["cover"] = cover
            audio_fixtures.write_tags(path, tags, replace=True)
        paths.append(str(path))
    return paths


def cpu_per_call(fn, paths: list[str], calls: int) -> float:
    """CPU µs per call of ``fn(path)``, round-robin over ``paths`` (after one warming pass)."""
    for path in paths:
        fn(path)
    rounds = [paths[i % len(paths)] for i in range(calls)]
    started = time.process_time()
    for path in rounds:
        fn(path)
    return (time.process_time() - started) / calls * 1e6


def measure(
    workdir: Path,
    *,
    formats: tuple[str, ...] = audio_fixtures.FORMATS,
    seconds: float = 20.0,
    cover_kb: int = 0,
    calls: int = 2000,
    record_calls: int = 300,
) -> list[dict]:
    """One row per format: {"format", "how", "key_us", "record_us", "ratio"}."""
    rows = []
    for fmt in formats:
        folder = workdir / fmt
        paths = make_files(fmt, folder, seconds=seconds, cover_kb=cover_kb)
        keys = {path: identity.audio_key(path) for path in paths}
        with open(paths[0], "rb") as f:
            how = identity.audio_region(f, os.fstat(f.fileno()).st_size)[2]
        key_us = cpu_per_call(identity.audio_key, paths, calls)

        # Given the key computed above: the column is what read_record does besides.
        def record(path: str, keys: dict = keys) -> dict:
            return read_record(path, audio_key=keys[path])

        record_us = cpu_per_call(record, paths, record_calls)
        rows.append(
            {"format": fmt, "how": how, "key_us": key_us, "record_us": record_us, "ratio": key_us / record_us}
        )
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'format':8} {'rule':6} {'key µs/file':>12} {'read_record µs/file':>20} {'ratio':>7}"]
    for row in rows:
        lines.append(
            f"{row['format']:8} {row['how']:6} {row['key_us']:12.1f} {row['record_us']:20.1f}"
            f" {row['ratio']:7.1%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.identity_cost", description=__doc__)
    parser.add_argument("--formats", default=",".join(audio_fixtures.FORMATS), help="comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each file")
    parser.add_argument("--cover-kb", type=int, default=0, help="embed a cover of this size (KiB)")
    parser.add_argument("--calls", type=int, default=2000, help="keys timed per format")
    parser.add_argument("--record-calls", type=int, default=300, help="read_record calls timed per format")
    parser.add_argument("--window", type=int, default=None, help=f"window size (default {identity.WINDOW})")
    args = parser.parse_args(argv)
    if args.window:
        identity.WINDOW = args.window
    formats = tuple(name.strip() for name in args.formats.split(",") if name.strip())
    unknown = set(formats) - set(audio_fixtures.FORMATS)
    if unknown:
        parser.error(f"unknown formats {sorted(unknown)}; known: {', '.join(audio_fixtures.FORMATS)}")
    cover = f", {args.cover_kb} KiB cover" if args.cover_kb else ""
    print(f"audio key, window {identity.WINDOW} bytes; {args.seconds:g} s files{cover}", flush=True)
    with tempfile.TemporaryDirectory(prefix="identity-cost-") as workdir:
        rows = measure(
            Path(workdir),
            formats=formats,
            seconds=args.seconds,
            cover_kb=args.cover_kb,
            calls=args.calls,
            record_calls=args.record_calls,
        )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
