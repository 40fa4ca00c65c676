"""What the pipeline is measured against: the physical limits (stat, mutagen) and beets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mutagen

from bench.stack import VENV_BIN

# The raw walk, as a standalone program: the "process start included" variant runs it as is.
WALK_SOURCE = """
import os, sys, time
def walk(top):
    n = 0
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    e.stat()
                    n += 1
    return n
if __name__ == "__main__":
    t = time.perf_counter()
    n = walk(sys.argv[1])
    print(n, time.perf_counter() - t)
"""
_walk_ns: dict = {}
exec(compile(WALK_SOURCE, "<raw walk>", "exec"), _walk_ns)


def raw_walk(root: Path, repeat: int = 5) -> dict:
    """os.scandir + stat of every entry, in this process (best of `repeat`), and as a fresh
    `python3` process (start-up included, best of `repeat`)."""
    best = float("inf")
    entries = 0
    for _ in range(repeat):
        started = time.perf_counter()
        entries = _walk_ns["walk"](str(root))
        best = min(best, time.perf_counter() - started)
    best_process = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", WALK_SOURCE, str(root)], check=True, capture_output=True)
        best_process = min(best_process, time.perf_counter() - started)
    return {"entries": entries, "seconds": best, "seconds_with_start": best_process}


def _read_chunk(paths: list[str]) -> int:
    for path in paths:
        mutagen.File(path)
    return len(paths)


def mutagen_loop(paths: list[str], read=mutagen.File) -> dict:
    """One process reading every file with mutagen.File (tags and stream info parsed)."""
    started = time.perf_counter()
    cpu = time.process_time()
    for path in paths:
        read(path)
    seconds = time.perf_counter() - started
    return {
        "files": len(paths),
        "seconds": seconds,
        "cpu_ms_per_file": 1000 * (time.process_time() - cpu) / len(paths),
    }


def read_record_loop(paths: list[str]) -> dict:
    """The same loop through the extract stage's read_record (class by magic or extension, the tag
    table, stream info): what SoniqueBay's reader costs next to a bare mutagen.File."""
    from backend_worker.stages.extract import read_record

    return mutagen_loop(paths, read_record)


POOL_SOURCE = """
import json, multiprocessing, os, sys, time
import mutagen
def chunk(paths):
    for path in paths:
        mutagen.File(path)
    return len(paths)
if __name__ == "__main__":
    paths = open(sys.argv[1]).read().split("\\0")
    size, processes = int(sys.argv[2]), int(sys.argv[3])
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        done = sum(pool.imap_unordered(chunk, [paths[i : i + size] for i in range(0, len(paths), size)]))
    print(json.dumps({"files": done, "seconds": time.perf_counter() - started}))
"""


def mutagen_pool(paths: list[str], processes: int | None = None, chunksize: int = 256) -> dict:
    """multiprocessing.Pool with one process per core, chunks of `chunksize` files, pool start
    included. In a fresh interpreter: forking this one (which holds Celery/kombu connections)
    would run kombu's after-fork clean-up in the children, which can hang on the shared socket."""
    processes = processes or os.cpu_count() or 1
    with tempfile.NamedTemporaryFile("w", suffix=".paths") as listing:
        listing.write("\0".join(paths))
        listing.flush()
        proc = subprocess.run(
            [sys.executable, "-c", POOL_SOURCE, listing.name, str(chunksize), str(processes)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    result = json.loads(proc.stdout)
    return {**result, "processes": processes, "chunksize": chunksize}


BEETS_CONFIG = """\
directory: {dir}/music
library: {dir}/library.db
plugins: []
threaded: yes
import:
  copy: no
  move: no
  write: no
  autotag: no
  quiet: yes
  resume: no
  incremental: no
  log:
"""


def beets_import(album_dirs: list[str], files: int) -> dict:
    """`beet import -A` (no autotag, no copy, no write, quiet) of these album folders into a new
    library; wall time of the command, start-up included."""
    beet = VENV_BIN / "beet"
    if not beet.exists():
        return {"error": "beets is not installed (pip install -e '.[bench]')"}
    workdir = Path(tempfile.mkdtemp(prefix="bench-beets-", dir="/var/tmp"))
    try:
        config = workdir / "config.yaml"
        config.write_text(BEETS_CONFIG.format(dir=workdir))
        env = dict(os.environ, BEETSDIR=str(workdir), HOME=str(workdir))
        started = time.perf_counter()
        proc = subprocess.run(
            [str(beet), "-c", str(config), "import", "-A", "-q", "-C", "-W", *album_dirs],
            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            return {"error": f"beet import exited {proc.returncode}: {proc.stderr[-500:]}"}
        stats = subprocess.run(
            [str(beet), "-c", str(config), "stats"], capture_output=True, text=True, env=env
        ).stdout
        imported = next(
            (int(line.split()[1]) for line in stats.splitlines() if line.startswith("Tracks:")), 0
        )
        return {"files": files, "imported": imported, "seconds": seconds}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
