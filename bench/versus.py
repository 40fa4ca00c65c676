"""`python -m bench.versus --against REV`: this code against another commit (a release before) on
the same files, in interleaved pairs.

This machine's speed drifts by up to 30% within an hour, so two `make bench` runs an hour apart
cannot tell a 5% change. Here each side runs in turn (REV, this code, REV, this code, ...), each
run on a fresh durable PostgreSQL (and an emptied Redis) with the shipped worker layout, and each
ingest next to a raw mutagen Pool(2) run on the same files: the ratios of one pair saw the same
machine. The stack's CPU seconds, printed with each run, are steadier than the ratios.

The workers, the CLI and the schema of a side come from its own tree (PYTHONPATH, its migrations);
the harness (services, layout, timing) is this tree's. The library is this tree's bench library,
hard-linked `--copies` times (10: the 200,000 files of `make bench`'s scale part).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench import baselines, library, stack
from testkit import services


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__)
    parser.add_argument("--against", required=True, help="the other side: a commit, tag or branch")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--files", type=int, default=20_000, help="the bench library's size")
    parser.add_argument("--copies", type=int, default=10, help="hard-linked copies ingested at once")
    parser.add_argument("--results", type=Path, default=None, help="also write every run as JSON here")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/soniquebay-versus"))
    return parser.parse_args(argv)


_WORKTREE = ["git", "-C", str(stack.REPO), "worktree"]


def checkout(rev: str, dest: Path) -> tuple[Path, str]:
    """A detached worktree of `rev` at dest (replaced if there); returns it and the commit."""
    commit = subprocess.run(
        ["git", "-C", str(stack.REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    remove_checkout(dest)
    subprocess.run([*_WORKTREE, "add", "--detach", "-f", str(dest), commit], check=True, capture_output=True)
    return dest, commit


def remove_checkout(dest: Path) -> None:
    subprocess.run([*_WORKTREE, "remove", "--force", str(dest)], capture_output=True)
    shutil.rmtree(dest, ignore_errors=True)


def one_run(
    tree: Path, root: Path, paths: list[str], workdir: Path, redis: services.Redis, pg_port: int
) -> dict:
    """A raw pool run, then one full ingest of root by the code of `tree` on a fresh PostgreSQL
    (on the same port every run) and the emptied Redis (one server for every run: this process's
    Celery app, which pings the workers, keeps its connections)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pool = baselines.mutagen_pool(paths)
    subprocess.run(["redis-cli", "-u", redis.admin_url, "FLUSHALL"], check=True, capture_output=True)
    postgres = services.Postgres(workdir / "postgres", pg_port, durable=True)
    covers, message_dir = workdir / "covers", workdir / "messages"
    env = {**stack.env_for(redis.url, postgres.url, covers, message_dir), "PYTHONPATH": str(tree)}
    # Before anything builds the Celery app (bench.pipeline imports it).
    os.environ.update({k: v for k, v in env.items() if k.startswith("SONIQUEBAY_")})
    from bench import pipeline

    layout = stack.Layout(stack.deployment_layout(), workdir / "logs", env, cwd=tree)
    try:
        postgres.start()
        # The side's own schema: its migrations, run by its own code.
        subprocess.run(
            [sys.executable, "-c", f"from backend_worker import db; db.upgrade({postgres.url!r})"],
            check=True, env=env, cwd=tree,
        )  # fmt: skip
        covers.mkdir()
        layout.start()
        layout.wait_ready()
        scanner = pipeline.Scanner(env, layout, message_dir, postgres.postmaster_pid(), redis.proc.pid)
        run = scanner.scan(root)
    finally:
        layout.stop()
        postgres.stop()
    return {
        "ingest_seconds": run["seconds"],
        "pool_seconds": pool["seconds"],
        "ratio": pool["seconds"] / run["seconds"],
        "cpu": run["cpu"],
        "counts": run["session"]["counts"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("the bench starts PostgreSQL as the postgres user: run it as root")
    args.workdir.mkdir(parents=True, exist_ok=True)
    other, other_commit = checkout(args.against, args.workdir / "other")
    this_commit = subprocess.run(
        ["git", "-C", str(stack.REPO), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    source = library.cached_library(args.files)
    root = library.copies(source, args.workdir / "music", args.copies)
    paths = library.audio_files(root)
    library.warm(source)
    sides = [(f"{args.against} ({other_commit[:7]})", other), (f"this ({this_commit[:7]})", stack.REPO)]
    print(f"{len(paths):,} files; {args.pairs} pairs: {sides[0][0]} then {sides[1][0]}", flush=True)
    runs: list[dict] = []
    redis = services.Redis(args.workdir / "redis", services.free_port())
    pg_port = services.free_port()
    redis.start()
    try:
        for pair in range(1, args.pairs + 1):
            for name, tree in sides:
                run = one_run(tree, root, paths, args.workdir / "run", redis, pg_port)
                runs.append({"pair": pair, "side": name, **run})
                print(
                    f"pair {pair} {name}: ingest {run['ingest_seconds']:.1f} s, "
                    f"raw pool {run['pool_seconds']:.1f} s: {run['ratio']:.3f}x, "
                    f"stack {sum(run['cpu'].values()):.1f} CPU-s  {run['counts']}",
                    flush=True,
                )
            before, after = runs[-2]["ratio"], runs[-1]["ratio"]
            change = after / before - 1
            print(f"pair {pair}: this code's ratio {change:+.1%} against {args.against}", flush=True)
    finally:
        redis.stop()
        remove_checkout(other)
    if args.results:
        summary = {"against": other_commit, "this": this_commit, "runs": runs}
        args.results.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
