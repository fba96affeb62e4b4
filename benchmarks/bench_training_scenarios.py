"""The training-side scenario benchmark (issue 16, item 5): does postmortem's verdict name the cause each model-mode
run was built with?

    .venv/bin/python benchmarks/bench_training_scenarios.py [--size small|large] [--seeds 0,1,2] [--only KIND,...]

Builds the scenarios of tests/_training_scenarios.py (trained MLPs, checkpoints with optimizer and scheduler state, a
spec with build_model(), val_data() and train_data() where a training subset is given; the cause known by
construction and confirmed independently), runs `python -m postmortem report RUN --no-pdf` on each as a fresh
process, reads metrics.json and prints one row per run: expected and found primary cause, the classes named, the ids
named against the constructed ones (the relabelled training items for label noise, the leaked validation items for
leakage: precision / recall), the LR event the verdict ties the rise to, false claims (wrong validation labels on
clean ones; label noise claimed on clean training labels) and right or wrong. A row whose construction did not show
its cause (defining_facts) is marked so and not scored. The rows go to benchmarks/training_scenarios.json.
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
from _training_scenarios import BUILDERS, TrainingScenario, build  # noqa: E402
from _common import print_table, print_verdict_summary, scenario_arguments  # noqa: E402

RESULTS = HERE / "training_scenarios.json"
COLUMNS = ("scenario", "expected", "found", "classes named", "ids P / R", "LR event tied", "false claim", "result")
LABEL_NOISE_WORDS = "noisy training labels — on the training subset"     # the reading that claims label noise


def run_report(s: TrainingScenario, work: Path) -> tuple[dict | None, str, float]:
    """(metrics.json or None, an error line or "", seconds) of one fresh `postmortem report RUN`."""
    out = work / "out" / s.name
    command = [sys.executable, "-m", "postmortem", "report", str(s.run), "--out", str(out), "--no-pdf", "--quiet"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return None, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}", seconds
    return json.loads((out / "metrics.json").read_text()), "", seconds


def _named_ids(s: TrainingScenario, metrics: dict) -> tuple[set[str], set[str]] | None:
    """(ids the report names, ids the construction made) where the scenario has constructed ids."""
    if s.relabelled_ids:
        evidence = [e for e in (metrics.get("training") or {}).get("comparison", {}).get("label_evidence", [])
                    if [e["true_class"], e["predicted_class"]] == list(s.expected_classes)]
        return set(evidence[0]["item_ids"]) if evidence else set(), set(s.relabelled_ids)
    if s.leaked_ids:
        return set(((metrics.get("training") or {}).get("leakage") or {}).get("item_ids", [])), set(s.leaked_ids)
    return None


def score(s: TrainingScenario, metrics: dict | None, error: str) -> dict:
    """One row: what was expected, what the report says, and whether it is right."""
    c = s.confirmation
    row = {
        "scenario": s.name, "kind": s.kind, "size": s.size, "seed": s.seed, "n_items": c.n_items,
        "epochs": len(c.losses), "best_epoch": c.best_epoch, "last_epoch": c.last_epoch,
        "build_seconds": round(s.build_seconds, 2), "with_subset": s.with_subset,
        "expected_status": s.expected_status, "acceptable_primary": sorted(s.acceptable_primary),
        "expected_classes": list(s.expected_classes), "expected_findings": list(s.expected_findings),
        "expected_lr_event": None if s.lr_event is None else vars(s.lr_event),
        "construction_confirmed": all(s.facts.values()), "unmet_facts": [f for f, ok in s.facts.items() if not ok],
        "loss_change": vars(c.loss_change), "error": error or None,
        "verdict": None if metrics is None else metrics["verdict"],
    }
    if metrics is None or not row["construction_confirmed"]:
        return {**row, "right": None}
    verdict = metrics["verdict"]
    causes = {verdict["primary_cause"], *verdict["contributing_causes"]}
    findings = {f["id"] for f in metrics["findings"]}
    ids = _named_ids(s, metrics)
    ties = verdict.get("training_events") or []
    label_noise_claimed = s.kind == "class_undersampled" and LABEL_NOISE_WORDS in verdict["sentences"]["model_or_else"]
    if not s.with_subset and s.kind == "class_undersampled":      # must name both explanations instead
        label_noise_claimed = "or fewer" not in verdict["sentences"]["model_or_else"]
    row.update(
        found_status=verdict["status"], found_primary=verdict["primary_cause"], classes_named=verdict["classes"],
        findings=sorted(findings), lr_events_tied=[t["kind"] for t in ties],
        id_precision=None if ids is None or not ids[0] else len(ids[0] & ids[1]) / len(ids[0]),
        id_recall=None if ids is None else len(ids[0] & ids[1]) / len(ids[1]),
        false_claim=("validation_labels" in causes or bool(verdict["item_ids"]) or label_noise_claimed),
    )
    lr_ok = s.lr_event is None or [s.lr_event.kind] == row["lr_events_tied"]
    mismatch = next((f for f in metrics["findings"] if f["id"] == "logged_loss_mismatch"), None)
    row["train_mode_named"] = mismatch is not None and "train mode" in mismatch["summary"]
    log_ok = "logged_loss_mismatch" not in s.expected_findings or row["train_mode_named"]
    primary_ok = not s.acceptable_primary or row["found_primary"] in s.acceptable_primary
    row["right"] = (row["found_status"] == s.expected_status and primary_ok and log_ok
                    and set(s.expected_classes) <= set(row["classes_named"])
                    and set(s.expected_findings) <= findings and lr_ok and not row["false_claim"])
    return row


def cells(row: dict) -> tuple[str, ...]:
    expected = (" | ".join(row["acceptable_primary"]) or "any") + (f" [{', '.join(row['expected_classes'])}]"
                                                        if row["expected_classes"] else "")
    if not row["construction_confirmed"]:
        result = "construction not confirmed"
    elif row["verdict"] is None:
        result = row["error"] or "no verdict"
    else:
        result = "right" if row["right"] else "WRONG"
    if "found_status" not in row:
        return row["scenario"], expected, "-", "-", "-", "-", "-", result
    ids = "-" if row["id_recall"] is None else " / ".join(
        "-" if v is None else f"{v:.2f}" for v in (row["id_precision"], row["id_recall"]))
    return (row["scenario"], expected, f"{row['found_status']} / {row['found_primary'] or '-'}",
            ", ".join(row["classes_named"]) or "-", ids, ", ".join(row["lr_events_tied"]) or "-",
            "yes" if row["false_claim"] else "no", result)



def main() -> int:
    args = scenario_arguments(__doc__.split("\n\n")[0], BUILDERS)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="postmortem-training-scenarios-") as tmp:
        work = Path(tmp)
        for kind in args.only.split(","):
            for seed in (int(v) for v in args.seeds.split(",")):
                for s in build(kind, work / "scenarios", args.size, seed):
                    metrics, error, seconds = run_report(s, work)
                    rows.append({**score(s, metrics, error), "report_seconds": round(seconds, 2)})
                    print(f"{s.name}: built in {s.build_seconds:.1f} s, reported in {seconds:.1f} s", file=sys.stderr)
    print_table(COLUMNS, [cells(row) for row in rows])
    print_verdict_summary(rows, started)
    RESULTS.write_text(json.dumps({"size": args.size, "seeds": args.seeds, "rows": rows}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
