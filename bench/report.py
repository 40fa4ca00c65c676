"""Tables, ratios, the plot and the generated parts of docs/performance.md."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from backend_worker.pipeline import QUEUES
from bench.stack import REPO
from testkit import services

LIBRARY_TABLES = services.LIBRARY_TABLES
DOC = REPO / "docs" / "performance.md"
PLOT = REPO / "docs" / "performance.png"
TESTHOST_PLOT = REPO / "docs" / "performance-testhost.png"
MARK = "<!-- bench:{}:{} -->"

# name -> (threshold, True when the figure must be at least the threshold)
TARGETS = {
    "ingest_vs_pool": (0.75, True),
    "ingest_vs_beets": (50.0, True),
    "rescan_vs_walk": (10.0, False),
    "insert_vs_copy": (0.7, True),
    "scale_ingest_vs_pool": (0.7, True),
    "scale_rescan_vs_walk": (3.0, False),
    "rename_vs_rescan": (3.0, False),
}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds else 0.0


def holds(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    threshold, at_least = TARGETS[name]
    return value >= threshold if at_least else value <= threshold


def _ok(name: str, value: float | None) -> str:
    verdict = holds(name, value)
    return "n/a" if verdict is None else ("**yes**" if verdict else "**no**")


def figures(r: dict) -> dict:
    """The headline numbers and ratios of one run."""
    files = r.get("library", {}).get("files") or r.get("files")
    out: dict = {"files": files}
    ingest, pool, loop = r.get("ingest"), r.get("mutagen_pool"), r.get("mutagen_loop")
    if ingest:
        out["ingest_rate"] = _rate(files, ingest["seconds"])
    if pool:
        out["pool_rate"] = _rate(pool["files"], pool["seconds"])
    if loop:
        out["loop_rate"] = _rate(loop["files"], loop["seconds"])
    reader = r.get("read_record_loop")
    if reader and loop:
        out["read_record_rate"] = _rate(reader["files"], reader["seconds"])
        out["read_record_vs_loop"] = reader["seconds"] / loop["seconds"]
    beets = r.get("beets") or {}
    if "seconds" in beets:
        out["beets_rate"] = _rate(beets["files"], beets["seconds"])
    if ingest and pool:
        out["ingest_vs_pool"] = out["ingest_rate"] / out["pool_rate"]
    if ingest and loop:
        out["ingest_vs_loop"] = out["ingest_rate"] / out["loop_rate"]
    if ingest and out.get("beets_rate"):
        out["ingest_vs_beets"] = out["ingest_rate"] / out["beets_rate"]
    walk, rescan = r.get("raw_walk"), r.get("rescan")
    if walk and rescan:
        out["rescan_vs_walk"] = rescan["median"] / walk["seconds"]
        out["rescan_vs_walk_process"] = rescan["median"] / walk["seconds_with_start"]
    insert = r.get("insert")
    if insert:
        out["insert_rate"] = _rate(insert["rows"], insert["stage_seconds"])
        out["copy_rate"] = _rate(insert["rows"], insert["copy_seconds"])
        out["insert_vs_copy"] = out["insert_rate"] / out["copy_rate"]
    return out


def _load(value) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "?"


def _busy(m: dict) -> bool:
    loads = [v for v in (m.get("load_before"), m.get("load_after")) if isinstance(v, int | float)]
    return bool(loads) and max(loads) > 0.5 * (m.get("cores") or 1)


def _machine_line(m: dict) -> str:
    line = (
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB, "
        f"{m.get('os', '?')}, kernel {m.get('kernel', '?')}, Python {m.get('python', '?')}."
    )
    if "load_before" in m:
        line += (
            f" Load average before / after the run: {_load(m.get('load_before'))} / "
            f"{_load(m.get('load_after'))}"
        )
        if "cpu_pressure" in m:
            line += f"; CPU pressure (PSI 'some', run average): {m['cpu_pressure']:.0f}%"
        line += " (other work shared the machine: expect noise)." if _busy(m) else "."
    return line


def _messages_table(messages: dict, files: int) -> list[str]:
    lines = [
        "| message | count | median bytes | largest bytes | total bytes | per file |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, m in sorted(messages.items(), key=lambda kv: -kv[1]["total"]):
        lines.append(
            f"| `{kind}` | {m['count']:,} | {m['median']:,} | {m['max']:,} | {m['total']:,} | "
            f"{m['count'] / files:.4f} |"
        )
    return lines


def _task_messages(messages: dict) -> int:
    return sum(m["count"] for k, m in messages.items() if not k.startswith("unacked") and k != "event")


def results_markdown(r: dict, title: str = "This machine") -> str:
    f = figures(r)
    files = f["files"]
    lines = [
        f"### {title}: {files:,} files, run of {r.get('started', '?')}",
        "",
        _machine_line(r["machine"]),
        "",
    ]
    if r.get("library", {}).get("bytes"):
        lines += [
            f"Library: {files:,} files ({r['library']['bytes'] / 2**30:.2f} GiB of mp3, flac, ogg, opus and "
            "m4a, 6 s each), artist/album/track folders, a cover.jpg per album, embedded art in one album "
            "of three. Page cache warm.",
            "",
        ]
    lines += ["| measure | SoniqueBay | reference | ratio | target | holds |", "|---|---|---|---:|---|---|"]
    ing = r.get("ingest")
    if ing:
        pool, loop = r["mutagen_pool"], r["mutagen_loop"]
        lines.append(
            f"| full ingest: `soniquebay scan --wait` into an empty library, process start to exit "
            f"| {ing['seconds']:.2f} s = **{f['ingest_rate']:,.0f} files/s** "
            f"| raw mutagen, Pool({pool['processes']}): {pool['seconds']:.2f} s "
            f"= {f['pool_rate']:,.0f} files/s "
            f"| {f['ingest_vs_pool']:.2f}x | >= 0.75x | {_ok('ingest_vs_pool', f['ingest_vs_pool'])} |"
        )
        lines.append(
            f"| | | raw mutagen, 1 process: {loop['seconds']:.2f} s = {f['loop_rate']:,.0f} files/s "
            f"({loop['cpu_ms_per_file']:.2f} CPU-ms per file) | {f['ingest_vs_loop']:.2f}x | | |"
        )
        if f.get("read_record_vs_loop"):
            reader = r["read_record_loop"]
            lines.append(
                f"| `read_record` alone (the extract stage's reader), 1 process | {reader['seconds']:.2f} s "
                f"= {f['read_record_rate']:,.0f} files/s | raw mutagen, 1 process "
                f"| {f['read_record_vs_loop']:.2f}x the time | | |"
            )
        beets = r.get("beets") or {}
        if f.get("beets_rate"):
            lines.append(
                f"| | | `beet import -A -C -W` (no autotag, copy or write), first {beets['files']:,} files: "
                f"{beets['seconds']:.1f} s = {f['beets_rate']:,.0f} files/s | {f['ingest_vs_beets']:.0f}x "
                f"| >= 50x | {_ok('ingest_vs_beets', f['ingest_vs_beets'])} |"
            )
        elif beets.get("error"):
            lines.append(f"| | | beets: {beets['error']} | | >= 50x | n/a |")
    resc, walk = r.get("rescan"), r.get("raw_walk")
    if resc and walk:
        lines.append(
            f"| unchanged rescan: process start to session closed | median **{resc['median']:.2f} s** "
            f"(best {resc['best']:.2f} s; session open {statistics.median(resc['session_seconds']):.2f} s) "
            f"| raw `os.scandir` + `stat` walk: {walk['seconds'] * 1000:.0f} ms in-process, "
            f"{walk['seconds_with_start'] * 1000:.0f} ms as a new `python3` "
            f"| {f['rescan_vs_walk']:.1f}x ({f['rescan_vs_walk_process']:.1f}x) | <= 10x "
            f"| {_ok('rescan_vs_walk', f['rescan_vs_walk'])} |"
        )
    sc = r.get("small_change")
    if sc:
        c, counts = sc["changes"], sc["session"]["counts"]
        lines.append(
            f"| small-change rescan: {c['touched']} touched, {c['added']} added, {c['deleted']} deleted "
            f"| **{sc['seconds']:.2f} s** | extracted {counts['extracted']}, inserted {counts['inserted']}, "
            f"missing {counts['missing']}, unchanged {counts['unchanged']:,} | | | |"
        )
    ins = r.get("insert")
    if ins:
        lines.append(
            f"| insert stage alone, {ins['batches']} batches of {ins['batch_rows']:,} "
            f"| {ins['stage_seconds']:.2f} s = **{f['insert_rate']:,.0f} rows/s** "
            f"| plain COPY of the same rows: {ins['copy_seconds']:.2f} s = {f['copy_rate']:,.0f} rows/s "
            f"| {f['insert_vs_copy']:.2f}x | >= 0.7x | {_ok('insert_vs_copy', f['insert_vs_copy'])} |"
        )
    idle, after = r.get("memory_idle"), r.get("memory_after")
    if idle:
        peak = (
            f" / peak in ingest RSS {mib(ing['peak_rss'])}, PSS {mib(ing['peak_pss'])}"
            if ing and "peak_rss" in ing
            else ""
        )
        later = f" / idle after RSS {mib(after['rss'])}, PSS {mib(after['pss'])}" if after else ""
        lines.append(
            f"| memory of the 8-unit worker layout ({idle['processes']} processes) "
            f"| idle RSS {mib(idle['rss'])}, PSS {mib(idle['pss'])}{peak}{later} | | | | |"
        )
    if ing and ing.get("messages"):
        sent = _task_messages(ing["messages"])
        largest = max(m["max"] for m in ing["messages"].values())
        lines.append(
            f"| task messages in the full ingest | {sent} ({sent / files:.4f} per file); largest {largest:,} "
            f"bytes | | | no per-file messages | {'**yes**' if sent < files / 50 else '**no**'} |"
        )
    lines.append("")
    if ing and ing.get("cpu"):
        total = sum(ing["cpu"].values())
        lines += ["CPU seconds spent during the best full ingest, by part:", ""]
        lines += ["| part | CPU s | share |", "|---|---:|---:|"]
        for part, sec in sorted(ing["cpu"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {part} | {sec:.2f} | {100 * sec / total:.0f}% |")
        raw_cpu = r["mutagen_loop"]["cpu_ms_per_file"] * files / 1000
        lines += [
            f"| **total** | **{total:.2f}** | {total / ing['seconds']:.2f} cores busy on average |",
            "",
            f"Raw mutagen needs {raw_cpu:.2f} CPU s for the same files (one process).",
        ]
    if ing and ing.get("messages"):
        lines += ["", "Messages Redis stored during the best full ingest (JSON envelope, body base64):", ""]
        lines += _messages_table(ing["messages"], files)
    if ing and resc:
        runs = ", ".join(f"{s:.2f}" for s in ing["all_seconds"])
        rescans = ", ".join(f"{s:.2f}" for s in resc["all"])
        opened = ", ".join(f"{s:.2f}" for s in resc["session_seconds"])
        lines += [
            "",
            f"Every full ingest: {runs} s. Every unchanged rescan: {rescans} s (session open {opened} s).",
        ]
        if "mutagen_pool_all" in r:
            lines[-1] += (
                " Every raw pool run: " + ", ".join(f"{s:.2f}" for s in r["mutagen_pool_all"]) + " s."
            )
        if r.get("workers_ready_seconds"):
            lines[-1] += f" Workers answered {r['workers_ready_seconds']:.0f} s after start."
    if ins and "stage_cpu" in ins:
        lines += [
            "",
            f"Insert stage CPU: client {ins['stage_cpu']['client']:.2f} s + PostgreSQL "
            f"{ins['stage_cpu']['server']:.2f} s; plain COPY: client {ins['copy_cpu']['client']:.2f} s + "
            f"PostgreSQL {ins['copy_cpu']['server']:.2f} s.",
        ]
    if ing and ing.get("library"):
        lib = ing["library"]
        lines += [
            "",
            f"Library after the ingest: {lib['tracks']:,} tracks, {lib['albums']:,} albums, "
            f"{lib['artists']:,} artists, {lib['genres']} genres, {lib['covers']:,} albums with a cover.",
        ]
    return "\n".join(lines) + "\n"


def _unit_order(name: str) -> tuple[int, str]:
    queue = name.rsplit("-", 1)[0]
    return (QUEUES.index(queue) if queue in QUEUES else len(QUEUES), name)


def memory_markdown(r: dict) -> str:
    """Memory of each unit idle after a full ingest: the previous layout (every pool prefork) and
    the shipped one, measured in the same run."""
    prev, now = r.get("previous"), r.get("memory_after_by_unit")
    if not now:
        return ""
    pools = {f"{p['queue']}-{i}": p["pool"] for p in r["layout"] for i in range(1, p["units"] + 1)}
    lines = [
        "Memory of each worker unit, idle after a full ingest (PSS counts a page shared by n processes "
        "1/n in each: the sum is what the layout costs):",
        "",
        "| unit | before: pool, processes, PSS, RSS | now: pool, processes, PSS, RSS |",
        "|---|---|---|",
    ]
    before = (prev or {}).get("memory_after_by_unit", {})

    def cell(pool: str, m: dict | None) -> str:
        return f"{pool}, {m['processes']}, {mib(m['pss'])}, {mib(m['rss'])}" if m else "n/a"

    for name in sorted(now, key=_unit_order):
        lines.append(
            f"| {name} | {cell('prefork', before.get(name))} | {cell(pools.get(name, '?'), now[name])} |"
        )

    def total(units: dict) -> dict:
        return {k: sum(u[k] for u in units.values()) for k in ("processes", "pss", "rss")}

    t_now = total(now)
    t_before = total(before) if before else None
    lines.append(
        f"| **all workers** | {cell('', t_before).lstrip(', ') if t_before else 'n/a'} "
        f"| {cell('', t_now).lstrip(', ')} |"
    )
    ing = r.get("ingest") or {}
    if prev and ing.get("peak_pss"):
        lines.append(
            f"| peak during a full ingest | PSS {mib(prev['peak_pss'])}, RSS {mib(prev['peak_rss'])} "
            f"| PSS {mib(ing['peak_pss'])}, RSS {mib(ing['peak_rss'])} |"
        )
    if prev and r.get("mutagen_pool"):
        pool_rate = _rate(r["mutagen_pool"]["files"], r["mutagen_pool"]["seconds"])
        files = r.get("library", {}).get("files") or r.get("files")
        lines.append(
            f"| full ingest, same run | {prev['ingest_seconds']:.2f} s = "
            f"{_rate(files, prev['ingest_seconds']) / pool_rate:.2f}x raw mutagen Pool "
            f"| {ing['seconds']:.2f} s = {_rate(files, ing['seconds']) / pool_rate:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def scale_markdown(r: dict) -> str:
    sc = r.get("scale")
    if not sc:
        return ""
    files, ing, pool, walk, resc = sc["files"], sc["ingest"], sc["mutagen_pool"], sc["raw_walk"], sc["rescan"]
    ingest_vs_pool = _rate(files, ing["seconds"]) / _rate(pool["files"], pool["seconds"])
    rescan_vs_walk = resc["median"] / walk["seconds"]
    copies = files // (r.get("library", {}).get("files") or files)
    peak = f"PSS {mib(ing['peak_pss'])}, RSS {mib(ing['peak_rss'])}"
    return (
        "\n".join(
            [
                f"At scale: {files:,} files ({copies} hard-linked "
                "copies of the library in sibling folders: every path new, the data once in the page cache), "
                "the same layout:",
                "",
                "| measure | SoniqueBay | reference | ratio | target | holds |",
                "|---|---|---|---:|---|---|",
                f"| full ingest | {ing['seconds']:.1f} s = **{_rate(files, ing['seconds']):,.0f} files/s** "
                f"| raw mutagen, Pool({pool['processes']}): {pool['seconds']:.1f} s "
                f"= {_rate(pool['files'], pool['seconds']):,.0f} files/s | {ingest_vs_pool:.2f}x | >= 0.7x "
                f"| {_ok('scale_ingest_vs_pool', ingest_vs_pool)} |",
                f"| unchanged rescan | median **{resc['median']:.2f} s** (best {resc['best']:.2f} s) "
                f"| raw `os.scandir` + `stat` walk: {walk['seconds']:.2f} s | {rescan_vs_walk:.1f}x | <= 3x "
                f"| {_ok('scale_rescan_vs_walk', rescan_vs_walk)} |",
                f"| memory, peak during the first ingest (sampled every 5 s) | {peak} | | | | |",
                "",
                "Every raw pool run: "
                + ", ".join(f"{s:.1f}" for s in sc["mutagen_pool_all"])
                + " s. "
                + (
                    "Every ingest: " + ", ".join(f"{s:.1f}" for s in ing["all_seconds"]) + " s (best shown). "
                    if "all_seconds" in ing
                    else ""
                )
                + "Every unchanged rescan: "
                + ", ".join(f"{s:.2f}" for s in resc["all"])
                + " s.",
            ]
        )
        + "\n"
    )


def identity_markdown(r: dict) -> str:
    """What a track's identity costs: the audio key per file, a renamed library's rescan, and the
    first rescan after migration 0008."""
    lines = []
    ident = r.get("identity")
    if ident:
        base = ident["unchanged_median"]
        files = r.get("library", {}).get("files") or r.get("files")
        lines += [
            f"Rescans of the {files:,}-file library against its unchanged rescan (median {base:.2f} s):",
            "",
            "| rescan | seconds | counts | ratio | target | holds |",
            "|---|---:|---|---:|---|---|",
        ]
        for what, run in zip(("top folder renamed", "renamed back"), ident["rename"], strict=True):
            c, ratio = run["counts"], run["seconds"] / base
            lines.append(
                f"| {what} | **{run['seconds']:.2f}** | moved {c['moved']:,}, extracted {c['extracted']}, "
                f"missing {c['missing']} | {ratio:.1f}x | <= 3x | {_ok('rename_vs_rescan', ratio)} |"
            )
        up = ident["after_upgrade"]
        lines += [
            f"| first rescan after migration 0008 (every file's device, inode and audio key stored) "
            f"| **{up['seconds']:.2f}** | unchanged {up['counts']['unchanged']:,}, extracted "
            f"{up['counts']['extracted']}, inserted {up['counts']['inserted']} | {up['seconds'] / base:.1f}x "
            "| once | |",
            "",
        ]
    keys = r.get("audio_key")
    if keys:
        lines += [
            "The audio key per file (`stages/identity.py`, CPU time, warm page cache), next to what "
            "`read_record` costs on the same files besides it:",
            "",
            "| format | audio region | key µs | read_record µs | key / read_record |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {k['format']} | {k['how']} | {k['key_us']:.1f} | {k['record_us']:.0f} "
            f"| {100 * k['ratio']:.0f}% |"
            for k in keys
        ]
        lines.append("")
    return "\n".join(lines)


def tables(r: dict) -> str:
    out = (
        results_markdown(r)
        + "\n"
        + memory_markdown(r)
        + "\n"
        + identity_markdown(r)
        + "\n"
        + scale_markdown(r)
    )
    th = r.get("testhost")
    if th:
        out += "\n" + (
            f"Test host: {th['error']}\n" if "error" in th else results_markdown(th, "Deployed test host")
        )
    return out


def plot(r: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = figures(r)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.8))
    fig.suptitle(f"{title} ({f['files']:,} files, {r['machine'].get('cores', '?')} cores)")

    ax = axes[0]
    bars = [
        ("mutagen\nPool", "pool_rate", "#999999"),
        ("mutagen\n1 process", "loop_rate", "#bbbbbb"),
        ("SoniqueBay\ningest", "ingest_rate", "#1f77b4"),
        ("beets\nimport -A", "beets_rate", "#d62728"),
    ]
    bars = [(label, f[key], color) for label, key, color in bars if f.get(key)]
    drawn = ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    ax.bar_label(drawn, fmt="{:,.0f}")
    ax.set_ylabel("files per second")
    ax.set_title("Full ingest")

    ax = axes[1]
    walk, resc = r.get("raw_walk"), r.get("rescan")
    if walk and resc:
        labels = ["raw walk", "raw walk\n+ python start", "SoniqueBay\nrescan", "target:\n10x raw walk"]
        values = [walk["seconds"], walk["seconds_with_start"], resc["median"], 10 * walk["seconds"]]
        drawn = ax.bar(labels, values, color=["#999999", "#bbbbbb", "#1f77b4", "#ffffff"], edgecolor="black")
        ax.bar_label(drawn, fmt="{:.2f} s")
        ax.set_ylabel("seconds")
        ax.set_title("Unchanged rescan")

    ax = axes[2]
    if r.get("insert"):
        drawn = ax.bar(
            ["plain COPY", "insert stage"], [f["copy_rate"], f["insert_rate"]], color=["#999999", "#1f77b4"]
        )
        ax.bar_label(drawn, fmt="{:,.0f}")
        ax.set_ylabel("rows per second")
        ax.set_title("Insert stage alone")
    else:
        ax.set_axis_off()

    ax = axes[3]
    ing = r.get("ingest")
    if ing and ing.get("memory_samples"):
        t = [s[0] for s in ing["memory_samples"]]
        ax.plot(t, [s[1] / 2**30 for s in ing["memory_samples"]], label="RSS (sum)")
        ax.plot(t, [s[2] / 2**30 for s in ing["memory_samples"]], label="PSS (sum)")
        ax.set_xlabel("seconds into the full ingest")
        ax.set_ylabel("GiB")
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.set_title(f"Memory of the {r['memory_idle']['processes']} worker processes")
    else:
        ax.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def replace_section(text: str, name: str, body: str) -> str:
    start, end = MARK.format(name, "start"), MARK.format(name, "end")
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def write(r: dict) -> None:
    """Replace the generated sections of docs/performance.md (the prose around them stays)."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    plot(r, PLOT, "SoniqueBay ingest on this machine")
    text = replace_section(text, "results", results_markdown(r) + f"\n![results]({PLOT.name})\n")
    text = replace_section(text, "memory", memory_markdown(r) or "Not measured in this run.\n")
    text = replace_section(text, "scale", scale_markdown(r) or "Not measured in this run.\n")
    text = replace_section(text, "identity", identity_markdown(r) or "Not measured in this run.\n")
    th = r.get("testhost")
    if th:
        if "error" in th:
            body = f"Not measured in the run of {r.get('started')}: {th['error']}\n"
        else:
            plot(th, TESTHOST_PLOT, "SoniqueBay ingest on the deployed test host")
            body = results_markdown(th, "Deployed test host") + f"\n![test host]({TESTHOST_PLOT.name})\n"
        text = replace_section(text, "testhost", body)
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(REPO)} and {PLOT.relative_to(REPO)}")
