"""The results: the machine's description, a Markdown table with the ratios, and a plot."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict
from pathlib import Path

from benchmarks.daemons import lxcfs_version
from benchmarks.run import NOISY_FILE, NOISY_READERS, PACE_MS, SERVERS, Results

# The targets.
P50_VS_FLOOR = 1.25
GROWTH = 1.2
RSS_LIMIT = 64 << 20
NOISY_P50, NOISY_P99 = 1.5, 3.0  # a neighbour's latency beside a noisy container / alone


def machine() -> dict[str, str]:
    import pyfuse3
    import trio

    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / (1 << 20):.1f} GiB",
        "kernel": platform.release(),
        "lxcfs": lxcfs_version(),
        "pyfuse3": str(getattr(pyfuse3, "__version__", "unknown")),
        "trio": str(getattr(trio, "__version__", "unknown")),
        "python": platform.python_version(),
        "load_before": load,
    }


def _us(ns: float) -> str:
    return f"{ns / 1000:.0f}" if ns >= 10_000 else f"{ns / 1000:.1f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "–"


MIB = 1 << 20


def _short(path: str) -> str:
    return path.removeprefix("proc/").replace("sys/devices/system/cpu/", "cpu/")


def markdown(r: Results) -> str:
    ns = sorted(r.latency)
    lines = ["# procfs vs LXCFS vs the floor", ""]
    m = r.machine
    lines += [
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory')}, "
        f"kernel {m.get('kernel')}; LXCFS {m.get('lxcfs')}, pyfuse3 {m.get('pyfuse3')}, "
        f"trio {m.get('trio')}, Python {m.get('python')}. "
        f"Load average before/after: {m.get('load_before')} / {m.get('load_after')}.",
        "",
        f"Options: {json.dumps(r.options)}.",
        "",
        "One read = open + read to EOF + close of the file by the same small C reader "
        "(`benchmarks/reader.c`) in a container's pid namespace and cgroup; the three servers are "
        "read in turn within one process, so they share the machine's noise. Times in µs.",
        "",
    ]
    if r.skipped:
        lines += [f"Not served by procfs at run time, skipped: {', '.join(r.skipped)}.", ""]
    if r.notes:
        lines += [*(f"- {n}" for n in r.notes), ""]
    lines += headline(r)
    for n in ns:
        lines += [f"## Latency with N = {n} containers ({r.options['reads']} reads per file)", "",
                  "| file | procfs p50 | procfs p99 | LXCFS p50 | LXCFS p99 | floor p50 "
                  "| floor p99 | procfs/LXCFS p50 | procfs/floor p50 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for f, by in r.latency[n].items():
            p, x, fl = by["procfs"], by["lxcfs"], by["floor"]
            lines.append(
                f"| {_short(f)} | {_us(p['p50'])} | {_us(p['p99'])} | {_us(x['p50'])} "
                f"| {_us(x['p99'])} | {_us(fl['p50'])} | {_us(fl['p99'])} "
                f"| {_ratio(p['p50'], x['p50'])} | {_ratio(p['p50'], fl['p50'])} |")
        lines.append("")
    for n, by_readers in sorted(r.tput.items()):
        secs = r.options["tput_seconds"]
        lines += [f"## Throughput with N = {n} containers (reads/s over {secs} s; daemon CPU ms "
                  "per 1000 reads)", "",
                  "| file | readers | procfs | LXCFS | floor | procfs/LXCFS | procfs CPU "
                  "| LXCFS CPU | floor CPU |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for readers, by_file in sorted(by_readers.items()):
            for f, by in by_file.items():
                p, x, fl = by["procfs"], by["lxcfs"], by["floor"]
                lines.append(
                    f"| {_short(f)} | {readers} | {p['rps']:.0f} | {x['rps']:.0f} "
                    f"| {fl['rps']:.0f} | {_ratio(p['rps'], x['rps'])} "
                    f"| {p['cpu_ms_per_1000']:.0f} | {x['cpu_ms_per_1000']:.0f} "
                    f"| {fl['cpu_ms_per_1000']:.0f} |")
        lines.append("")
    lines += neighbours(r)
    if len(ns) > 1:
        lo, hi = ns[0], ns[-1]
        lines += [f"## p50 growth from N = {lo} to N = {hi} (p50 at {hi} / p50 at {lo})", "",
                  "| file | procfs | LXCFS | floor |", "|---|---:|---:|---:|"]
        for f in r.latency[hi]:
            cells = [_ratio(r.latency[hi][f][s]["p50"], r.latency[lo][f][s]["p50"])
                     for s in SERVERS]
            lines.append(f"| {_short(f)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Resident memory after the measurements at each N", "",
              "MiB resident in all the processes of a server (with `--workers`, procfs's "
              "shards too), each physical page once (the union of their page frames, from "
              "/proc/PID/pagemap: shards forked from the server share its pages). In "
              "parentheses: VmRSS summed over the processes (shared pages "
              "counted in each) / PSS summed.", "",
              "| N | procfs | LXCFS | floor | setup s |", "|---:|---:|---:|---:|---:|"]
    for n in ns:
        rss, total, pss = r.rss.get(n, {}), r.rss_sum.get(n, {}), r.pss.get(n, {})
        cells = [f"{rss.get(s, 0) / MIB:.1f} ({total.get(s, 0) / MIB:.1f} / "
                 f"{pss.get(s, 0) / MIB:.1f})" for s in SERVERS]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {r.setup_seconds.get(n, 0):.0f} |")
    lines.append("")
    errors = sum(v["errors"] for by_f in r.latency.values() for by in by_f.values()
                 for v in by.values())
    errors += sum(v["errors"] for by_r in r.tput.values() for by_f in by_r.values()
                  for by in by_f.values() for v in by.values())
    errors += sum(m[k]["errors"] for by_s in r.neighbours.values() for m in by_s.values()
                  for k in ("quiet", "noisy"))
    lines += [f"Failed reads in the whole run: {errors:.0f}.", ""]
    return "\n".join(lines)


def neighbours(r: Results) -> list[str]:
    if not r.neighbours:
        return []
    lines = [f"## Noisy neighbour ({NOISY_FILE}: a neighbour reads every {PACE_MS:g} ms, "
             f"alone, then while another container runs {NOISY_READERS} tight readers)", "",
             "| placement | server | p50 alone | p99 alone | p50 beside | p99 beside "
             "| p50 × | p99 × | errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for placement, by_server in r.neighbours.items():
        for server, m in by_server.items():
            q, n = m["quiet"], m["noisy"]
            lines.append(f"| {placement} | {'LXCFS' if server == 'lxcfs' else server} "
                         f"| {_us(q['p50'])} | {_us(q['p99'])} | {_us(n['p50'])} "
                         f"| {_us(n['p99'])} | {_ratio(n['p50'], q['p50'])} "
                         f"| {_ratio(n['p99'], q['p99'])} | {int(q['errors'] + n['errors'])} |")
    return [*lines, ""]


def targets(r: Results) -> list[tuple[str, bool, str]]:
    """(target, met, the numbers) for each of the issue's targets."""
    ns = sorted(r.latency)
    lo, hi = ns[0], ns[-1]
    out: list[tuple[str, bool, str]] = []
    for n in dict.fromkeys((lo, hi)):
        worst = max(r.latency[n].items(),
                    key=lambda kv: kv[1]["procfs"]["p50"] / kv[1]["lxcfs"]["p50"])
        ratio = worst[1]["procfs"]["p50"] / worst[1]["lxcfs"]["p50"]
        out.append((f"p50 ≤ LXCFS's for every file at N = {n}", ratio <= 1.0,
                    f"worst procfs/LXCFS {ratio:.2f} ({_short(worst[0])})"))
    worst_floor = max(((n, f, by["procfs"]["p50"] / by["floor"]["p50"])
                       for n in ns for f, by in r.latency[n].items()), key=lambda t: t[2])
    out.append((f"p50 ≤ {P50_VS_FLOOR} × floor for every file", worst_floor[2] <= P50_VS_FLOOR,
                f"worst {worst_floor[2]:.2f} ({_short(worst_floor[1])}, N = {worst_floor[0]})"))
    for n, by_readers in sorted(r.tput.items()):
        top = max(by_readers)
        ratios = {f: by["procfs"]["rps"] / max(by["lxcfs"]["rps"], 1e-9)
                  for f, by in by_readers[top].items()}
        f_min = min(ratios, key=lambda f: ratios[f])
        out.append((f"throughput with {top} readers ≥ LXCFS's (N = {n})",
                    ratios[f_min] >= 1.0,
                    f"worst procfs/LXCFS {ratios[f_min]:.2f} ({_short(f_min)})"))
    for placement, by_server in r.neighbours.items():
        m = by_server["procfs"]
        p50 = m["noisy"]["p50"] / m["quiet"]["p50"]
        p99 = m["noisy"]["p99"] / m["quiet"]["p99"]
        out.append((f"a noisy neighbour on the {placement} raises p50 ≤ {NOISY_P50}×, "
                    f"p99 ≤ {NOISY_P99}×", p50 <= NOISY_P50 and p99 <= NOISY_P99,
                    f"p50 {p50:.2f}×, p99 {p99:.2f}×"))
    rss = r.rss[hi]["procfs"]
    total = r.rss_sum.get(hi, {}).get("procfs", 0)
    out.append((f"resident memory ≤ 64 MiB with {hi} containers seen", rss <= RSS_LIMIT,
                f"{rss / MIB:.1f} MiB (VmRSS summed over its processes {total / MIB:.1f})"))
    if hi != lo:
        growth = {f: r.latency[hi][f]["procfs"]["p50"] / r.latency[lo][f]["procfs"]["p50"]
                  for f in r.latency[hi]}
        f_max = max(growth, key=lambda f: growth[f])
        out.append((f"p50 at N = {hi} ≤ {GROWTH} × p50 at N = {lo}", growth[f_max] <= GROWTH,
                    f"worst {growth[f_max]:.2f} ({_short(f_max)})"))
    return out


def headline(r: Results) -> list[str]:
    lines = ["## Headline", ""]
    for n in sorted(r.latency):
        by_file = r.latency[n]
        vs_lx = [by["procfs"]["p50"] / by["lxcfs"]["p50"] for by in by_file.values()]
        vs_fl = [by["procfs"]["p50"] / by["floor"]["p50"] for by in by_file.values()]
        lines.append(f"- N = {n}: procfs p50 / LXCFS p50: median {statistics.median(vs_lx):.2f} "
                     f"(range {min(vs_lx):.2f}–{max(vs_lx):.2f}); procfs p50 / floor p50: "
                     f"median {statistics.median(vs_fl):.2f} "
                     f"(range {min(vs_fl):.2f}–{max(vs_fl):.2f}).")
    for n, by_readers in sorted(r.tput.items()):
        for readers, by_file in sorted(by_readers.items()):
            ratios = [by["procfs"]["rps"] / max(by["lxcfs"]["rps"], 1e-9)
                      for by in by_file.values()]
            lines.append(f"- N = {n}, {readers} readers: procfs reads/s / LXCFS reads/s: median "
                         f"{statistics.median(ratios):.2f} "
                         f"(range {min(ratios):.2f}–{max(ratios):.2f}).")
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    for name, met, numbers in targets(r):
        lines.append(f"| {name} | {'yes' if met else 'no'} | {numbers} |")
    lines.append("")
    return lines


def plot(r: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(r.latency)
    files = r.files
    panels = len(ns) + (1 if r.tput else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    colors = {"procfs": "tab:blue", "lxcfs": "tab:orange", "floor": "tab:gray"}
    width = 0.27
    for ax, n in zip(axes[0], ns, strict=False):
        for k, s in enumerate(SERVERS):
            ax.bar([i + (k - 1) * width for i in range(len(files))],
                   [r.latency[n][f][s]["p50"] / 1000 for f in files], width,
                   label="LXCFS" if s == "lxcfs" else s, color=colors[s])
        ax.set_xticks(range(len(files)), [_short(f) for f in files], rotation=30, ha="right")
        ax.set_ylabel("p50 open+read+close (µs)")
        ax.set_title(f"latency, N = {n}")
        ax.legend()
    if r.tput:
        n = max(r.tput)
        top = max(r.tput[n])
        ax = axes[0][-1]
        for k, s in enumerate(SERVERS):
            ax.bar([i + (k - 1) * width for i in range(len(files))],
                   [r.tput[n][top][f][s]["rps"] for f in files], width,
                   label="LXCFS" if s == "lxcfs" else s, color=colors[s])
        ax.set_xticks(range(len(files)), [_short(f) for f in files], rotation=30, ha="right")
        ax.set_ylabel("reads/s")
        ax.set_title(f"throughput, {top} readers, N = {n}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(r: Results, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with open("/proc/loadavg") as f:
        r.machine["load_after"] = " ".join(f.read().split()[:3])
    table = out / "results.md"
    text = markdown(r)
    (out / "results.json").write_text(json.dumps(asdict(r), indent=1) + "\n")
    try:
        plot(r, out / "results.png")
    except ImportError:  # the `bench` extra is not installed: the table alone
        table.write_text(text + "\n")
    else:
        table.write_text(text + "\n![p50 and throughput](results.png)\n")
    return table
