"""Shared helpers for the benchmarks: timing, peak memory, and the results file."""
from __future__ import annotations

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
