"""Calibration numbers: hand-worked bins, bin edges, and scikit-learn as reference."""
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from postmortem.analyze.calibration import (adaptive_calibration_error, brier_loss, epoch_calibration,
                                            expected_calibration_error, reliability_diagram, stable_argsort)

CONFIDENCE = np.array([0.95, 0.95, 0.55, 0.55, 0.25])
CORRECT = np.array([True, False, True, True, False])


def test_reliability_by_hand():
    diagram = reliability_diagram(CONFIDENCE, CORRECT)
    # bins (m/15, (m+1)/15]: 0.95 -> ceil(14.25) - 1 = 14, 0.55 -> ceil(8.25) - 1 = 8, 0.25 -> ceil(3.75) - 1 = 3
    assert diagram.counts[[3, 8, 14]].tolist() == [1, 2, 2] and diagram.counts.sum() == 5
    np.testing.assert_allclose(diagram.mean_confidence[[3, 8, 14]], [0.25, 0.55, 0.95])
    np.testing.assert_allclose(diagram.accuracy[[3, 8, 14]], [0.0, 1.0, 0.5])
    assert np.isnan(diagram.accuracy[0]) and len(diagram.bin_edges) == 16
    # gaps 0.25, 0.45, 0.45 -> ECE = (0.25 + 2 * 0.45 + 2 * 0.45) / 5 = 2.05 / 5 = 0.41; MCE = 0.45
    assert diagram.expected_calibration_error == pytest.approx(0.41)
    assert diagram.max_calibration_error == pytest.approx(0.45)
    assert diagram.expected_calibration_error == pytest.approx(expected_calibration_error(CONFIDENCE, CORRECT))


def test_bin_edges_are_left_open():
    # exactly 0 -> first bin; exactly 1/15 -> first bin ((0, 1/15]); just above -> second; exactly 1 -> last
    edges = reliability_diagram(np.array([0.0, 1 / 15, 1 / 15 + 1e-12, 1.0]), np.ones(4, bool)).counts
    assert edges[0] == 2 and edges[1] == 1 and edges[14] == 1


def test_reliability_matches_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 500)
    correct = rng.random(500) < confidence ** 2
    diagram = reliability_diagram(confidence, correct)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    filled = diagram.counts > 0
    np.testing.assert_allclose(diagram.accuracy[filled], prob_true)
    np.testing.assert_allclose(diagram.mean_confidence[filled], prob_pred)


def test_adaptive_ece_by_hand():
    # sorted (stable): 0.25 (wrong), 0.55 (right), 0.55 (right), 0.95 (right), 0.95 (wrong)
    # 2 bins of sizes 2 and 3: |(0 + 1) - (0.25 + 0.55)| = 0.2 and |(1 + 1 + 0) - (0.55 + 0.95 + 0.95)| = 0.45
    assert adaptive_calibration_error(CONFIDENCE, CORRECT, n_bins=2) == pytest.approx((0.2 + 0.45) / 5)
    # 15 bins but 5 items: one item per bin, gaps 0.25 + 0.45 + 0.45 + 0.05 + 0.95 = 2.15
    assert adaptive_calibration_error(CONFIDENCE, CORRECT) == pytest.approx(2.15 / 5)
    assert adaptive_calibration_error(np.array([]), np.array([], bool)) == 0.0


def test_brier_from_scalars_matches_sklearn():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=200)
    labels = rng.integers(0, 4, 200)
    nll = -np.log(probs[np.arange(200), labels])
    assert brier_loss((probs ** 2).sum(axis=1), nll) == pytest.approx(
        brier_score_loss(labels, probs, labels=[0, 1, 2, 3]), abs=1e-12)


def test_epoch_calibration_means_by_hand():
    labels = np.array([0, 1, 1])
    records = SimpleNamespace(pred=np.array([0, 0, 1]), confidence=np.array([0.9, 0.6, 0.7]),
                              nll=-np.log([0.9, 0.4, 0.7]), entropy=np.array([0.3, 0.7, 0.5]),
                              sum_sq_prob=np.array([0.82, 0.52, 0.58]))
    result = epoch_calibration(labels, records)
    assert result.mean_confidence_correct == pytest.approx(0.8)       # (0.9 + 0.7) / 2
    assert result.mean_confidence_wrong == pytest.approx(0.6)
    assert result.mean_entropy == pytest.approx(0.5)
    assert result.mean_entropy_correct == pytest.approx(0.4) and result.mean_entropy_wrong == pytest.approx(0.7)
    # Brier: (0.82 - 1.8 + 1) + (0.52 - 0.8 + 1) + (0.58 - 1.4 + 1) = 0.02 + 0.72 + 0.18 = 0.92 -> 0.92 / 3
    assert result.brier_loss == pytest.approx(0.92 / 3)


def test_no_wrong_predictions_gives_nan_not_an_error():
    records = SimpleNamespace(pred=np.array([0, 1]), confidence=np.array([0.9, 0.8]), nll=-np.log([0.9, 0.8]),
                              entropy=np.array([0.3, 0.5]), sum_sq_prob=np.array([0.82, 0.68]))
    result = epoch_calibration(np.array([0, 1]), records)
    assert np.isnan(result.mean_confidence_wrong) and np.isnan(result.mean_entropy_wrong)


@pytest.mark.parametrize("seed", range(6))
def test_stable_argsort_is_numpys_stable_argsort(seed):
    """The order adaptive ECE's equal-mass runs are cut from, ties (a saturated confidence of 1.0) in index order."""
    rng = np.random.default_rng(seed)
    values = rng.random(3_000)
    if seed % 2:
        values = rng.choice(rng.random(40), 3_000)          # many ties
    if seed >= 3:
        values[rng.random(3_000) < 0.3] = 1.0               # a third saturated
    np.testing.assert_array_equal(stable_argsort(values), np.argsort(values, kind="stable"))
