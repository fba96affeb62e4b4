"""The scenario benchmark (issue 10): does postmortem's verdict name the cause each run was built with?

    .venv/bin/python benchmarks/bench_scenarios.py [--size small|large] [--seeds 0,1,2] [--only KIND,...]

Builds the scenarios of tests/_scenarios.py (trained MLPs whose cause of the validation-loss rise is known
by construction and confirmed independently), runs `python -m postmortem report RUN --predictions DIR`
on each as a fresh process, reads metrics.json's "verdict" and prints one row per run: expected and found
status / primary cause, the classes named, for wrong validation labels the precision and recall of the
named item ids against the relabelled ones, whether a clean-label run got a label-error claim (the verdict
names validation_labels, or item ids), and right or wrong. A row whose construction did not show its
cause (tests/_scenarios.defining_facts) is marked so and not scored. The rows go to
benchmarks/scenarios.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from _scenarios import BUILDERS, Scenario, build, defining_facts  # noqa: E402
from _common import print_table, print_verdict_summary, scenario_arguments  # noqa: E402

RESULTS = HERE / "scenarios.json"
COLUMNS = ("scenario", "expected", "found", "classes named", "ids P / R", "false label claim", "result")


def run_report(s: Scenario, work: Path) -> tuple[dict | None, str, float]:
    """(metrics.json's verdict or None, an error line or "", seconds) of one fresh `postmortem report`."""
    run, out = work / "runs" / s.name, work / "out" / s.name
    run.mkdir(parents=True)
    command = [sys.executable, "-m", "postmortem", "report", str(run), "--predictions", str(s.predictions_dir),
               "--out", str(out), "--no-pdf", "--quiet", "--class-names", ",".join(s.class_names)]
    if s.class_weights is not None:
        command += ["--class-weights", ",".join(repr(w) for w in s.class_weights)]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return None, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}", seconds
    return json.loads((out / "metrics.json").read_text()).get("verdict"), "", seconds


def score(s: Scenario, verdict: dict | None, error: str) -> dict:
    """One row: what was expected, what the verdict says, and whether it is right."""
    c = s.confirmation
    facts = defining_facts(s)
    row = {
        "scenario": s.name, "size": s.size, "seed": s.seed, "n_items": c.n_items, "epochs": len(c.losses),
        "best_epoch": c.best_epoch, "last_epoch": c.last_epoch, "build_seconds": round(s.build_seconds, 2),
        "expected_status": s.expected_status, "expected_primary": s.expected_primary,
        "acceptable_primary": sorted(s.acceptable_primary), "expected_classes": list(s.expected_classes),
        "construction_confirmed": all(facts.values()), "unmet_facts": [f for f, ok in facts.items() if not ok],
        "loss_change": vars(c.loss_change), "scaled_loss_change": vars(c.scaled_loss_change),
        "error": error or None, "verdict": verdict,
    }
    if verdict is None or not row["construction_confirmed"]:
        return {**row, "right": None}
    named_ids = set(verdict.get("item_ids") or [])
    causes = {verdict.get("primary_cause"), *(verdict.get("contributing_causes") or [])}
    flipped = set(s.flipped_ids)
    row.update(
        found_status=verdict.get("status"), found_primary=verdict.get("primary_cause"),
        classes_named=list(verdict.get("classes") or []),
        item_id_precision=len(named_ids & flipped) / len(named_ids) if flipped and named_ids else None,
        item_id_recall=len(named_ids & flipped) / len(flipped) if flipped else None,
        false_label_claim=s.clean_validation_labels and ("validation_labels" in causes or bool(named_ids)),
    )
    primary_ok = (row["found_primary"] in s.acceptable_primary if s.expected_primary
                  else row["found_primary"] is None)
    row["right"] = (row["found_status"] == s.expected_status and primary_ok
                    and set(s.expected_classes) <= set(row["classes_named"]) and not row["false_label_claim"])
    return row


def cells(row: dict) -> tuple[str, ...]:
    expected = f"{row['expected_status']} / {' | '.join(row['acceptable_primary']) or '-'}"
    if row["expected_classes"]:
        expected += f" [{', '.join(row['expected_classes'])}]"
    if not row["construction_confirmed"]:
        result = "construction not confirmed"
    elif row["verdict"] is None:
        result = row["error"] or "no verdict"
    else:
        result = "right" if row["right"] else "WRONG"
    if row["verdict"] is None or "found_status" not in row:
        return row["scenario"], expected, "-", "-", "-", "-", result
    ids = "-" if row["item_id_recall"] is None else " / ".join(
        "-" if value is None else f"{value:.2f}" for value in (row["item_id_precision"], row["item_id_recall"]))
    return (row["scenario"], expected, f"{row['found_status']} / {row['found_primary'] or '-'}",
            ", ".join(row["classes_named"]) or "-", ids, "yes" if row["false_label_claim"] else "no", result)



def main() -> int:
    args = scenario_arguments(__doc__.split("\n\n")[0], BUILDERS)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="postmortem-scenarios-") as tmp:
        work = Path(tmp)
        for kind in args.only.split(","):
            for seed in (int(v) for v in args.seeds.split(",")):
                s = build(kind, work / "scenarios", args.size, seed)
                verdict, error, seconds = run_report(s, work)
                rows.append({**score(s, verdict, error), "report_seconds": round(seconds, 2)})
                print(f"{s.name}: built in {s.build_seconds:.1f} s, reported in {seconds:.1f} s", file=sys.stderr)
    print_table(COLUMNS, [cells(row) for row in rows])
    print_verdict_summary(rows, started)
    RESULTS.write_text(json.dumps({"size": args.size, "seeds": args.seeds, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
