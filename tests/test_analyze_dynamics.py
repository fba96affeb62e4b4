"""Logit dynamics and dataset cartography: numbers by hand on a few items."""
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from postmortem.analyze.candidates import label_issue_candidates
from postmortem.analyze.cartography import cartography
from postmortem.analyze.dynamics import PERCENTILES, flip_rate, logit_summary, prediction_flow


def test_logit_summary_by_hand():
    summary = logit_summary(np.array([1.0, 2, 3, 4, 5]), np.array([-2.0, -1, 0.5, 1, 3]))
    assert PERCENTILES == (10, 25, 50, 75, 90)
    # linear interpolation over 5 sorted values at positions 0.4, 1, 2, 3, 3.6
    np.testing.assert_allclose(summary.logit_norm_percentiles, [1.4, 2, 3, 4, 4.6])
    np.testing.assert_allclose(summary.margin_percentiles, [-1.6, -1, 0.5, 1, 2.2])
    assert summary.median_logit_norm == 3 and summary.median_margin == 0.5
    assert summary.median_absolute_margin == 1.0          # |margins| = 2, 1, 0.5, 1, 3


def test_flip_rate_and_flow_by_hand():
    before, after = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    assert flip_rate(before, after) == 0.5                 # items 1 and 3 changed
    flow = prediction_flow(before, after, 3, 4, 7)
    expected = np.zeros((3, 3), int)
    expected[0, 0] = expected[1, 2] = expected[2, 2] = expected[2, 1] = 1
    np.testing.assert_array_equal(flow.counts, expected)
    np.testing.assert_array_equal(flow.counts, confusion_matrix(before, after, labels=[0, 1, 2]))
    assert flow.n_changed == 2 and (flow.from_index, flow.to_index) == (4, 7)


def _epoch(pred, p_true, confidence):
    return SimpleNamespace(pred=np.array(pred), nll=-np.log(p_true), confidence=np.array(confidence))


# Three items (labels 0, 1, 1) over three epochs.
LABELS = np.array([0, 1, 1])
EPOCHS = [_epoch([0, 0, 1], [0.5, 0.10, 0.6], [0.5, 0.90, 0.6]),
          _epoch([0, 0, 0], [0.7, 0.05, 0.3], [0.7, 0.95, 0.7]),
          _epoch([0, 0, 1], [0.9, 0.02, 0.8], [0.9, 0.98, 0.8])]


def test_cartography_by_hand():
    table = cartography(LABELS, np.array(["a", "b", "c"]), EPOCHS)
    # item a: p(y) 0.5, 0.7, 0.9 -> mean 0.7, population std sqrt((0.04 + 0 + 0.04) / 3)
    np.testing.assert_allclose(table.mean_true_confidence, [0.7, 0.17 / 3, 1.7 / 3])
    assert table.true_confidence_variability[0] == pytest.approx(np.sqrt(0.08 / 3))
    np.testing.assert_allclose(table.fraction_correct, [1, 0, 2 / 3])
    np.testing.assert_array_equal(table.forgetting_events, [0, 0, 1])   # item c: right, wrong, right
    np.testing.assert_array_equal(table.final_pred, [0, 0, 1])
    np.testing.assert_allclose(table.final_nll, -np.log([0.9, 0.02, 0.8]))


def _scaled_epoch(pred, p_label, confidence):
    return SimpleNamespace(pred=np.array(pred), scaled_nll=-np.log(p_label), scaled_confidence=np.array(confidence))


def test_label_issue_candidates_by_hand():
    """Confident learning on scaled probabilities: t_j = mean p(label) over items labelled j; a wrong item
    predicted j is a candidate when its p(j) >= max(t_j, floor) and it was wrong, predicting j, in the window."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    # last epoch: items 0-1 right (p 0.9, 0.8); item 2 predicted 1 with p 0.85; items 3-4 right (0.7, 0.5);
    # item 5 predicted 0 with p 0.8. t_0 = (0.9 + 0.8 + 0.1) / 3 = 0.6, t_1 = (0.7 + 0.5 + 0.15) / 3 = 0.45
    last = _scaled_epoch([0, 0, 1, 1, 1, 0], [0.9, 0.8, 0.1, 0.7, 0.5, 0.15], [0.9, 0.8, 0.85, 0.7, 0.5, 0.8])
    stable = _scaled_epoch([0, 0, 1, 1, 1, 0], [0.9] * 6, [0.9] * 6)
    flipped = _scaled_epoch([0, 0, 1, 1, 1, 1], [0.9] * 6, [0.9] * 6)       # item 5 right one epoch earlier
    found = label_issue_candidates(labels, [stable, stable, last], 2, 2, window=3, min_confidence=0.5)
    np.testing.assert_allclose(found.class_thresholds, [0.6, 0.45])
    np.testing.assert_array_equal(found.indices, [2, 5])                    # 0.85 >= 0.45, 0.8 >= 0.6
    assert found.epoch_indices == (0, 1, 2)
    np.testing.assert_array_equal(found.confident, [True, True, True, True, True, True])
    # the floor: item 2's 0.85 is below 0.9; confident items are those at or above max(t_pred, 0.9)
    floor = label_issue_candidates(labels, [stable, stable, last], 2, 2, window=3, min_confidence=0.9)
    np.testing.assert_array_equal(floor.indices, [])
    np.testing.assert_array_equal(floor.confident, [True, False, False, False, False, False])
    # stability: item 5 was right at epoch 1, so a window of 2 drops it, a window of 1 keeps it
    np.testing.assert_array_equal(label_issue_candidates(labels, [stable, flipped, last], 2, 2, 2, 0.5).indices, [2])
    np.testing.assert_array_equal(label_issue_candidates(labels, [stable, flipped, last], 2, 2, 1, 0.5).indices, [2, 5])
