"""The whole report by class count (issue 18): 20, 100, 1,000 and 10,000 classes against the bare numpy pass.

    .venv/bin/python benchmarks/bench_classes.py [--classes 20,100,1000,10000] [--repeats 3]

Per class count C, predictions of E epochs x N items x C classes (float32 logits in .npz files, written as
bench_report.write_predictions writes them: 10 x 10,000 items up to 1,000 classes; 10 x 2,000 items at 10,000,
the same 20 M outputs per epoch as 2,000 x 10,000 tags of a tagging vocabulary): the whole report (metrics.json,
report.html, report.md; no PDF) as a fresh process against bench_report's bare numpy pass (load, float64
log-sum-exp loss, accuracy, a C x C confusion matrix) as a fresh process, in A B, B A, ... order, medians of the
paired ratios; then one more fresh run that reports its seconds per stage and its peak memory, and the sizes of
metrics.json (its fixed part and the bytes per epoch, which are each epoch's own) and report.html. Merged into
benchmarks/results.json as "classes_C". Target (issue 18): at most 4x at 1,000 classes, metrics.json under 10 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import paired_ratio, record  # noqa: E402
from bench_report import BARE_NUMPY_PASS, write_predictions  # noqa: E402

# (epochs, items) per class count: the same items up to 1,000 classes, the same outputs per epoch at 10,000
SIZES = {20: (10, 10_000), 100: (10, 10_000), 1000: (10, 10_000), 10_000: (10, 2_000)}

# One whole report in a fresh process, printing its seconds per stage and its peak resident memory as JSON.
MEASURED = """
import json, resource, sys, time
started = time.perf_counter()
from pathlib import Path
from postmortem.config import ReportConfig
from postmortem.report import write_report
run, out = Path(sys.argv[1]), Path(sys.argv[2])
result = write_report(ReportConfig(run=run, predictions=str(run / "preds"), out=out, quiet=True, no_pdf=True))
print(json.dumps({"seconds": time.perf_counter() - started, "stages": result.stage_seconds,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], check=True, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _counting_cpu(function, seconds: list[float]):
    """`function`, appending each call's CPU seconds in its child processes (user + system) to `seconds`."""
    def counted() -> None:
        before = _children_cpu_s()
        function()
        seconds.append(_children_cpu_s() - before)
    return counted


def metrics_sizes(path: Path) -> tuple[int, int, float]:
    """metrics.json's bytes: in all, the part outside the epochs, and the mean bytes of one epoch's entry (as it
    is written: compact when the file is large)."""
    text = path.read_text()
    document = json.loads(text)
    compact = "\n" not in text.strip()
    dumps = (lambda value: json.dumps(value, separators=(",", ":"))) if compact else \
        (lambda value: json.dumps(value, indent=1))
    per_epoch = [len(dumps(epoch)) for epoch in document["epochs"]]
    return len(text), len(text) - sum(per_epoch), sum(per_epoch) / len(per_epoch)


def one_class_count(root: Path, n_classes: int, repeats: int) -> dict:
    epochs, items = SIZES[n_classes]
    run, out = root / f"run{n_classes}", root / f"out{n_classes}"
    write_predictions(run / "preds", epochs, items, n_classes)

    def ours() -> None:
        shutil.rmtree(out, ignore_errors=True)
        _python("-m", "postmortem", "report", str(run), "--predictions", str(run / "preds"), "--out", str(out),
                "--no-pdf", "--quiet")

    def bare() -> None:
        _python("-c", BARE_NUMPY_PASS + "bare_numpy_pass(sys.argv[1])", str(run / "preds"))

    cpu: dict[str, list[float]] = {"ours": [], "bare": []}
    paired = paired_ratio(_counting_cpu(ours, cpu["ours"]), _counting_cpu(bare, cpu["bare"]), repeats)
    # both sides ran once more first (the warm-up); the pairs are the calls after it, in order
    cpu_ratio = statistics.median(a / b for a, b in zip(cpu["ours"][1:], cpu["bare"][1:]))
    shutil.rmtree(out, ignore_errors=True)
    measured = json.loads(_python("-c", MEASURED, str(run), str(out)).stdout)
    total, fixed, per_epoch = metrics_sizes(out / "metrics.json")
    entry = {"epochs": epochs, "items": items, "classes": n_classes, "postmortem_s": round(paired.ours_s, 3),
             "baseline_s": round(paired.baseline_s, 3), "ratio": round(paired.ratio, 3),
             "cpu_s": round(statistics.median(cpu["ours"][1:]), 3),
             "baseline_cpu_s": round(statistics.median(cpu["bare"][1:]), 3), "cpu_ratio": round(cpu_ratio, 3),
             "paired_runs": repeats,
             "peak_mib": round(measured["peak_mib"]),
             "stages_s": {k: round(v, 3) for k, v in measured["stages"].items()},
             "metrics_json_bytes": total, "metrics_json_fixed_bytes": fixed,
             "metrics_json_bytes_per_epoch": round(per_epoch), "report_html_bytes": (out / "report.html").stat().st_size}
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default="20,100,1000,10000",
                        help=f"class counts, comma-separated, from {', '.join(map(str, SIZES))}")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    counts = [int(c) for c in args.classes.split(",")]
    unknown = [c for c in counts if c not in SIZES]
    if unknown:
        parser.error(f"no size set for {unknown}; choose from {sorted(SIZES)}")
    print(f"whole report by class count, {args.repeats} paired fresh-process runs each (medians; this machine's "
          f"{os.cpu_count()} cores may be shared with other work, which moves wall times from run to run)")
    print(f"{'classes':>8} {'epochs x items':>15} {'postmortem':>11} {'bare':>7} {'ratio':>6} {'CPU ratio':>9} "
          f"{'peak':>8} {'metrics.json':>13} {'per epoch':>10} {'report.html':>11}")
    root = Path(tempfile.mkdtemp(prefix="pm-bench-classes-"))
    try:
        for n_classes in counts:
            started = time.perf_counter()
            e = one_class_count(root, n_classes, args.repeats)
            print(f"{n_classes:>8} {e['epochs']:>6} x {e['items']:>6} {e['postmortem_s']:>9.2f} s "
                  f"{e['baseline_s']:>5.2f} s {e['ratio']:>5.2f}x {e['cpu_ratio']:>8.2f}x {e['peak_mib']:>5} MiB "
                  f"{e['metrics_json_bytes'] / 1e6:>10.2f} MB {e['metrics_json_bytes_per_epoch'] / 1e3:>7.0f} kB "
                  f"{e['report_html_bytes'] / 1e6:>8.2f} MB   ({time.perf_counter() - started:.0f} s)", flush=True)
            print("         stages of one more run: " + ", ".join(f"{k} {v:.2f} s" for k, v in e["stages_s"].items()),
                  flush=True)
            record(f"classes_{n_classes}", e)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("targets (issue 18): ratio <= 4x at 1,000 classes; metrics.json < 10 MB at 10 x 1,000, linear in epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
