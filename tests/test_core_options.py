"""Issue 2, how a run is described: RUN/postmortem.toml (dashes or underscores, flags win), a .npz
validation set, and a .pt sequence set whose 'mask' is used by the default forward (no forward())."""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from _core_runs import (IGNORE_INDEX, TAG_CLASSES, TAG_WEIGHTS, BuiltRun, assert_metrics_match, build_mlp_run,
                        build_tagging_run, exec_spec, mlp_log_probs, reference_epoch, report_ok, run_cli)


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_postmortem_toml_sets_options_and_flags_override(tmp_path):
    built = build_mlp_run(tmp_path, "configured", epochs=3, steps=3)
    (built.path / "postmortem.toml").write_text(
        'data = "val.pt"\n'                          # relative to RUN
        'class-names = ["setosa", "versi", "virgin"]\n'
        'class_weights = [2.0, 1.0, 0.5]\n'
        'no-pdf = true\n'
        'quiet = true\n')

    def expected_with(weights):
        return [reference_epoch(k, f"epoch_{k}.pt",
                                mlp_log_probs(built.extra["spec"], built.extra["states"][k], built.extra["x_val"], "logits"),
                                built.extra["y_val"], built.classes, weights) for k in (1, 2, 3)]

    out = tmp_path / "from_toml"
    report_ok(run_cli("report", built.path, "--out", out))         # everything else from the file
    assert not (out / "report.pdf").exists()
    assert_metrics_match(_metrics(out), BuiltRun(built.path, [], built.classes, [2.0, 1.0, 0.5], expected_with([2.0, 1.0, 0.5])))

    out = tmp_path / "flags_win"
    report_ok(run_cli("report", built.path, "--out", out, "--class-weights", "1,1,3"))
    assert_metrics_match(_metrics(out), BuiltRun(built.path, [], built.classes, [1.0, 1.0, 3.0], expected_with([1.0, 1.0, 3.0])))


def test_npz_validation_set(tmp_path):
    built = build_mlp_run(tmp_path, "npz", epochs=3, steps=3)
    np.savez(built.path / "val.npz", inputs=built.extra["x_val"].numpy(), labels=built.extra["y_val"].numpy())
    (built.path / "val.pt").unlink()
    out = tmp_path / "out"
    report_ok(run_cli("report", built.path, "--data", built.path / "val.npz", "--class-names", "setosa,versi,virgin",
                      "--out", out, "--no-pdf", "--quiet"))
    metrics = _metrics(out)
    assert_metrics_match(metrics, built)
    assert metrics["skipped"] == []


TAGGER_WITHOUT_FORWARD = '''\
import torch
import torch.nn as nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8, padding_idx=0)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, tokens):
        hidden, _ = self.gru(self.embed(tokens))
        return torch.log_softmax(self.head(hidden), dim=-1)


def build_model():
    return Tagger()
'''


def test_sequence_pt_file_with_mask_and_default_forward(tmp_path):
    """val.pt = {'inputs': (B, T) tokens, 'labels': (B, T) with -100, 'mask': (B, T)}; spec has build_model only."""
    tagging = build_tagging_run(tmp_path, "seq", epochs=3)
    spec_path = tagging.path / "postmortem_spec.py"
    spec_path.write_text(TAGGER_WITHOUT_FORWARD)
    (tagging.path / "val_batches.pt").unlink()
    val = tagging.extra["val"]
    torch.save({"inputs": val["tokens"], "labels": val["tags"], "mask": val["mask"]}, tagging.path / "val.pt")

    spec = exec_spec(spec_path)
    w = torch.tensor(TAG_WEIGHTS, dtype=torch.float64)
    expected = []
    for k in (1, 2, 3):
        model = spec["build_model"]()
        model.load_state_dict(tagging.extra["states"][k])
        model.eval()
        with torch.no_grad():
            log_probs = F.log_softmax(model(val["tokens"]).double(), dim=-1)
        counted = (val["mask"] != 0) & (val["tags"] != IGNORE_INDEX)
        expected.append(reference_epoch(k, f"epoch_{k}.pth", log_probs[counted], val["tags"][counted],
                                        TAG_CLASSES, TAG_WEIGHTS))
        # the motivating user's formula on the whole set agrees with the reference
        users = torch.nn.NLLLoss(weight=w, reduction="sum")(
            (log_probs * val["mask"].unsqueeze(-1)).reshape(-1, 4), val["tags"].reshape(-1)).item() / \
            (w[val["tags"].clamp_min(0)] * val["mask"] * (val["tags"] != IGNORE_INDEX)).sum().item()
        assert abs(users - expected[-1]["loss"]) <= 1e-9 * expected[-1]["loss"]

    built = BuiltRun(tagging.path, ["--data", str(tagging.path / "val.pt"), *tagging.options], TAG_CLASSES,
                     TAG_WEIGHTS, expected)
    out = tmp_path / "out"
    report_ok(run_cli("report", built.path, "--out", out, "--no-pdf", "--quiet", *built.options))
    metrics = _metrics(out)
    assert_metrics_match(metrics, built)
    assert metrics["skipped"] == []


def test_compare_chooses_the_epochs_the_verdict_compares(tmp_path, capsys):
    """--compare FROM,TO: the verdict, its ledger (metrics.json's bootstrap) and the sentences use those epochs;
    an epoch that was not evaluated is a one-line error."""
    from postmortem.cli import main

    rng = np.random.default_rng(2)
    labels = np.arange(600) % 3
    logits = rng.normal(size=(600, 3))
    logits[np.arange(600), labels] += 2.0
    preds = tmp_path / "preds"
    preds.mkdir()
    for epoch, scale in zip((1, 2, 5, 7), (0.8, 1.2, 2.5, 4.0)):
        np.savez(preds / f"epoch_{epoch}.npz", outputs=scale * logits, labels=labels)
    out = tmp_path / "out"
    report_ok(run_cli("report", tmp_path, "--predictions", preds, "--out", out, "--no-pdf", "--quiet",
                      "--compare", "5,7"))
    metrics = _metrics(out)
    assert (metrics["bootstrap"]["from_epoch"], metrics["bootstrap"]["to_epoch"]) == (5, 7)
    assert "(epoch 5) →" in metrics["verdict"]["sentences"]["what_happened"]
    assert metrics["verdict"]["primary_cause"] == "calibration"          # the same logits, only scaled up
    assert main(["report", str(tmp_path), "--predictions", str(preds), "--out", str(out), "--no-pdf", "--quiet",
                 "--compare", "1,9"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "option 'compare': epoch 9 is not among the evaluated epochs (1, 2, 5, 7)")
