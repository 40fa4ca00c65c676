"""The same scans on the deployed test host (testkit/testhost.py): a fresh booted Debian 12 machine
converged with playbooks/site.yml, so Redis, PostgreSQL and the worker units run exactly as
deployed (systemd units, sandboxing, the deployment's PostgreSQL and Redis settings).

The library is hard-linked into the machine's /srv/music (the deployment's default root); every
command runs over SSH, timed inside the machine. The raw baselines run there too, with the
deployed venv's mutagen. beets and the insert-stage comparison are not repeated there.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import time
from pathlib import Path

from bench import baselines, library
from testkit import services

MUSIC = "/srv/music"
VENV_PY = "/opt/soniquebay/venv/bin/python"
TABLES = services.LIBRARY_TABLES

RAW_SCRIPT = """
import json, multiprocessing, os, sys, time
import mutagen
paths = []
for folder, dirs, names in os.walk(sys.argv[1]):
    dirs.sort()
    paths += [os.path.join(folder, n) for n in sorted(names) if n.rsplit(".", 1)[-1] in %(formats)r]
def chunk(ps):
    for p in ps:
        mutagen.File(p)
    return len(ps)
if __name__ == "__main__":
    out = {}
    t = time.perf_counter(); c = time.process_time()
    chunk(paths)
    out["mutagen_loop"] = {"files": len(paths), "seconds": time.perf_counter() - t,
                           "cpu_ms_per_file": 1000 * (time.process_time() - c) / len(paths)}
    n = os.cpu_count()
    t = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(n) as pool:
        done = sum(pool.imap_unordered(chunk, [paths[i:i + 256] for i in range(0, len(paths), 256)]))
    out["mutagen_pool"] = {"files": done, "seconds": time.perf_counter() - t, "processes": n,
                           "chunksize": 256}
    print(json.dumps(out))
"""

MEMORY_SCRIPT = """
import json, os
rss = pss = n = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        if not any(a.endswith(b"celery") for a in argv) or b"worker" not in argv:
            continue  # not a worker (Flower is `celery ... flower`)
        rss += int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
        n += 1
    except OSError:
        pass
print(json.dumps({"rss": rss, "pss": pss, "processes": n}))
"""


def _json(host, command: str, timeout: float = 1800) -> dict:
    return json.loads(host.ssh(command, timeout=timeout).stdout.strip().splitlines()[-1])


def _scan(host) -> dict:
    """`soniquebay scan /srv/music --wait --json` timed inside the machine."""
    out = host.ssh(
        "s=$(date +%s.%N); soniquebay scan /srv/music --wait --json > /tmp/scan.json; rc=$?; "
        "e=$(date +%s.%N); echo $s $e $rc",
        timeout=3600,
    ).stdout.split()
    started, ended, rc = float(out[0]), float(out[1]), int(out[2])
    session = json.loads(host.ssh("tail -n 1 /tmp/scan.json").stdout)
    if rc != 0 or session["status"] != "completed":
        raise RuntimeError(f"scan on the test host: exit {rc}, {session}")
    return {"seconds": ended - started, "session": session}


def _empty_library(host) -> None:
    truncate = shlex.quote(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    host.ssh(
        f"runuser -u postgres -- psql -q soniquebay -c {truncate} -c CHECKPOINT "
        "&& find /var/lib/soniquebay/covers -mindepth 1 -delete"
    )


def run(source: Path, additions: Path, args) -> dict:
    try:
        from testkit.testhost import TestHost, TestHostError
    except ImportError as exc:
        return {"error": f"the test host harness (testkit/testhost.py) cannot be used: {exc}"}
    try:
        host = TestHost.create(name="sbbench")
    except Exception as exc:  # ports taken by another test host, no debootstrap, ...
        return {"error": f"the test host could not be created: {str(exc).splitlines()[0]}"}
    try:
        print("converging the test host with playbooks/site.yml ...", flush=True)
        converge = host.converge()
        if not converge.ok:
            return {"error": f"playbooks/site.yml failed on the test host:\n{converge.tail(20)}"}
        target = host.root / MUSIC.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        library.working_copy(source, target)
        host.ssh(f"find {MUSIC} -type f -exec cat {{}} + > /dev/null")  # warm page cache
        results: dict = {
            "machine": _machine(host),
            "files": args.files,
            "started": time.strftime("%Y-%m-%d %H:%M"),
        }
        count, size = host.ssh(f"find {MUSIC} -type f -name '*.*[a-z0-9]' ! -name '*.jpg' -printf '%s\\n' | "
                               "awk '{n++; s+=$1} END {print n, s}'").stdout.split()  # fmt: skip
        results["library"] = {"files": int(count), "bytes": int(size)}
        walk = host.ssh(f"python3 -c {shlex.quote(baselines.WALK_SOURCE)} {MUSIC}").stdout.split()
        starts = []
        for _ in range(5):
            out = host.ssh(
                f"s=$(date +%s.%N); python3 -c {shlex.quote(baselines.WALK_SOURCE)} {MUSIC} >/dev/null; "
                "e=$(date +%s.%N); echo $s $e"
            ).stdout.split()
            starts.append(float(out[1]) - float(out[0]))
        results["raw_walk"] = {
            "entries": int(walk[0]),
            "seconds": float(walk[1]),
            "seconds_with_start": min(starts),
        }
        raw = RAW_SCRIPT % {"formats": tuple(library.FORMATS)}
        host.write_file("/root/bench_raw.py", raw)
        results.update(_json(host, f"{VENV_PY} /root/bench_raw.py {MUSIC}"))
        host.write_file("/root/bench_memory.py", MEMORY_SCRIPT)
        results["memory_idle"] = _json(host, "python3 /root/bench_memory.py")
        ingests = []
        for _ in range(args.ingests):
            _empty_library(host)
            print("full ingest on the test host ...", flush=True)
            ingests.append(_scan(host))
        best = min(ingests, key=lambda r: r["seconds"])
        best["all_seconds"] = [r["seconds"] for r in ingests]
        results["ingest"] = best
        results["memory_after"] = _json(host, "python3 /root/bench_memory.py")
        host.ssh("runuser -u postgres -- psql -q soniquebay -c 'VACUUM ANALYZE'")
        rescans = [_scan(host) for _ in range(args.rescans)]
        results["rescan"] = {
            "median": statistics.median(r["seconds"] for r in rescans),
            "best": min(r["seconds"] for r in rescans),
            "all": [r["seconds"] for r in rescans],
            "session_seconds": [_session_seconds(r["session"]) for r in rescans],
        }
        changes = library.small_change(target, additions)
        change = _scan(host)
        change["changes"] = changes
        results["small_change"] = change
        return results
    except (TestHostError, subprocess.SubprocessError, RuntimeError, OSError, ValueError) as exc:
        return {"error": f"the test host run failed: {str(exc)[:500]}"}
    finally:
        host.destroy()


def _session_seconds(session: dict) -> float:
    from datetime import datetime

    return (
        datetime.fromisoformat(session["ended_at"]) - datetime.fromisoformat(session["started_at"])
    ).total_seconds()


def _machine(host) -> dict:
    info = host.ssh(
        "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; . /etc/os-release; echo \"$PRETTY_NAME\"; "
        "uname -r; /opt/soniquebay/venv/bin/python -c 'import platform; print(platform.python_version())'; "
        "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"
    ).stdout.splitlines()
    return {
        "cores": int(info[0]),
        "memory_gib": round(int(info[1]) / 2**20, 1),
        "os": info[2] + " (systemd-nspawn test host sharing this machine's kernel and cores)",
        "kernel": info[3],
        "python": info[4],
        "cpu": info[5].strip() if len(info) > 5 else "?",
    }
