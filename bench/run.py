"""`python -m bench`: every measurement in one run, then the table, the plot and the note."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench import baselines, library, report, stack

DEFAULT_FILES = 20_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--files", type=int, default=DEFAULT_FILES, help="library size (multiple of 100)")
    parser.add_argument(
        "--beets-files", type=int, default=2000, help="files beets imports (whole artists, from the start)"
    )
    parser.add_argument("--rescans", type=int, default=5, help="unchanged rescans (median and best)")
    parser.add_argument("--ingests", type=int, default=2, help="full ingests into an emptied library (best)")
    parser.add_argument("--no-beets", action="store_true", help="skip beets")
    parser.add_argument(
        "--scale-copies",
        type=int,
        default=10,
        help="also ingest and rescan this many hard-linked copies of the library at once (0: skip)",
    )
    parser.add_argument(
        "--no-previous", action="store_true", help="skip the previous layout (every pool prefork)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument(
        "--testhost",
        action="store_true",
        help="also deploy to the systemd test host (testkit/testhost.py) and time the scans there",
    )
    parser.add_argument("--results", type=Path, default=None, help="also write the raw results as JSON here")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/soniquebay-bench"))
    return parser.parse_args(argv)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_before": load,
    }


def ensure_bench_deps() -> None:
    """beets and matplotlib come from the `bench` extra; install it when missing."""
    import importlib.util
    import subprocess

    missing = [m for m in ("beets", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"installing the bench extra ({', '.join(missing)} missing) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-e", f"{stack.REPO}[bench]"], check=True
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("the bench starts PostgreSQL as the postgres user: run it as root")
    ensure_bench_deps()
    results: dict = {"machine": machine(), "files": args.files, "started": time.strftime("%Y-%m-%d %H:%M")}
    started, pressure_before = time.time(), _cpu_pressure_total()
    print(f"SoniqueBay bench: {args.files} files on {results['machine']['cores']} cores", flush=True)

    source = library.cached_library(args.files)
    additions_count = max(100, round(args.files * 0.01 / 100) * 100)
    additions = library.cached_additions(additions_count)
    workdir = args.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    workdir.chmod(0o755)
    root = library.working_copy(source, workdir / "music")
    paths = library.audio_files(root)
    library.warm(root)
    results["library"] = {
        "files": len(paths),
        "bytes": sum(os.path.getsize(p) for p in paths),
        "albums": sum(1 for p in paths if os.path.basename(p).startswith(("01 -", "1-01 -"))),
    }

    # --- the physical limits ------------------------------------------------------------------
    print("raw walk ...", flush=True)
    results["raw_walk"] = baselines.raw_walk(root)
    print(f"  {results['raw_walk']}", flush=True)
    print("raw mutagen, one process ...", flush=True)
    results["mutagen_loop"] = baselines.mutagen_loop(paths)
    print(f"  {results['mutagen_loop']}", flush=True)
    print("read_record (the extract stage's reader), one process ...", flush=True)
    results["read_record_loop"] = baselines.read_record_loop(paths)
    ratio = results["read_record_loop"]["seconds"] / results["mutagen_loop"]["seconds"]
    print(f"  {results['read_record_loop']}: {ratio:.2f}x raw mutagen", flush=True)
    pools = []

    def pool_run() -> None:
        print("raw mutagen, a pool with one process per core ...", flush=True)
        pools.append(baselines.mutagen_pool(paths))
        print(f"  {pools[-1]}", flush=True)

    pool_run()

    # --- the pipeline ---------------------------------------------------------------------------
    stack_services = stack.Services(workdir)
    redis, postgres, covers, message_dir = (
        stack_services.redis,
        stack_services.postgres,
        stack_services.covers,
        stack_services.message_dir,
    )
    env, empty_library = stack_services.env, stack_services.empty_library
    from bench import insertbench, pipeline

    layout = stack.Layout(stack.deployment_layout(), workdir / "logs", env)
    results["layout"] = [pool.__dict__ for pool in layout.pools]
    import psycopg

    try:
        stack_services.start()
        if not args.no_previous:
            results["previous"] = _previous_layout(layout, env, workdir, message_dir, postgres, redis, root)
            empty_library()
        layout.start()
        results["workers_ready_seconds"] = layout.wait_ready()
        scanner = pipeline.Scanner(env, layout, message_dir, postgres.postmaster_pid(), redis.proc.pid)
        sampler = pipeline.Sampler(layout)
        time.sleep(3)
        rss, pss, procs = sampler.measure()
        results["memory_idle"] = {"rss": rss, "pss": pss, "processes": procs}
        print(f"workers up in {results['workers_ready_seconds']:.1f} s: {procs} processes, "
              f"RSS {rss / 2**20:.0f} MiB, PSS {pss / 2**20:.0f} MiB", flush=True)  # fmt: skip

        ingests = []
        for i in range(args.ingests):
            empty_library()
            # Moved aside, not deleted: creating files right after deleting thousands costs ext4
            # a scan past the recently freed inodes, which is this bench's doing, not the ingest's.
            covers.rename(workdir / f"covers-{i}")
            covers.mkdir()
            print(f"full ingest {i + 1}/{args.ingests} ...", flush=True)
            # Memory is sampled in the first ingest only: a sample costs ~40 ms of CPU, several
            # percent of a 20,000-file ingest, and the peak is the same in every run.
            run = scanner.scan(root, sample_memory=i == 0)
            print(f"  {run['seconds']:.2f} s, {run['session']['counts']}", flush=True)
            ingests.append(run)
            # The raw pool again, between ingests: both sides of each ratio see the same load.
            pool_run()
        best = min(ingests, key=lambda r: r["seconds"])
        best["all_seconds"] = [r["seconds"] for r in ingests]
        best["peak_rss"] = max(r["peak_rss"] for r in ingests if "peak_rss" in r)
        best["peak_pss"] = max(r["peak_pss"] for r in ingests if "peak_pss" in r)
        results["ingest"] = best
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            results["ingest"]["library"] = dict(
                zip(
                    ("tracks", "albums", "artists", "genres", "covers"),
                    conn.execute(
                        "SELECT (SELECT count(*) FROM tracks), (SELECT count(*) FROM albums), "
                        "(SELECT count(*) FROM artists), (SELECT count(*) FROM genres), "
                        "(SELECT count(*) FROM albums WHERE cover_hash IS NOT NULL)"
                    ).fetchone(),
                    strict=True,
                )
            )
        time.sleep(2)
        rss, pss, procs = sampler.measure()
        results["memory_after"] = {"rss": rss, "pss": pss, "processes": procs}
        results["memory_after_by_unit"] = sampler.per_unit()

        print("unchanged rescans ...", flush=True)
        results["rescan"] = _rescans(scanner, root, postgres.url, args.rescans)

        print(
            "identity: the library renamed at its top folder, and the first rescan after 0008 ...", flush=True
        )
        results["identity"] = _identity(scanner, root, postgres.url, results["rescan"])

        print("small-change rescan ...", flush=True)
        results["small_change"] = _small_change(scanner, root, additions)

        print("insert stage vs COPY ...", flush=True)
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            records = insertbench.records_from_library(conn)
        from backend_worker.config import settings

        results["insert"] = insertbench.run(postgres.url, records, settings().insert_batch_rows)
        print(f"  {results['insert']}", flush=True)

        if args.scale_copies:
            big = library.copies(source, workdir / "scale", args.scale_copies)
            results["scale"] = _at_scale(big, scanner, empty_library, postgres.url, args.rescans)
    finally:
        layout.stop()
        stack_services.stop()

    print("audio key per file, by format ...", flush=True)
    from bench import identity_cost

    results["audio_key"] = identity_cost.measure(workdir / "keys", calls=1000, record_calls=200)

    if not args.no_beets:
        dirs, count = _beets_subset(source, args.beets_files)
        print(f"beets import -A of {count} files ...", flush=True)
        results["beets"] = baselines.beets_import(dirs, count)
        print(f"  {results['beets']}", flush=True)

    if args.testhost:
        from bench import testhost_run

        results["testhost"] = testhost_run.run(source, additions, args)

    results["mutagen_pool"] = min(pools, key=lambda p: p["seconds"])
    results["mutagen_pool_all"] = [p["seconds"] for p in pools]
    shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load_after"] = os.getloadavg()[0]
    pressure = _cpu_pressure_total()
    if pressure is not None and pressure_before is not None:
        results["machine"]["cpu_pressure"] = (
            100 * (pressure - pressure_before) / 1e6 / (time.time() - started)
        )
    if args.results:
        args.results.write_text(json.dumps(results, indent=1, default=str))
    print()
    print(report.tables(results))
    if not args.no_write:
        report.write(results)
    return 0


def _previous_layout(layout, env, workdir, message_dir, postgres, redis, root) -> dict:
    """The same layout with every pool prefork and no per-pool max tasks per child (what shipped
    before; this version's code otherwise, gc.freeze after the warm-up included): one full
    ingest, then the memory of each unit, idle after it. Same machine, same run."""
    from dataclasses import replace

    from bench import pipeline

    previous = stack.Layout(
        [replace(p, pool="prefork", max_tasks_per_child=None) for p in layout.pools],
        workdir / "logs-previous",
        env,
    )
    try:
        previous.start()
        previous.wait_ready()
        scanner = pipeline.Scanner(env, previous, message_dir, postgres.postmaster_pid(), redis.proc.pid)
        print("previous layout (every pool prefork): full ingest ...", flush=True)
        run = scanner.scan(root, sample_memory=True)
        print(f"  {run['seconds']:.2f} s", flush=True)
        time.sleep(2)
        sampler = pipeline.Sampler(previous)
        by_unit = sampler.per_unit()
        total = {k: sum(u[k] for u in by_unit.values()) for k in ("processes", "pss", "rss")}
        print(f"  idle after: {total['processes']} processes, PSS {total['pss'] / 2**20:.0f} MiB", flush=True)
        return {
            "layout": [p.__dict__ for p in previous.pools],
            "ingest_seconds": run["seconds"],
            "peak_pss": run["peak_pss"],
            "peak_rss": run["peak_rss"],
            "memory_after_by_unit": by_unit,
        }
    finally:
        previous.stop()


def _at_scale(root: Path, scanner, empty_library, database_url: str, rescans: int) -> dict:
    """Full ingest and unchanged rescans of `root` (hard-linked copies: every path new, one copy of
    the data in the page cache), with the raw baselines on the same files."""

    paths = library.audio_files(root)  # the data is in the page cache already: the same inodes
    out: dict = {"files": len(paths)}
    print(f"at scale: {len(paths):,} files: raw walk ...", flush=True)
    out["raw_walk"] = baselines.raw_walk(root)
    print(f"  {out['raw_walk']}", flush=True)
    # Two ingests, each after a raw pool run: the best of each, as the 20,000-file part does. The
    # first samples memory every 5 s (each sample costs ~40 ms of CPU), the second not at all.
    pools, ingests = [], []
    for i in range(2):
        pools.append(baselines.mutagen_pool(paths))
        print(f"  raw mutagen pool: {pools[-1]}", flush=True)
        empty_library()
        print(f"  full ingest {i + 1}/2 ...", flush=True)
        run = scanner.scan(root, sample_memory=i == 0, memory_interval=5.0)
        run.pop("memory_samples", None)
        print(f"  {run['seconds']:.2f} s, {run['session']['counts']}", flush=True)
        ingests.append(run)
    out["mutagen_pool"] = min(pools, key=lambda p: p["seconds"])
    out["mutagen_pool_all"] = [p["seconds"] for p in pools]
    ingest = min(ingests, key=lambda r: r["seconds"])
    ingest["all_seconds"] = [r["seconds"] for r in ingests]
    ingest["peak_rss"], ingest["peak_pss"] = ingests[0]["peak_rss"], ingests[0]["peak_pss"]
    out["ingest"] = ingest
    out["rescan"] = _rescans(scanner, root, database_url, rescans)
    return out


def _small_change(scanner, root: Path, additions: Path) -> dict:
    """Some files rewritten, deleted and added (bench.library.small_change), then one rescan."""
    changes = library.small_change(root, additions)
    change = scanner.scan(root)
    change["changes"] = changes
    print(f"  {change['seconds']:.2f} s {change['session']['counts']} ({changes})", flush=True)
    return change


def _rescans(scanner, root: Path, database_url: str, count: int) -> dict:
    """VACUUM ANALYZE (what autovacuum does soon after a big ingest), then `count` unchanged rescans."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    runs = [scanner.scan(root) for _ in range(count)]
    for r in runs:
        print(f"  {r['seconds']:.3f} s {r['session']['counts']}", flush=True)
    return {
        "median": statistics.median(r["seconds"] for r in runs),
        "best": min(r["seconds"] for r in runs),
        "all": [r["seconds"] for r in runs],
        "session_seconds": [_session_seconds(r["session"]) for r in runs],
        "counts": runs[-1]["session"]["counts"],
        "messages": runs[-1]["messages"],
        "cpu": runs[-1]["cpu"],
    }


def _identity(scanner, root: Path, database_url: str, rescan: dict) -> dict:
    """What a track's identity costs a rescan (docs/architecture.md, "A track's identity"):
    - the library's top folder renamed (every file at a new path, moved by its inode, nothing read),
      then renamed back: each rescan against the unchanged rescan's median (target <= 3x);
    - the first rescan after migration 0008 on a library of the release before (no device, inode or
      audio key stored: the walk stores them, reading each file's key), against the same median."""
    import psycopg

    out: dict = {"unchanged_median": rescan["median"]}
    renamed = root.with_name(root.name + "-renamed")
    moves = []
    for source, target in ((root, renamed), (renamed, root)):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE tracks")  # what autovacuum does within a minute of a big change
        source.rename(target)
        run = scanner.scan(target)
        counts = run["session"]["counts"]
        print(f"  renamed: {run['seconds']:.3f} s {counts}", flush=True)
        moves.append({"seconds": run["seconds"], "counts": counts, "cpu": run["cpu"]})
    out["rename"] = moves
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE tracks SET dev = NULL, ino = NULL, audio_key = NULL")
        conn.execute("VACUUM ANALYZE tracks")
    run = scanner.scan(root)
    print(f"  first rescan after the upgrade: {run['seconds']:.3f} s {run['session']['counts']}", flush=True)
    out["after_upgrade"] = {"seconds": run["seconds"], "counts": run["session"]["counts"], "cpu": run["cpu"]}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE tracks")
    return out


def _cpu_pressure_total() -> int | None:
    """Microseconds some runnable task waited for a CPU (Linux PSI), or None."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _session_seconds(session: dict) -> float:
    from datetime import datetime

    return (
        datetime.fromisoformat(session["ended_at"]) - datetime.fromisoformat(session["started_at"])
    ).total_seconds()


def _beets_subset(root: Path, files: int) -> tuple[list[str], int]:
    """Whole album folders, in sorted order, until `files` files."""
    dirs, count = [], 0
    for artist in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "Added"):
        for album in sorted(p for p in artist.iterdir() if p.is_dir()):
            n = len([f for f in os.listdir(album) if f.rsplit(".", 1)[-1] in library.FORMATS])
            dirs.append(str(album))
            count += n
            if count >= files:
                return dirs, count
    return dirs, count
