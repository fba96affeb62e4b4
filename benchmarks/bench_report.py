"""Report-side benchmarks (predictions-only mode, no model): ratios measured in one run.

    .venv/bin/python benchmarks/bench_report.py [--quick] [--repeats 5]

1. predictions-only evaluation vs a bare numpy pass computing the same per-epoch loss, accuracy and
   confusion matrices from the same .npz files, both in this process (target <= 1.5x);
2. the whole report (metrics.json, report.html, report.md; no PDF) for 30 epochs x 20,000 items x 20 classes
   as a fresh process, vs the same bare numpy pass as a fresh process (python -c), alternating (target <= 4x);
   then the seconds per stage of a fresh process (interpreter start and imports included) and the size of
   report.html;
3. everything after evaluation for 50 epochs x 100,000 items x 100 classes, seconds per stage and peak memory
   (target < 20 s, < 2 GB) -- skipped with --quick;
4. re-rendering the bundled sample runs from their cache, as a fresh process (target < 3 s; < 1.5 s without the
   PDF): digits_mlp, whose data is a file, and dialogue_gru, whose data comes from val_data() in its spec; and how
   long importing torch takes (python -c "import torch" alone).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from _common import paired_ratio, peak_rss_mb, record  # noqa: E402


def write_predictions(folder: Path, epochs: int, items: int, classes: int) -> None:
    """Per-epoch float32 logits growing more confident, as a training run's saved outputs would."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, items)
    base = rng.normal(size=(items, classes)).astype(np.float32)
    folder.mkdir(parents=True)
    for epoch in range(1, epochs + 1):
        logits = base + rng.normal(scale=0.3, size=base.shape).astype(np.float32)
        logits[np.arange(items), labels] += 1.5
        np.savez(folder / f"epoch_{epoch}.npz", outputs=logits * np.float32(0.5 + 0.05 * epoch), labels=labels)


# The floor: per epoch read the file, float64 log-softmax, loss, accuracy and confusion matrix. One source for the
# in-process timing and the fresh-process one (python -c).
BARE_NUMPY_PASS = """
import sys
from pathlib import Path
import numpy as np

def bare_numpy_pass(folder):
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path) as archive:
            x, y = archive["outputs"].astype(np.float64), archive["labels"]
        c = x.shape[1]
        shifted = x - x.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_probs[np.arange(len(y)), y].mean()
        pred = log_probs.argmax(axis=1)
        accuracy = (pred == y).mean()
        confusion = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
        assert np.isfinite(loss) and 0 <= accuracy <= 1 and confusion.sum() == len(y)
"""
_namespace: dict = {}
exec(BARE_NUMPY_PASS, _namespace)
bare_numpy_pass = _namespace["bare_numpy_pass"]

# One whole report in a fresh process, printing as JSON its seconds per stage after the interpreter started:
# importing postmortem, the imports write_report makes before its first stage, then each stage.
STAGES = """
import json, sys, time
started = time.perf_counter()
from pathlib import Path
from postmortem.config import ReportConfig
from postmortem.pipeline import write_report
imported = time.perf_counter()
run, out = Path(sys.argv[1]), Path(sys.argv[2])
result = write_report(ReportConfig(run=run, predictions=str(run / "preds"), out=out, quiet=True, no_pdf=True))
print(json.dumps({"import postmortem": imported - started,
                  "imports of the stages": result.seconds - sum(result.stage_seconds.values()),
                  **result.stage_seconds}))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], check=True, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def whole_report(run: Path, out: Path, bare_in_process: float, repeats: int) -> None:
    """The whole report as a fresh process against the bare numpy pass as a fresh process, alternating."""
    import json
    import statistics

    def ours() -> None:
        shutil.rmtree(out, ignore_errors=True)
        _python("-m", "postmortem", "report", str(run), "--predictions", str(run / "preds"), "--out", str(out),
                "--no-pdf", "--quiet")

    bare = BARE_NUMPY_PASS + "bare_numpy_pass(sys.argv[1])"
    paired = paired_ratio(ours, lambda: _python("-c", bare, str(run / "preds")), repeats)
    t_ours, t_bare, ratio = paired.ours_s, paired.baseline_s, paired.ratio
    size = (out / "report.html").stat().st_size
    runs = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        runs.append(json.loads(_python("-c", STAGES, str(run), str(out)).stdout))
    stages = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    print(f"2. whole report as a fresh process, 30 x 20,000 x 20 (no PDF): {t_ours:.2f} s; the bare numpy pass as a "
          f"fresh process {t_bare:.2f} s: ratio {ratio:.2f}x (target <= 4x); {t_ours / bare_in_process:.1f}x the "
          f"in-process pass ({bare_in_process:.2f} s)")
    print("   stages (fresh process, medians): " + ", ".join(f"{k} {v:.3f} s" for k, v in stages.items())
          + f"; report.html {size / 1e6:.2f} MB")
    record("whole_report_fresh_process", {"postmortem_s": round(t_ours, 3), "baseline_s": round(t_bare, 3),
                                          "ratio": round(ratio, 3), "baseline_in_process_s": round(bare_in_process, 3),
                                          "ratio_vs_in_process": round(t_ours / bare_in_process, 3),
                                          "stages_s": stages, "report_html_bytes": size})


def _timed_python(*args: str) -> float:
    started = time.perf_counter()
    _python(*args)
    return time.perf_counter() - started


def run_cli(*args: str) -> float:
    return _timed_python("-m", "postmortem", "report", *args, "--quiet")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 50 x 100k x 100 stage benchmark")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from postmortem.config import ReportConfig
    from postmortem.evaluate.runner import evaluate_run

    root = Path(tempfile.mkdtemp(prefix="pm-bench-report-"))
    try:
        run = root / "run30"
        write_predictions(run / "preds", 30, 20_000, 20)
        out = root / "out30"

        def ours() -> None:
            shutil.rmtree(out, ignore_errors=True)
            evaluate_run(ReportConfig(run=run, predictions=str(run / "preds"), out=out, quiet=True))

        paired = paired_ratio(ours, lambda: bare_numpy_pass(run / "preds"), args.repeats)
        t_ours, t_bare, ratio = paired.ours_s, paired.baseline_s, paired.ratio
        print(f"1. predictions-only evaluation, 30 x 20,000 x 20: postmortem {t_ours:.2f} s, bare numpy {t_bare:.2f} s, "
              f"ratio {ratio:.2f}x (target <= 1.5x)")
        record("predictions_eval_vs_numpy", {"postmortem_s": round(t_ours, 3), "baseline_s": round(t_bare, 3),
                                             "ratio": round(ratio, 3)})

        whole_report(run, out, t_bare, args.repeats)

        torch_import = sorted(_timed_python("-c", "import torch") for _ in range(args.repeats))[args.repeats // 2]
        for sample, data in (("digits_mlp", "a data file (val.pt): read from the cache alone, without torch"),
                             ("dialogue_gru", "val_data() in the spec: its code runs, and imports torch")):
            cached_out = root / f"{sample}-out"
            run_cli(str(ROOT / "sample_runs" / sample), "--out", str(cached_out))          # fills the cache
            rerender = sorted(run_cli(str(ROOT / "sample_runs" / sample), "--out", str(cached_out))
                              for _ in range(args.repeats))[args.repeats // 2]
            rerender_html = sorted(run_cli(str(ROOT / "sample_runs" / sample), "--out", str(cached_out), "--no-pdf")
                                   for _ in range(args.repeats))[args.repeats // 2]
            print(f"4. re-render of sample_runs/{sample} from cache, data from {data}: {rerender:.2f} s with PDF, "
                  f"{rerender_html:.2f} s without (target < 3 s; issue 12: < 1.5 s without); importing torch alone "
                  f"takes {torch_import:.2f} s of a fresh process")
            record(f"rerender_{sample}_from_cache", {"with_pdf_s": round(rerender, 3),
                                                     "without_pdf_s": round(rerender_html, 3),
                                                     "import_torch_s": round(torch_import, 3)})

        if not args.quick:
            big_stages(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def big_stages(root: Path) -> None:
    """Stage by stage for 50 x 100,000 x 100 in this process, with peak memory."""
    from postmortem.config import ReportConfig
    from postmortem.pipeline import write_report

    run = root / "run50"
    print("3. writing 50 epochs x 100,000 items x 100 classes of predictions ...", flush=True)
    write_predictions(run / "preds", 50, 100_000, 100)
    before = peak_rss_mb()
    result = write_report(ReportConfig(run=run, predictions=str(run / "preds"), out=root / "out50", quiet=True))
    after_evaluation = sum(v for k, v in result.stage_seconds.items() if k != "evaluate")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"   stages: {stages}")
    print(f"   everything after evaluation: {after_evaluation:.1f} s (target < 20 s); peak memory {peak:.0f} MiB "
          f"(the generator alone peaked at {before:.0f} MiB; target < 2048 MiB)")
    record("after_evaluation_50x100kx100", {"seconds": round(after_evaluation, 2), "peak_mib": round(peak),
                                            "stages": {k: round(v, 2) for k, v in result.stage_seconds.items()}})


if __name__ == "__main__":
    sys.exit(main())
