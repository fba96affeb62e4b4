"""Shared helpers for the benchmarks: timing, peak memory, and the results file."""
from __future__ import annotations

import json
import platform
import resource
import statistics
import time
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


def paired_ratio(ours: Callable[[], object], baseline: Callable[[], object], repeats: int,
                 warmup: bool = True) -> tuple[float, float, float]:
    """(ours, baseline, ratio): medians over alternating runs, so drift affects both alike; one run of each
    first unless `warmup` is False (workloads of minutes, whose first run is no colder than the others)."""
    if warmup:
        ours(), baseline()
    a, b = [], []
    for _ in range(repeats):
        for function, sink in ((ours, a), (baseline, b)):
            started = time.perf_counter()
            function()
            sink.append(time.perf_counter() - started)
    ratios = [x / y for x, y in zip(a, b)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record(name: str, entry: dict) -> None:
    """Merge one benchmark's figures into benchmarks/results.json, with the machine they came from."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[name] = {**entry, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
                     "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
