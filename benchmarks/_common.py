"""Shared helpers for the benchmarks: timing, peak memory, and the results file."""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).with_name("results.json")


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@dataclass(frozen=True)
class Paired:
    """Medians over paired runs: wall seconds of each side and the median of the per-pair ratios; the same for
    this process's CPU seconds (all its threads; a shared machine's load inflates wall time far more)."""

    ours_s: float
    baseline_s: float
    ratio: float
    ours_cpu_s: float
    baseline_cpu_s: float
    cpu_ratio: float


def paired_ratio(ours: Callable[[], object], baseline: Callable[[], object], repeats: int,
                 warmup: bool = True) -> Paired:
    """Both sides run `repeats` times in A B, B A, A B ... order, so that drift in the machine's speed affects both
    alike; one run of each first unless `warmup` is False (for workloads of minutes)."""
    if warmup:
        ours(), baseline()
    wall: dict[str, list[float]] = {"ours": [], "baseline": []}
    cpu: dict[str, list[float]] = {"ours": [], "baseline": []}
    for repeat in range(repeats):
        pair = (("ours", ours), ("baseline", baseline))
        for side, function in (pair if repeat % 2 == 0 else pair[::-1]):
            started, started_cpu = time.perf_counter(), time.process_time()
            function()
            wall[side].append(time.perf_counter() - started)
            cpu[side].append(time.process_time() - started_cpu)
    median = statistics.median
    return Paired(median(wall["ours"]), median(wall["baseline"]),
                  median([x / y for x, y in zip(wall["ours"], wall["baseline"])]),
                  median(cpu["ours"]), median(cpu["baseline"]),
                  median([x / y for x, y in zip(cpu["ours"], cpu["baseline"])]))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record(name: str, entry: dict) -> None:
    """Merge one benchmark's figures into benchmarks/results.json, with the machine they came from."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[name] = {**entry, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
                     "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- the scenario benchmarks' shared parts
def scenario_arguments(description: str, kinds) -> argparse.Namespace:
    """--size, --seeds and --only, as both scenario benchmarks take them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=("small", "large"), default="large")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds built for every scenario")
    parser.add_argument("--only", default=",".join(kinds), help="comma-separated scenario kinds")
    return parser.parse_args()


def print_table(columns: tuple[str, ...], lines: list[tuple[str, ...]]) -> None:
    """A plain-text table, each column as wide as its widest cell."""
    table = [columns, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for i, line in enumerate(table):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths)))
        if i == 0:
            print("-+-".join("-" * width for width in widths))


def print_verdict_summary(rows: list[dict], started: float) -> None:
    """How many scored verdicts were right, how many rows had none, and the wall time since `started`."""
    scored = [row for row in rows if row["right"] is not None]
    print(f"\n{sum(row['right'] for row in scored)} of {len(scored)} verdicts right "
          f"({len(rows) - len(scored)} rows without a verdict or a confirmed construction)")
    print(f"total wall time {time.perf_counter() - started:.1f} s")
