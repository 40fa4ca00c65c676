"""Timed scans with `soniquebay scan --wait` on the running layout, with memory, CPU and
message-size readings."""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import probe, stack


class Sampler(threading.Thread):
    """Sums the RSS and PSS of every worker process (or of the processes `pids` names) every
    `interval` seconds; keeps the peak."""

    def __init__(
        self, layout: stack.Layout, interval: float = 0.5, pids: Callable[[], list[int]] | None = None
    ):
        super().__init__(daemon=True)
        self.layout = layout
        self.interval = interval
        self.by_unit = pids is None  # the layout's units: each unit's peak is kept too
        self.pids = pids or (lambda: [pid for group in self.layout.pids().values() for pid in group])
        self.peak_pss_by_unit: dict[str, int] = {}
        self.stop_event = threading.Event()
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples: list[tuple[float, int, int]] = []

    def measure(self) -> tuple[int, int, int]:
        pids = self.pids()
        rss = sum(stack.rss_bytes(p) for p in pids)
        pss = sum(stack.pss_bytes(p) for p in pids)
        return rss, pss, len(pids)

    def per_unit(self) -> dict[str, dict[str, int]]:
        """unit -> {"processes", "pss", "rss"} (bytes)."""
        return {
            name: {
                "processes": len(pids),
                "pss": sum(stack.pss_bytes(p) for p in pids),
                "rss": sum(stack.rss_bytes(p) for p in pids),
            }
            for name, pids in self.layout.pids().items()
        }

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop_event.is_set():
            if self.by_unit:
                units = self.per_unit()
                rss, pss = (sum(u[k] for u in units.values()) for k in ("rss", "pss"))
                for name, unit in units.items():
                    self.peak_pss_by_unit[name] = max(self.peak_pss_by_unit.get(name, 0), unit["pss"])
            else:
                rss, pss, _ = self.measure()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.samples.append((time.monotonic() - started, rss, pss))
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


class CpuMeter:
    """CPU seconds spent by each part of the stack between `start()` and `stop()`."""

    def __init__(self, layout: stack.Layout, postgres_pid: int, redis_pid: int):
        self.layout = layout
        self.postgres_pid = postgres_pid
        self.redis_pid = redis_pid

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pids in self.layout.pids().items():
            queue = name.rsplit("-", 1)[0]
            # With the pool processes it replaced (max_tasks_per_child) and has waited for.
            main, pool = pids[0], pids[1:]
            out[f"workers: {queue}"] = (
                out.get(f"workers: {queue}", 0.0)
                + stack.cpu_seconds(main, with_reaped_children=True)
                + sum(stack.cpu_seconds(p) for p in pool)
            )
        out["postgres"] = stack.cpu_seconds(self.postgres_pid, with_reaped_children=True) + sum(
            stack.cpu_seconds(p) for p in stack.children(self.postgres_pid)
        )
        out["redis"] = stack.cpu_seconds(self.redis_pid)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["soniquebay CLI"] = usage.ru_utime + usage.ru_stime
        return out

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {k: round(after[k] - self.before.get(k, 0.0), 3) for k in after}


class Scanner:
    def __init__(
        self, env: dict[str, str], layout: stack.Layout, message_dir: Path, postgres_pid: int, redis_pid: int
    ):
        self.env = env
        self.layout = layout
        self.message_dir = message_dir
        self.cpu = CpuMeter(layout, postgres_pid, redis_pid)

    def scan(self, root: Path, sample_memory: bool = False, memory_interval: float = 0.5) -> dict:
        """`soniquebay scan ROOT --wait --json`: wall time from process start to exit. A memory
        sample costs ~40 ms of CPU (every worker's smaps_rollup), which the scan's time includes."""
        shutil.rmtree(self.message_dir, ignore_errors=True)
        self.message_dir.mkdir(parents=True)
        sampler = stack_sampler = None
        if sample_memory:
            sampler = stack_sampler = Sampler(self.layout, memory_interval)
            sampler.start()
        self.cpu.start()
        started = time.perf_counter()
        proc = subprocess.run(
            [str(stack.VENV_BIN / "soniquebay"), "scan", str(root), "--wait", "--json"],
            capture_output=True, text=True, env=self.env, timeout=3600,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        cpu = self.cpu.stop()
        if stack_sampler:
            stack_sampler.stop()
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(
                f"soniquebay scan exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        session = json.loads(proc.stdout.strip().splitlines()[-1])
        if session["status"] != "completed":
            raise RuntimeError(f"session {session['id']} {session['status']}: {session.get('message')}")
        result = {
            "seconds": seconds,
            "session": session,
            "cpu": cpu,
            "messages": message_stats(probe.read_message_log(str(self.message_dir))),
        }
        if sampler:
            result["peak_rss"] = sampler.peak_rss
            result["peak_pss"] = sampler.peak_pss
            result["peak_pss_by_unit"] = sampler.peak_pss_by_unit
            result["memory_samples"] = sampler.samples
        return result


def message_stats(sizes: dict[str, list[int]]) -> dict[str, dict]:
    return {
        kind: {
            "count": len(values),
            "total": sum(values),
            "max": max(values),
            "median": int(statistics.median(values)),
        }
        for kind, values in sorted(sizes.items())
    }
