"""BENCHMARKS.md and bench/results.png from the figures run.py measured, each figure next to its target."""

import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from wrk import WrkResult

PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "redis", "hiredis", "orjson", "pydantic", "httpx")
ANALYSIS = re.compile(r"<!-- analysis -->.*?<!-- /analysis -->", re.DOTALL)
NO_ANALYSIS = "<!-- analysis -->\n(Hand-written notes go here; run.py keeps this block as it is.)\n<!-- /analysis -->"
REQ_S_RATIO, P99_RATIO = 0.95, 1.2
# WrkResult field, its label in the table, its unit.
MEASURES = [
    ("requests_s", "req/s", "req/s"),
    ("p50_ms", "p50 ms", "ms"),
    ("p99_ms", "p99 ms", "ms"),
    ("server_cpu_us", "server CPU µs/req", "µs"),
]


@dataclass(frozen=True, slots=True)
class Comparison:
    """One endpoint under wrk: the API against the baseline, medians over the rounds."""

    name: str
    api: list[WrkResult]
    baseline: list[WrkResult]
    # The MEASURES fields held to a target ("requests_s", "p99_ms"); the others are reported for the ratio.
    targets: tuple[str, ...]
    # The req/s target, API / baseline.
    req_s_ratio: float = REQ_S_RATIO


@dataclass(frozen=True, slots=True)
class Target:
    """`value` is good when at least (`at_least`) or at most `limit`."""

    limit: float
    at_least: bool
    text: str
    # False for a strict bound ("< 50"): the limit itself misses.
    inclusive: bool = True

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "not measured"
        if value == self.limit and self.inclusive or (value > self.limit if self.at_least else value < self.limit):
            return "met"
        if not self.limit:
            return "**not met**"
        miss = abs(value - self.limit) / self.limit
        return f"**not met**, {miss:.0%} {'short' if self.at_least else 'over'}"


def median(results: list[WrkResult], field: str) -> float:
    return float(statistics.median(getattr(result, field) for result in results))


def ratios(comparison: Comparison, field: str) -> list[float]:
    """API / baseline in each round: the two runs of a round are back to back, so a burst of load from
    elsewhere (another process, or the host taking the cores: steal) falls on both halves of a pair more
    often than on two medians taken over the whole stretch."""
    return [getattr(a, field) / getattr(b, field) for a, b in zip(comparison.api, comparison.baseline, strict=True)]


def ratio(comparison: Comparison, field: str) -> float:
    """The median of the rounds' ratios."""
    return float(statistics.median(ratios(comparison, field)))


def number(value: float, unit: str) -> str:
    if unit in ("req/s", "points/s"):
        return f"{value:,.0f}"
    return f"{value:,.1f}" if unit in ("µs", "bytes") else f"{value:,.2f}"


def comparison_rows(comparison: Comparison) -> list[list[str]]:
    rows = []
    for field, label, unit in MEASURES:
        api, base = median(comparison.api, field), median(comparison.baseline, field)
        target = None
        if field == "requests_s" and field in comparison.targets:
            target = Target(comparison.req_s_ratio, True, f">= {comparison.req_s_ratio}x baseline")
        elif field == "p99_ms" and field in comparison.targets:
            target = Target(P99_RATIO, False, f"<= {P99_RATIO}x baseline")
        paired = ratio(comparison, field)
        rows.append(
            [
                f"{comparison.name}: {label}",
                number(api, unit),
                number(base, unit),
                f"{paired:.2f}x",
                target.text if target else "",
                target.verdict(paired) if target else "",
            ]
        )
    return rows


def figure_row(name: str, value: float | None, unit: str, target: Target | None, shown: str | None = None) -> list[str]:
    """A row without a baseline. `shown` stands in the API column for `value` when the target judges
    something other than the figure itself (its ratio to another figure, say)."""
    if shown is None:
        shown = "not measured" if value is None else number(value, unit)
    return [name, shown, "", "", target.text if target else "", target.verdict(value) if target else ""]


def table(rows: list[list[str]]) -> str:
    header = ["measurement", "API", "baseline", "API / baseline", "target", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---|---|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def rounds_table(comparisons: list[Comparison]) -> str:
    """Every wrk run, so the spread behind each median is on the page."""
    lines = [
        "| endpoint | app | req/s per round | p99 ms per round | cores taken by other processes / by the host "
        "(steal), per round |",
        "|---|---|---|---|---|",
    ]
    for comparison in comparisons:
        for app, results in (("API", comparison.api), ("baseline", comparison.baseline)):
            rates = ", ".join(f"{r.requests_s:,.0f}" for r in results)
            p99s = ", ".join(f"{r.p99_ms:.2f}" for r in results)
            others = ", ".join(f"{r.other_cores:.2f} / {r.steal_cores:.2f}" for r in results)
            lines.append(f"| {comparison.name} | {app} | {rates} | {p99s} | {others} |")
        rate_ratios = ", ".join(f"{r:.2f}" for r in ratios(comparison, "requests_s"))
        p99_ratios = ", ".join(f"{r:.2f}" for r in ratios(comparison, "p99_ms"))
        lines.append(f"| {comparison.name} | API / baseline | {rate_ratios} | {p99_ratios} | |")
    return "\n".join(lines)


def plot(comparisons: list[Comparison], path: Path, scale_out: dict[str, dict[str, float]] | None = None) -> None:
    """Bars of API/baseline req/s and p99 per endpoint, with the target lines (REQ_S_RATIO, P99_RATIO) and
    the bars that have no target hatched; below them, when given, the scale-out ratios (comparison ->
    workload -> ratio of rates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # What is in brackets on a line of its own: five names side by side fit no other way.
    names = [c.name.replace(" (", "\n(") for c in comparisons]
    rate = [ratio(c, "requests_s") for c in comparisons]
    tail = [ratio(c, "p99_ms") for c in comparisons]
    if scale_out:
        figure, (axes, lower) = plt.subplots(2, 1, figsize=(9, 9), dpi=110, height_ratios=(5, 3.4))
        _plot_scale_out(lower, scale_out)
    else:
        figure, axes = plt.subplots(figsize=(9, 5), dpi=110)
    width = 0.36
    positions = range(len(names))
    bars_rate = axes.bar([x - width / 2 for x in positions], rate, width, label="req/s, API / baseline")
    bars_tail = axes.bar([x + width / 2 for x in positions], tail, width, label="p99 latency, API / baseline")
    for bars, values, field in ((bars_rate, rate, "requests_s"), (bars_tail, tail, "p99_ms")):
        labels = []
        for bar, value, comparison in zip(bars, values, comparisons, strict=True):
            labels.append(f"{value:.2f}" + ("" if field in comparison.targets else "\n(no target)"))
            if field not in comparison.targets:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
        axes.bar_label(bars, labels=labels)
    axes.axhline(REQ_S_RATIO, color="tab:blue", linestyle="--", linewidth=1, label=f"req/s target >= {REQ_S_RATIO}")
    axes.axhline(P99_RATIO, color="tab:orange", linestyle="--", linewidth=1, label=f"p99 target <= {P99_RATIO}")
    axes.axhline(1.0, color="grey", linewidth=0.6)
    axes.set_xticks(list(positions), names)
    axes.set_ylabel("ratio (1.0 = as good as the baseline)")
    axes.set_ylim(0, max([*rate, *tail, P99_RATIO]) * 1.25)
    axes.set_title("sprockets-cache API against a minimal Starlette + Redis baseline (medians)")
    # Below the axes, where it cannot hide a bar or its label.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small", frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _plot_scale_out(axes: Any, ratios: dict[str, dict[str, float]]) -> None:
    """Grouped bars: for each workload, one bar per comparison (2 workers / 1, cluster / one Redis)."""
    workloads = list(next(iter(ratios.values())))
    width = 0.8 / len(ratios)
    # Not the colours of the panel above, where blue and orange mean req/s and p99.
    colours = ["tab:green", "tab:purple", "tab:brown"]
    for n, (name, by_workload) in enumerate(ratios.items()):
        offset = (n - (len(ratios) - 1) / 2) * width
        positions = [x + offset for x in range(len(workloads))]
        bars = axes.bar(positions, list(by_workload.values()), width, label=name, color=colours[n % len(colours)])
        axes.bar_label(bars, fmt="%.2f")
    axes.axhline(1.0, color="grey", linewidth=0.6)
    axes.set_xticks(range(len(workloads)), workloads)
    axes.set_ylabel("ratio of req/s or points/s")
    axes.set_ylim(0, max([2.0, *(r for by in ratios.values() for r in by.values())]) * 1.15)
    axes.set_title(f"Scaling out, all on the same {os.cpu_count()} cores (medians; 2 workers at 2.0 = linear)")
    axes.legend(loc="upper right", fontsize="small", frameon=False)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return match[1] if match else "unknown"


def _versions(redis_version: str) -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    tools = f"Python {platform.python_version()}, redis-server {redis_version}, wrk {_wrk_version()}"
    return f"{tools}; {', '.join(found)}"


def busy_fraction(sample_s: float = 2.0) -> float:
    """How busy the CPUs are (all processes, from /proc/stat) over `sample_s` seconds."""

    def times() -> tuple[int, int]:
        fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]  # user, nice, system, irq, softirq
        return busy, sum(fields[:8])

    busy_before, total_before = times()
    time.sleep(sample_s)
    busy_after, total_after = times()
    return (busy_after - busy_before) / max(1, total_after - total_before)


def machine(redis_version: str, run_s: float, busy_before: float) -> str:
    return "\n".join(
        [
            f"- CPU: {_cpu_model()}, {os.cpu_count()} cores (`nproc`); memory {_memory_gib():.1f} GiB",
            f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; bench/run.py took {run_s / 60:.1f} min",
            f"- Load from other processes: the CPUs were {busy_before:.0%} busy just before the run; "
            f"load average at the end {os.getloadavg()[0]:.2f}",
            f"- Versions: {_versions(redis_version)}",
        ]
    )


def put_section(path: Path, title: str, body: str) -> None:
    """Put `## title` into BENCHMARKS.md in place of its older self, else before the storage layout, and
    leave the rest as it is (for a part of the bench run alone)."""
    text = path.read_text()
    section = f"## {title}\n\n{body}\n\n"
    older = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## )", re.DOTALL | re.MULTILINE)
    if older.search(text):
        text = older.sub(lambda _: section, text, count=1)
    else:
        text = text.replace("## Storage layout", section + "## Storage layout", 1)
    path.write_text(text)


def write(path: Path, sections: dict[str, str], storage_results: Path) -> None:
    """BENCHMARKS.md: the given sections, a pointer to the storage comparison, and the kept analysis."""
    old = path.read_text() if path.exists() else ""
    analysis = ANALYSIS.search(old)
    storage = (
        f"[bench/{storage_results.name}](bench/{storage_results.name}) compares the ways to keep points in Redis"
        " (sorted set, stream, hash buckets, packed buckets) at 1,000,000 points; `python bench/storage.py"
        " --redis-url URL` measures them again on a Redis of your own."
    )
    parts = [
        "# Benchmarks",
        "Written by `make bench` (bench/run.py) on every run; edit only the Notes section. Earlier runs are in"
        " this file's git history.",
    ]
    parts += [f"## {title}\n\n{body}" for title, body in sections.items()]
    parts.append(f"## Storage layout\n\n{storage}")
    parts.append(f"## Notes\n\n{analysis[0] if analysis else NO_ANALYSIS}")
    path.write_text("\n\n".join(parts) + "\n")
