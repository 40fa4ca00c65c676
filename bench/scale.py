"""`python -m bench.scale` (`make bench-scale`): one million files on this machine's two cores.

The library is the 20,000-file bench library hard-linked 50 times into sibling folders (every path
new to the database, the audio once in the page cache), on the stack `make bench` runs (private
Redis, durable PostgreSQL, the shipped worker layout as plain processes). In one run, side by side:
the full ingest against raw mutagen Pool(2) on the same files, the unchanged rescan against a raw
stat walk, a rescan after a 1% change, `soniquebay status`, what PostgreSQL and Redis hold per
million files, the workers' and PostgreSQL's memory, `soniquebay watch` starting on the library
(time, inotify watches, memory), and the same ingest with one plain `celery worker` per queue
(prefork, concurrency 2): where the shipped layout loses time against it. Prints a table and
rewrites the "1,000,000 files" section of docs/performance.md (between its `bench:million` markers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import baselines, library, report, stack
from bench.run import _rescans, _small_change, ensure_bench_deps, machine

# The layout issue 32 compares with: one plain worker per queue, prefork, concurrency 2, Celery's
# default prefetch multiplier.
PLAIN_LAYOUT = [
    stack.Pool(queue, 1, 2, 4, "prefork") for queue in ("scan", "extract", "batch", "insert", "deferred")
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--files", type=int, default=20_000, help="size of the library copied (multiple of 100)"
    )
    parser.add_argument(
        "--copies", type=int, default=50, help="hard-linked copies of it (50: 1,000,000 files)"
    )
    parser.add_argument("--rescans", type=int, default=3, help="unchanged rescans (median)")
    parser.add_argument(
        "--no-plain", action="store_true", help="skip the ingest with one plain worker per queue"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--results", type=Path, default=None, help="also write the raw results as JSON here")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/soniquebay-bench-scale"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("the bench starts PostgreSQL as the postgres user: run it as root")
    ensure_bench_deps()
    r: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M")}
    r["base_files"], r["copies"] = args.files, args.copies
    source = library.cached_library(args.files)
    total = args.files * args.copies
    additions = library.cached_additions(max(100, round(total * 0.01 / 100) * 100))
    workdir = args.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    workdir.chmod(0o755)
    print(f"SoniqueBay at scale: {args.copies} copies of {args.files:,} files ...", flush=True)
    root = library.copies(source, workdir / "music", args.copies)
    library.warm(root / "copy-1")  # the other copies are the same inodes
    paths = library.audio_files(root)
    r["files"] = len(paths)
    r["folders"] = sum(1 for _ in os.walk(root))

    print(f"{len(paths):,} files in {r['folders']:,} folders: raw walk ...", flush=True)
    r["raw_walk"] = baselines.raw_walk(root, repeat=3)
    print(f"  {r['raw_walk']}", flush=True)
    pools = [_pool(paths)]

    services = stack.Services(workdir)
    from bench import pipeline

    layout = stack.Layout(stack.deployment_layout(), workdir / "logs", services.env)
    r["layout"] = [p.__dict__ for p in layout.pools]
    try:
        services.start()
        r["sizes_empty"] = _sizes(services)
        layout.start()
        layout.wait_ready()
        postgres_pids = _postgres_pids(services.postgres.postmaster_pid())
        scanner = pipeline.Scanner(
            services.env, layout, services.message_dir, postgres_pids()[0], services.redis.proc.pid
        )
        workers = pipeline.Sampler(layout)
        time.sleep(3)
        r["memory_idle"] = dict(zip(("rss", "pss", "processes"), workers.measure(), strict=True))
        r["memory_idle_by_unit"] = workers.per_unit()
        r["postgres_idle_pss"] = pipeline.Sampler(layout, pids=postgres_pids).measure()[1]

        print("full ingest (memory sampled every 5 s) ...", flush=True)
        postgres_memory = pipeline.Sampler(layout, 5.0, pids=postgres_pids)
        postgres_memory.start()
        ingest = scanner.scan(root, sample_memory=True, memory_interval=5.0)
        postgres_memory.stop()
        ingest.pop("memory_samples", None)
        ingest["postgres_peak_pss"] = postgres_memory.peak_pss
        print(f"  {ingest['seconds']:.1f} s, {ingest['session']['counts']}", flush=True)
        r["ingest"] = ingest
        pools.append(_pool(paths))
        time.sleep(3)
        r["memory_after"] = dict(zip(("rss", "pss", "processes"), workers.measure(), strict=True))
        r["memory_after_by_unit"] = workers.per_unit()
        r["sizes_after_ingest"] = _sizes(services)

        print("soniquebay status ...", flush=True)
        r["status"] = _status(services.env)
        print(f"  {r['status']}", flush=True)

        print("unchanged rescans ...", flush=True)
        r["rescan"] = _rescans(scanner, root, services.postgres.url, args.rescans)
        print("1% of the files changed, 1% deleted, 1% added: one rescan ...", flush=True)
        r["small_change"] = _small_change(scanner, root, additions)
        r["sizes_after_rescans"] = _sizes(services)

        print("soniquebay watch on the library ...", flush=True)
        r["watch"] = _watch(root, services.env)
        print(f"  {r['watch']}", flush=True)

        if not args.no_plain:
            layout.stop()
            plain = stack.Layout(PLAIN_LAYOUT, workdir / "logs-plain", services.env)
            layout = plain  # stopped in `finally`
            plain.start()
            plain.wait_ready()
            services.empty_library()
            print("full ingest with one plain prefork worker per queue (-c 2) ...", flush=True)
            plain_scanner = pipeline.Scanner(
                services.env, plain, services.message_dir, postgres_pids()[0], services.redis.proc.pid
            )
            shutil.rmtree(services.covers)
            services.covers.mkdir()
            run = plain_scanner.scan(root, sample_memory=True, memory_interval=5.0)
            run.pop("memory_samples", None)
            run["layout"] = [p.__dict__ for p in PLAIN_LAYOUT]
            print(f"  {run['seconds']:.1f} s, {run['session']['counts']}", flush=True)
            r["plain"] = run
            pools.append(_pool(library.audio_files(root)))  # the files after the change
    finally:
        layout.stop()
        services.stop()
    r["mutagen_pool"] = min(pools, key=lambda p: p["seconds"])
    r["mutagen_pool_all"] = [p["seconds"] for p in pools]
    shutil.rmtree(workdir, ignore_errors=True)
    r["machine"]["load_after"] = os.getloadavg()[0]
    if args.results:
        args.results.write_text(json.dumps(r, indent=1, default=str))
    body = million_markdown(r)
    print()
    print(body)
    if not args.no_write:
        text = report.DOC.read_text()
        report.DOC.write_text(report.replace_section(text, "million", body))
        print(f"wrote {report.DOC.relative_to(stack.REPO)}")
    return 0


def _pool(paths: list[str]) -> dict:
    print("raw mutagen, Pool(2) ...", flush=True)
    result = baselines.mutagen_pool(paths)
    print(f"  {result}", flush=True)
    return result


def _postgres_pids(postmaster: int):
    return lambda: [postmaster, *stack.children(postmaster)]


def _sizes(services: stack.Services) -> dict:
    """Bytes on disk of the database and of each relation with its indexes and TOAST, and what the
    broker holds."""
    import psycopg
    import redis

    with psycopg.connect(services.postgres.url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # row counts for pg_class
        database = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        relations = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid), c.reltuples::bigint "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'm') AND n.nspname = 'public' ORDER BY 2 DESC"
        ).fetchall()
    info = redis.Redis.from_url(services.redis.admin_url).info()
    return {
        "database": database,
        "relations": [
            {"name": n, "bytes": size, "index_bytes": idx, "rows": max(rows, 0)}
            for n, size, idx, rows in relations
        ],
        "redis_used_memory": info["used_memory"],
        "redis_keys": sum(
            v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict)
        ),
    }


def _status(env: dict[str, str], runs: int = 3) -> dict:
    """Wall time of `soniquebay status` (process start included), and of its --json form."""
    out = {}
    for name, extra in (("text", []), ("json", ["--json"])):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([str(stack.VENV_BIN / "soniquebay"), "status", *extra], env=env, check=True,
                           capture_output=True)  # fmt: skip
            times.append(time.perf_counter() - started)
        out[name] = {"median": statistics.median(times), "all": times}
    return out


def _watch(root: Path, env: dict[str, str], timeout: float = 1800) -> dict:
    """Start `soniquebay watch` on the library: seconds until it says what it watches, the inotify
    watches it holds then (/proc/PID/fdinfo), its memory, and the system's limit."""
    proc = subprocess.Popen(
        [str(stack.VENV_BIN / "soniquebay"), "watch"],
        env={**env, "SONIQUEBAY_LIBRARY_ROOTS": str(root)}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        line = ""
        while "watching" not in line:
            line = proc.stderr.readline()
            if not line or time.perf_counter() - started > timeout:
                raise RuntimeError(f"soniquebay watch did not start: {line!r} (exit {proc.poll()})")
        seconds = time.perf_counter() - started
        watches = 0
        for fd in os.listdir(f"/proc/{proc.pid}/fdinfo"):
            with contextlib.suppress(OSError):  # a descriptor closed meanwhile
                watches += Path(f"/proc/{proc.pid}/fdinfo/{fd}").read_text().count("inotify wd:")
        return {
            "seconds": seconds,
            "line": line.strip()[:200],
            "watches": watches,
            "pss": stack.pss_bytes(proc.pid),
            "rss": stack.rss_bytes(proc.pid),
            "max_user_watches": int(Path("/proc/sys/fs/inotify/max_user_watches").read_text()),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _per_million(value: float, files: int) -> float:
    return value * 1_000_000 / files


def million_markdown(r: dict) -> str:
    files, ing, pool, walk, resc = r["files"], r["ingest"], r["mutagen_pool"], r["raw_walk"], r["rescan"]
    mib = report.mib
    rate = files / ing["seconds"]
    pool_rate = pool["files"] / pool["seconds"]
    change, status, watch = r["small_change"], r["status"], r["watch"]
    units = sum(p["units"] for p in r["layout"])
    empty = r["sizes_empty"]["database"]
    status_text, status_json = status["text"]["median"], status["json"]["median"]
    rows = [
        f"Run of {r['started']}: {files:,} files in {r['folders']:,} folders (the {r['base_files']:,}-file "
        f"bench library hard-linked {r['copies']} times), the shipped layout ({units} units), "
        f"{r['machine']['cores']} cores, {r['machine']['cpu']}.",
        "",
        "| measure | SoniqueBay | reference | ratio | target | holds |",
        "|---|---|---|---:|---|---|",
        _row("full ingest", f"{ing['seconds']:.0f} s = **{rate:,.0f} files/s**",
             f"raw mutagen, Pool({pool['processes']}): {pool['seconds']:.0f} s = {pool_rate:,.0f} files/s",
             rate / pool_rate, ">= 0.9x", rate / pool_rate >= 0.9),
        _row("unchanged rescan", f"median **{resc['median']:.1f} s** (best {resc['best']:.1f} s)",
             f"raw `os.scandir` + `stat` walk: {walk['seconds']:.1f} s", resc["median"] / walk["seconds"],
             "<= 2x", resc["median"] / walk["seconds"] <= 2),
        _row("rescan after a change (1% rewritten, 1% deleted, 1% added)", f"{change['seconds']:.1f} s",
             f"unchanged rescan: {resc['median']:.1f} s", change["seconds"] / resc["median"], "<= 3x",
             change["seconds"] / resc["median"] <= 3),
        _row("`soniquebay status`", f"median {status_text:.2f} s (`--json` {status_json:.2f} s)",
             "", None, "< 1 s", max(status_text, status_json) < 1),
        _row("workers' memory, peak during the ingest (every 5 s)",
             f"PSS {mib(ing['peak_pss'])} (RSS {mib(ing['peak_rss'])})",
             "budget 1,000 MiB", None, "", ing["peak_pss"] <= 1000 * 2**20),
        _row("workers' memory, idle after the ingest", f"PSS {mib(r['memory_after']['pss'])}",
             f"budget 800 MiB (idle before it: {mib(r['memory_idle']['pss'])})", None, "",
             r["memory_after"]["pss"] <= 800 * 2**20),
        _row("PostgreSQL's memory, peak during the ingest", f"PSS {mib(ing['postgres_peak_pss'])}",
             f"idle before: {mib(r['postgres_idle_pss'])}", None, "", None),
        _row("`soniquebay watch` start", f"{watch['seconds']:.1f} s, {watch['watches']:,} inotify watches, "
             f"PSS {mib(watch['pss'])}",
             f"{r['folders']:,} folders; max_user_watches {watch['max_user_watches']:,}",
             None, "", None),
    ]  # fmt: skip
    plain = r.get("plain")
    if plain:
        plain_rate = files / plain["seconds"]
        rows.append(
            _row("full ingest, one plain prefork worker per queue (-c 2)",
                 f"{plain['seconds']:.0f} s = {plain_rate:,.0f} files/s, peak PSS {mib(plain['peak_pss'])}",
                 f"raw mutagen, Pool({pool['processes']})", plain_rate / pool_rate, "", None)
        )  # fmt: skip
    rows += [
        "",
        "Every raw pool run: "
        + ", ".join(f"{s:.0f}" for s in r["mutagen_pool_all"])
        + " s (the fastest is the "
        "reference). Every unchanged rescan: " + ", ".join(f"{s:.1f}" for s in resc["all"]) + " s. "
        f"The change: {change['changes']}, counts {change['session']['counts']}.",
        "",
        "CPU seconds of each part of the stack during the ingest"
        + (" (shipped layout | one plain worker per queue):" if plain else ":"),
        "",
        "| part | shipped | plain |" if plain else "| part | shipped |",
        "|---|---:|---:|" if plain else "|---|---:|",
    ]
    for part in sorted(set(ing["cpu"]) | set(plain["cpu"] if plain else ())):
        cells = [f"{ing['cpu'].get(part, 0):.0f}"] + ([f"{plain['cpu'].get(part, 0):.0f}"] if plain else [])
        rows.append(f"| {part} | " + " | ".join(cells) + " |")
    by_unit = ing.get("peak_pss_by_unit")
    if by_unit:
        rows += [
            "",
            "Memory of each unit (PSS, MiB; a unit's processes summed):",
            "",
            "| unit | idle before the ingest | peak during it | idle after it |",
            "|---|---:|---:|---:|",
        ]
        for name in by_unit:
            idle, after = r["memory_idle_by_unit"].get(name, {}), r["memory_after_by_unit"].get(name, {})
            rows.append(f"| {name} | {idle.get('pss', 0) / 2**20:,.0f} | {by_unit[name] / 2**20:,.0f} "
                        f"| {after.get('pss', 0) / 2**20:,.0f} |")  # fmt: skip
    for label, sizes in (
        ("after the ingest", r["sizes_after_ingest"]),
        ("after the rescans", r["sizes_after_rescans"]),
    ):
        rows += [
            "",
            f"What the stores hold {label}: PostgreSQL database {mib(sizes['database'])} "
            f"({mib(_per_million(sizes['database'] - empty, files))} per million files, the empty "
            f"schema's {mib(empty)} aside); "
            f"Redis {mib(sizes['redis_used_memory'])} in {sizes['redis_keys']:,} keys.",
            "",
            "| relation | rows | size with indexes | of which indexes | per million files |",
            "|---|---:|---:|---:|---:|",
        ]
        rows += [
            f"| {rel['name']} | {rel['rows']:,} | {mib(rel['bytes'])} | {mib(rel['index_bytes'])} "
            f"| {mib(_per_million(rel['bytes'], files))} |"
            for rel in sizes["relations"]
            if rel["bytes"] >= 1 << 20
        ]
    return "\n".join(rows) + "\n"


def _row(measure: str, ours: str, reference: str, ratio: float | None, target: str, ok: bool | None) -> str:
    verdict = "" if ok is None else ("**yes**" if ok else "**no**")
    shown = "" if ratio is None else f"{ratio:.2f}x"
    return f"| {measure} | {ours} | {reference} | {shown} | {target} | {verdict} |"


if __name__ == "__main__":
    sys.exit(main())
