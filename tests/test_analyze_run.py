"""analyze_run / analyze_epochs: every analysis reachable from RunAnalysis, checked against references."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import brier_score_loss, f1_score

from _diagnosis_runs import analysis_of, make_records, records_from_logits
from postmortem.analyze.choice import CRITERIA, checkpoint_choice
from postmortem.analyze.run import analyze_run
from postmortem.diagnose import diagnose
from postmortem.evaluate.records import ItemTable

WEIGHTS = np.array([1.0, 2.5, 0.5])


@pytest.fixture(scope="module")
def run():
    """Four epochs of random logits over 300 items and 3 classes, with class weights."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 300)
    logits = [rng.normal(scale=s, size=(300, 3)) + 2 * np.eye(3)[labels] for s in (1.0, 0.8, 1.5, 2.5)]
    records = [records_from_logits(z, labels, WEIGHTS) for z in logits]
    return labels, logits, records, analysis_of(labels, records, WEIGHTS)


def test_decompositions_sum_to_the_epoch_losses(run):
    labels, logits, _, analysis = run
    w, y = torch.tensor(WEIGHTS), torch.tensor(labels)
    torch_losses = [F.nll_loss(torch.log_softmax(torch.tensor(z), 1), y, weight=w).item() for z in logits]
    np.testing.assert_allclose(analysis.losses, torch_losses, rtol=1e-12)
    best = analysis.best_loss_index
    d = analysis.decomposition
    assert (d.from_index, d.to_index) == (best, 3)
    assert abs(d.by_class_transition.sum() - (torch_losses[3] - torch_losses[best])) <= 1e-9
    assert len(analysis.step_decompositions) == 3
    for step in analysis.step_decompositions:
        change = torch_losses[step.to_index] - torch_losses[step.from_index]
        assert abs(step.by_class_transition.sum() - change) <= 1e-9


def test_per_epoch_views_match_sklearn(run):
    labels, logits, _, analysis = run
    for view, z in zip(analysis.epochs, logits):
        probs = np.exp(z - z.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        pred = probs.argmax(1)
        assert view.macro_f1_score == pytest.approx(f1_score(labels, pred, average="macro"), abs=1e-12)
        assert view.calibration.brier_loss == pytest.approx(brier_score_loss(labels, probs, labels=[0, 1, 2]))
        assert view.calibration.mean_confidence == pytest.approx(probs.max(1).mean(), rel=1e-12)
        assert view.calibration_loss == pytest.approx(view.metrics.loss - view.scaled_loss)
        assert view.logits.median_logit_norm > 0


def test_epoch_table_and_flow(run):
    labels, _, records, analysis = run
    table = analysis.epoch_table()
    assert list(table["epoch"]) == [1, 2, 3, 4] and np.isnan(table["flip_rate"][0])
    np.testing.assert_allclose(table["flip_rate"][1:], analysis.flip_rates)
    assert analysis.flip_rates[0] == pytest.approx(np.mean(records[0].pred != records[1].pred))
    assert analysis.flow.counts.sum() == len(labels)
    np.testing.assert_array_equal(analysis.flow.counts.sum(axis=1),
                                  np.bincount(records[analysis.best_loss_index].pred, minlength=3))
    assert analysis.cartography.fraction_correct.shape == (300,)
    assert analysis.checkpoint_choice.rows[0].index == analysis.best_loss_index


def test_checkpoint_choice_by_hand():
    table = pd.DataFrame({"checkpoint": ["a", "b", "c"], "epoch": [1, 2, 3], "loss": [0.5, 0.4, 0.45],
                          "accuracy": [0.8, 0.85, 0.85], "macro_f1_score": [0.7, 0.72, 0.75],
                          "expected_calibration_error": [0.02, 0.05, 0.09], "scaled_loss": [0.5, 0.38, 0.36]})
    choice = checkpoint_choice(table)
    assert [r.criterion for r in choice.rows] == [name for _, _, name in CRITERIA]
    # loss -> b, accuracy tie 0.85 -> earliest (b), macro F1 -> c, ECE -> a, scaled loss -> c
    assert [r.epoch for r in choice.rows] == [2, 2, 3, 1, 3]
    assert choice.rows[2].checkpoint == "c" and choice.rows[2].scaled_loss == 0.36
    assert choice.index_by("lowest ECE") == 0


def test_analyze_run_uses_ids_and_groups():
    labels = np.array([0, 1, 0, 1])
    records = [make_records(labels, labels, [0.1, 0.2, 0.3, 0.4]), make_records(labels, [1, 1, 0, 0], [2, 0.2, 0.3, 3])]
    evaluation = SimpleNamespace(
        items=ItemTable(labels=labels, ids=np.array(["d1:0", "d1:1", "d2:0", "d2:1"]), groups=np.array([0, 0, 1, 1])),
        epochs=[SimpleNamespace(records=r, epoch=e, checkpoint=f"e{e}", training_setup=None)
                for e, r in ((1, records[0]), (2, records[1]))],
        class_weights=np.ones(2), train=None)
    analysis = analyze_run(evaluation, ("x", "y"))
    assert analysis.groups.tolist() == [0, 0, 1, 1] and analysis.labels.tolist() == [0, 1, 0, 1]
    ledger = diagnose(analysis).comparison.ledger
    assert ledger.totals.resampled_unit == "groups" and ledger.totals.n_units == 2
    assert [e.id for e in analysis.confident_errors] == ["d2:1", "d1:0"]      # nll +2.6 and +1.9
    assert analysis.cartography.ids[0] == "d1:0"


def test_a_single_epoch_run_is_analysed_without_changes():
    labels = np.array([0, 1, 1])
    analysis = analysis_of(labels, [make_records(labels, [0, 1, 0], [0.2, 0.3, 1.5])])
    assert analysis.decomposition.loss_change == 0.0 and len(analysis.step_decompositions) == 0
    assert analysis.flip_rates.shape == (0,) and analysis.confident_errors == ()
    assert len(analysis.epoch_table()) == 1
