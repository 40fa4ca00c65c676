"""`make chaos`: random faults during repeated full scans on a deployed test host (shipped settings),
and what came out: faults, sessions, tracks lost and duplicated, recovery times (from the fault to
the session's close). A benchmark-style script, not a test: it prints a table and a JSON line.

    python -m bench.chaos [--faults 30] [--copies 3] [--seed 1]

The library is the fault tests' 2,000-file library and hard-linked copies of it in other folders,
`--copies` in all (every path distinct). With SONIQUEBAY_TESTHOST set it uses that kept machine;
otherwise it boots and converges a fresh one and removes it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from testkit.deploy import chaos
from testkit.deploy.ops import put_library
from testkit.testhost import TestHost


def put_copies(host: TestHost, copies: int) -> list[dict]:
    """The 2,000-file library at /srv/music and `copies` - 1 hard-linked copies of it beside it."""
    staging = Path(tempfile.mkdtemp(prefix="chaos-library-"))
    try:
        library = put_library(host, staging / "music", **chaos.LIBRARY_SHAPE)
        return chaos.add_copies(host, library, copies - 1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=30)
    parser.add_argument("--copies", type=int, default=3, help="copies of the 2,000-file library")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    kept = os.environ.get("SONIQUEBAY_TESTHOST")
    host = TestHost.attach(kept) if kept else TestHost.create(name="sbchaos")
    try:
        if not kept:
            result = host.converge()
            if not result.ok:
                print(result.tail(60), file=sys.stderr)
                return 1
        expected = put_copies(host, args.copies)
        print(f"library: {len(expected)} files; {args.faults} faults, seed {args.seed}", flush=True)
        started = time.monotonic()
        rounds = chaos.run(
            host, expected, args.faults, random.Random(args.seed), log=lambda s: print(s, flush=True)
        )
        figures = chaos.summary(rounds)
        figures.update(
            files=len(expected), seed=args.seed, minutes=round((time.monotonic() - started) / 60, 1)
        )
        print()
        columns = ("faults", "sessions", "completed", "tracks lost", "tracks duplicated", "error records")
        columns += ("re-sent", "recovery median", "recovery max")
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        print(
            f"| {figures['faults']} | {figures['sessions']} | {figures['completed']} | {figures['lost']} | "
            f"{figures['duplicated']} | {figures['errors']} | {figures['resent']} | "
            f"{figures['recovery_median']:.0f} s | {figures['recovery_max']:.0f} s |"
        )
        print("faults by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(figures["by_kind"].items())))
        print(json.dumps(figures))
        return 0 if figures["lost"] == figures["duplicated"] == figures["errors"] == 0 else 1
    finally:
        if not kept:
            host.destroy()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
