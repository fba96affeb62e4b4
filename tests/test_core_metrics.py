"""Issue 2, numbers: every metrics.json field per epoch against independent computations.

- plain logits: an MLP, bare state_dicts epoch_1.pt .. epoch_12.pt (10 after 9), a .pt data file;
- masked, weighted, log_probs sequence outputs: a GRU tagger over (B, T) with a 0/1 mask, labels of -100,
  padding that carries a real class label, class weights, {'epoch', 'model_state_dict'} .pth checkpoints
  and RUN/postmortem_spec.py with build_model, val_data and forward; also the motivating user's own loss;
- probs outputs, given with --outputs probs and auto-detected, and auto-detection in general: the report
  states what it assumed.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _core_runs import (IGNORE_INDEX, REL, TAG_BATCH, TAG_WEIGHTS, BuiltRun, assert_metrics_match,
                        assert_report_html, build_mlp_run, build_tagging_run, exec_spec, make_sequences,
                        parse_html, provenance_says, reference_epoch, report_ok, run_cli, batches_of, save_shuffled)


def _report(built: BuiltRun, out, *extra) -> tuple[dict, str]:
    result = run_cli("report", built.path, "--out", out, "--no-pdf", "--quiet", *built.options, *extra)
    report_ok(result)
    assert result.stdout == "" and "\r" not in result.stderr and "wrote" not in result.stderr, \
        f"--quiet still printed a progress bar or summary: {result.stderr!r}"
    return json.loads((out / "metrics.json").read_text()), (out / "report.html").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- plain logits
@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics_mlp")
    built = build_mlp_run(root, "wine_like", epochs=12)
    metrics, html = _report(built, root / "out")
    return built, metrics, html


def test_fixture_shows_the_phenomenon(mlp):
    """Sanity of the run itself (reference numbers only): loss bottoms out mid-run, then rises."""
    built, _, _ = mlp
    losses = [e["loss"] for e in built.expected]
    best = losses.index(min(losses))
    assert 0 < best < len(losses) - 1
    assert losses[-1] > 1.1 * losses[best]


def test_logits_every_field_matches_independent_numbers(mlp):
    built, metrics, _ = mlp
    assert_metrics_match(metrics, built)


def test_logits_natural_order_epoch_10_after_9(mlp):
    _, metrics, _ = mlp
    assert [e["checkpoint"] for e in metrics["epochs"]] == [f"epoch_{k}.pt" for k in range(1, 13)]
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 13))
    assert all(type(e["epoch"]) is int for e in metrics["epochs"])


def test_logits_best_epoch_classes_skipped(mlp):
    built, metrics, _ = mlp
    losses = [e["loss"] for e in built.expected]
    assert metrics["best_epoch"] == built.expected[losses.index(min(losses))]["epoch"]
    assert metrics["classes"] == ["setosa", "versi", "virgin"]
    assert metrics["skipped"] == []
    assert metrics["schema_version"] == 1
    assert isinstance(metrics["findings"], list)
    for finding in metrics["findings"]:
        assert finding["severity"] in ("high", "medium", "low")
        assert isinstance(finding["id"], str) and finding["title"] and finding["summary"]
        assert all(name in metrics["classes"] for name in finding["classes"])
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in finding["evidence"].values())


def test_logits_metric_identities(mlp):
    """Cross-checks a person can do on paper, from metrics.json alone."""
    _, metrics, _ = mlp
    for e in metrics["epochs"]:
        cm = np.array(e["confusion_matrix"])
        assert cm.sum() == e["n_samples"] == sum(c["support"] for c in e["per_class"].values())
        assert math.isclose(np.trace(cm) / cm.sum(), e["accuracy"], rel_tol=1e-12)
        assert math.isclose(sum(c["loss_share"] for c in e["per_class"].values()), e["loss"], rel_tol=REL)
        # unweighted: each class's share is its support fraction times its mean loss
        for c in e["per_class"].values():
            assert math.isclose(c["loss_share"], c["support"] / e["n_samples"] * c["loss"], rel_tol=REL)
        assert 0.0 <= e["brier"] <= 2.0 and 0.0 <= e["ece"] <= 1.0 and 1 / 3 <= e["mean_confidence"] <= 1.0


def test_logits_html_has_every_epoch(mlp):
    built, metrics, html = mlp
    root = assert_report_html(html, metrics, built)
    assert provenance_says(root, "output", "logits"), "the report does not state that logits were assumed"


# ----------------------------------------------------------------------------- masked, weighted, log_probs sequences
@pytest.fixture(scope="module")
def tagging(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics_tagging")
    built = build_tagging_run(root, "masked_tagging")
    metrics, html = _report(built, root / "out")
    return built, metrics, html, root


def test_tagging_fixture_exercises_mask_ignore_and_weights(tagging):
    """The data really has what the test is about, so that a wrong treatment would change the numbers."""
    built, _, _, _ = tagging
    val = built.extra["val"]
    tags, mask = val["tags"], val["mask"]
    assert ((mask == 0) & (tags != IGNORE_INDEX)).sum() > 50, "padding must carry a real class label"
    assert ((mask != 0) & (tags == IGNORE_INDEX)).sum() > 10, "some real positions must carry -100"
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) == {0, 1}
    assert len(built.extra["spec"]["val_data"]()) > 1, "several batches"
    for e in built.expected:
        assert all(c["support"] > 0 for c in e["per_class"].values())
    # the loss ignoring the mask (padding counted as class 0) and the unweighted loss both differ
    spec, state = built.extra["spec"], built.extra["states"][3]
    model = spec["build_model"]()
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        lp = F.log_softmax(model(val["tokens"]).double(), dim=-1)
    keep = tags != IGNORE_INDEX
    w = torch.tensor(TAG_WEIGHTS, dtype=torch.float64)
    no_mask = F.nll_loss(lp[keep], tags[keep], weight=w).item()
    counted = keep & (mask != 0)
    unweighted = F.nll_loss(lp[counted], tags[counted]).item()
    assert abs(no_mask - built.expected[2]["loss"]) > 1e-3
    assert abs(unweighted - built.expected[2]["loss"]) > 1e-3


def test_tagging_every_field_matches_independent_numbers(tagging):
    built, metrics, _, _ = tagging
    assert_metrics_match(metrics, built)
    assert metrics["skipped"] == []
    counted = ((built.extra["val"]["mask"] != 0) & (built.extra["val"]["tags"] != IGNORE_INDEX)).sum().item()
    assert all(e["n_samples"] == counted for e in metrics["epochs"])


def test_tagging_loss_equals_the_users_own_masked_loss(tagging):
    """NLLLoss(weight=w, reduction='sum')(log_probs * mask, y) / sum(w[y] * mask), per batch, summed."""
    built, metrics, _, _ = tagging
    for got, users in zip(metrics["epochs"], built.extra["user_losses"]):
        assert math.isclose(got["loss"], users, rel_tol=REL), (got["checkpoint"], got["loss"], users)


def test_tagging_epochs_from_checkpoint_dicts(tagging):
    _, metrics, _, _ = tagging
    assert [e["checkpoint"] for e in metrics["epochs"]] == [f"epoch_{k}.pth" for k in range(1, 7)]
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 7))


def test_tagging_html_has_every_epoch(tagging):
    built, metrics, html, _ = tagging
    root = assert_report_html(html, metrics, built)
    assert provenance_says(root, "output", "log_probs")


def test_tagging_log_probs_auto_detected(tagging):
    """Without --outputs: the same numbers, and the report says it assumed log-probabilities."""
    built, _, _, root = tagging
    options = [o for o in built.options]
    i = options.index("--outputs")
    del options[i:i + 2]
    auto = BuiltRun(built.path, options, built.classes, built.weights, built.expected)
    metrics, html = _report(auto, root / "out_auto")
    assert_metrics_match(metrics, built)
    assert provenance_says(parse_html(html), "output", "log_probs"), "the report does not state what was assumed"


# ----------------------------------------------------------------------------- probs
@pytest.fixture(scope="module")
def probs_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics_probs")
    return build_mlp_run(root, "probs_run", epochs=4, output="probs", class_names=False), root


def test_probs_given_explicitly(probs_run):
    built, root = probs_run
    metrics, html = _report(built, root / "explicit", "--outputs", "probs")
    assert_metrics_match(metrics, built)
    assert provenance_says(parse_html(html), "output", "probs")


def test_probs_auto_detected_and_stated(probs_run):
    built, root = probs_run
    metrics, html = _report(built, root / "auto")
    assert_metrics_match(metrics, built)
    assert metrics["classes"] == ["0", "1", "2"]
    assert provenance_says(parse_html(html), "output", "probs"), "the report does not state that probs were assumed"


def test_probs_treated_as_logits_would_differ(probs_run):
    """Sanity: the fixture distinguishes probs from logits (their losses differ a lot)."""
    built, _ = probs_run
    spec, state = built.extra["spec"], built.extra["states"][4]
    model = spec["build_model"]()
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        as_logits = F.nll_loss(F.log_softmax(model(built.extra["x_val"]).double(), dim=-1), built.extra["y_val"]).item()
    assert abs(as_logits - built.expected[-1]["loss"]) > 0.05


PROBS_TAGGER_SPEC = '''\
"""A GRU tagger returning softmax probabilities; forward() zeroes the padded positions (mask 0)."""
from pathlib import Path

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
        return torch.softmax(self.head(hidden), dim=-1)


def build_model():
    return Tagger()


def val_data():
    return torch.load(Path(__file__).with_name("val_batches.pt"), weights_only=True)


def forward(model, batch):
    probs = model(batch["tokens"]) * batch["mask"].unsqueeze(-1)     # padded positions: all-zero rows
    return probs, batch["tags"], batch["mask"]
'''


def test_probs_auto_detected_when_padding_rows_are_zero(tmp_path):
    run = tmp_path / "probs_tagging"
    run.mkdir()
    (run / "postmortem_spec.py").write_text(PROBS_TAGGER_SPEC)
    spec = exec_spec(run / "postmortem_spec.py")
    rng = np.random.default_rng(3)
    base_tag = np.concatenate([[0], rng.choice(4, size=15)])
    torch.save(batches_of(make_sequences(rng, 40, base_tag), TAG_BATCH), run / "val_batches.pt")
    torch.manual_seed(0)
    files, expected = {}, []
    for k in (1, 2):
        model = spec["build_model"]()
        files[run / "checkpoints" / f"epoch_{k}.pt"] = {"epoch": k, "state_dict": model.state_dict()}
        model.eval()
        lps, ys = [], []
        with torch.no_grad():
            for batch in spec["val_data"]():
                probs, tags, mask = spec["forward"](model, batch)
                counted = (mask != 0) & (tags != IGNORE_INDEX)
                lps.append(F.log_softmax(probs.double().log(), dim=-1)[counted])
                ys.append(tags[counted])
        expected.append(reference_epoch(k, f"epoch_{k}.pt", torch.cat(lps), torch.cat(ys), ["0", "1", "2", "3"], None))
    save_shuffled(files, seed=0)
    built = BuiltRun(run, [], ["0", "1", "2", "3"], None, expected)
    metrics, html = _report(built, tmp_path / "out")
    assert_metrics_match(metrics, built)
    assert provenance_says(parse_html(html), "output", "probs")
