"""Issue 2, calibration edges and predictions-only mode (--predictions DIR, no model needed).

ECE is top-label with 15 equal-width (lo, hi] bins as scikit-learn's calibration_curve assigns them;
a confidence of exactly 1.0 belongs to the last bin. Overconfident outputs (large logit gaps) give
confidences that are exactly 1.0 in float64, right and wrong, which is where bin conventions differ.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _core_runs import (IGNORE_INDEX, BuiltRun, assert_metrics_match, build_mlp_run, mlp_log_probs, parse_html,
                        provenance_says, reference_epoch, report_ok, run_cli, save_shuffled)


def _logits(rng: np.random.Generator, labels: np.ndarray, scale: float) -> np.ndarray:
    """Noisy logits that favour the label; `scale` makes them more (over)confident."""
    logits = rng.normal(size=(len(labels), 3))
    logits[np.arange(len(labels)), np.clip(labels, 0, 2)] += 1.0
    return logits * scale


def test_predictions_mode_with_mask_ignore_and_saturated_confidences(tmp_path):
    rng = np.random.default_rng(11)
    pred_dir = tmp_path / "run" / "predictions"
    pred_dir.mkdir(parents=True)
    n = 240
    mask = (rng.random(n) > 0.1).astype(np.int64)
    labels = np.where(rng.random(n) < 0.05, IGNORE_INDEX, rng.integers(0, 3, size=n))
    expected = []
    for epoch, scale in ((1, 1.0), (2, 8.0), (3, 40.0), (10, 400.0)):
        logits = _logits(rng, labels, scale)
        np.savez(pred_dir / f"epoch_{epoch}.npz", outputs=logits, labels=labels, mask=mask)
        counted = (mask != 0) & (labels != IGNORE_INDEX)
        log_probs = F.log_softmax(torch.from_numpy(logits[counted]), dim=-1)
        exp = reference_epoch(epoch, f"epoch_{epoch}.npz", log_probs, torch.from_numpy(labels[counted]),
                              ["a", "b", "c"], [1.0, 2.0, 0.5])
        expected.append(exp)
    saturated = expected[-1]
    ones = saturated["_confidence"] == 1.0
    assert ones.sum() > 50 and (ones & ~saturated["_correct"]).sum() > 5, "fixture: exact 1.0 confidences, right and wrong"

    built = BuiltRun(tmp_path / "run", ["--class-names", "a,b,c", "--class-weights", "1,2,0.5"], ["a", "b", "c"],
                     [1.0, 2.0, 0.5], expected)
    out = tmp_path / "out"
    report_ok(run_cli("report", built.path, "--predictions", pred_dir, "--out", out, "--no-pdf", "--quiet",
                      *built.options))
    metrics = json.loads((out / "metrics.json").read_text())
    assert_metrics_match(metrics, built)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 10]


def test_predictions_mode_probabilities_auto_detected(tmp_path):
    rng = np.random.default_rng(5)
    pred_dir = tmp_path / "run" / "preds"
    pred_dir.mkdir(parents=True)
    labels = rng.integers(0, 3, size=150)
    expected = []
    for epoch in (1, 2, 3):
        logits = _logits(rng, labels, 2.0 * epoch)
        probs = torch.softmax(torch.from_numpy(logits).float(), dim=-1)        # float32 probabilities, as saved
        torch.save({"outputs": probs, "labels": torch.from_numpy(labels)}, pred_dir / f"step_{epoch}.pt")
        log_probs = F.log_softmax(probs.double().log(), dim=-1)
        expected.append(reference_epoch(epoch, f"step_{epoch}.pt", log_probs, torch.from_numpy(labels),
                                        ["0", "1", "2"], None))
    built = BuiltRun(tmp_path / "run", [], ["0", "1", "2"], None, expected)
    out = tmp_path / "out"
    report_ok(run_cli("report", built.path, "--predictions", pred_dir, "--out", out, "--no-pdf", "--quiet"))
    assert_metrics_match(json.loads((out / "metrics.json").read_text()), built)
    assert provenance_says(parse_html((out / "report.html").read_text(encoding="utf-8")), "output", "probs")


def test_model_mode_overconfident_checkpoint(tmp_path):
    """A checkpoint whose last layer is scaled up: exact 1.0 confidences from a real forward pass."""
    built = build_mlp_run(tmp_path, "overconfident", epochs=3, steps=4)
    spec = built.extra["spec"]
    hot = {k: (v * 60 if k.startswith("body.2.") else v) for k, v in built.extra["states"][3].items()}
    save_shuffled({built.path / "checkpoints" / "epoch_4.pt": hot}, seed=0)
    log_probs = mlp_log_probs(spec, hot, built.extra["x_val"], "logits")
    built.expected.append(reference_epoch(4, "epoch_4.pt", log_probs, built.extra["y_val"], built.classes, None))
    conf = built.expected[-1]["_confidence"]
    assert (conf == 1.0).sum() > 10, "fixture: some confidences are exactly 1.0"
    out = tmp_path / "out"
    report_ok(run_cli("report", built.path, "--out", out, "--no-pdf", "--quiet", *built.options))
    metrics = json.loads((out / "metrics.json").read_text())
    assert_metrics_match(metrics, built)
    assert metrics["epochs"][-1]["ece"] == pytest.approx(built.expected[-1]["ece"], rel=1e-9)


def test_custom_ignore_index(tmp_path):
    """--ignore-index 255: items labelled 255 never count (and -100 is then an ordinary, invalid label)."""
    rng = np.random.default_rng(2)
    pred_dir = tmp_path / "run" / "preds"
    pred_dir.mkdir(parents=True)
    labels = np.where(rng.random(120) < 0.2, 255, rng.integers(0, 3, size=120))
    expected = []
    for epoch in (1, 2):
        logits = _logits(rng, labels, 3.0)
        np.savez(pred_dir / f"e{epoch}.npz", outputs=logits, labels=labels)
        keep = labels != 255
        expected.append(reference_epoch(epoch, f"e{epoch}.npz", F.log_softmax(torch.from_numpy(logits[keep]), dim=-1),
                                        torch.from_numpy(labels[keep]), ["0", "1", "2"], None))
    built = BuiltRun(tmp_path / "run", [], ["0", "1", "2"], None, expected)
    out = tmp_path / "out"
    report_ok(run_cli("report", built.path, "--predictions", pred_dir, "--ignore-index", "255", "--out", out,
                      "--no-pdf", "--quiet"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert_metrics_match(metrics, built)
    assert metrics["epochs"][0]["n_samples"] == int((labels != 255).sum())


@pytest.mark.parametrize("as_names", [False, True])
def test_predictions_mode_keeps_groups(tmp_path, as_names):
    """A 'groups' array in the predictions files is kept: the bootstrap resamples whole groups (dialogues)."""
    rng = np.random.default_rng(3)
    pred_dir = tmp_path / "run" / "predictions"
    pred_dir.mkdir(parents=True)
    n, n_groups = 300, 30
    labels = rng.integers(0, 3, size=n)
    groups = np.repeat(np.arange(n_groups), n // n_groups)
    saved_groups = np.array([f"dialogue-{g}" for g in groups]) if as_names else groups
    for epoch, scale in ((1, 1.0), (2, 3.0), (3, 6.0)):
        np.savez(pred_dir / f"epoch_{epoch}.npz", outputs=_logits(rng, labels, scale), labels=labels,
                 groups=saved_groups)
    out = tmp_path / "out"
    report_ok(run_cli("report", tmp_path / "run", "--predictions", pred_dir, "--out", out, "--no-pdf", "--quiet"))
    bootstrap = json.loads((out / "metrics.json").read_text())["bootstrap"]
    assert bootstrap["resampled_unit"] == "groups" and bootstrap["n_units"] == n_groups
