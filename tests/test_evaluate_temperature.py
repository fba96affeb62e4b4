"""Temperature scaling: the optimality condition of DESIGN.md, torch as reference, bounds and cross-fitting."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax

from postmortem.evaluate.temperature import LOG_T_BOUNDS, ShiftedLogits, crossfit_temperature, fit_temperature, scaled_nll


def _logits(n=400, c=5, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    z = rng.normal(size=(n, c))
    z[np.arange(n), labels] += 1.0
    return scale * z, labels


def _weighted_loss(z, labels, weights, temperature):
    return float(weights @ scaled_nll(z, labels, 1 / temperature) / weights.sum())


def test_scaled_nll_matches_torch_cross_entropy():
    z, labels = _logits(50)
    expected = F.cross_entropy(torch.tensor(0.4 * z), torch.tensor(labels), reduction="none").numpy()
    np.testing.assert_allclose(scaled_nll(z, labels, 0.4), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_fitted_temperature_meets_the_optimality_condition(scale):
    z, labels = _logits(scale=scale)
    weights = np.random.default_rng(1).uniform(0.5, 3.0, len(labels))
    t = fit_temperature(z, labels, weights)
    assert np.exp(LOG_T_BOUNDS[0]) < t < np.exp(LOG_T_BOUNDS[1])
    # At the optimum: sum_i a_i z_iy = sum_i a_i sum_k q_ik z_ik, with q = softmax(z / T)
    q = softmax(z / t, axis=1)
    observed = weights @ z[np.arange(len(labels)), labels] / weights.sum()
    expected = weights @ (q * z).sum(axis=1) / weights.sum()
    assert observed == pytest.approx(expected, abs=1e-5 * np.abs(z).mean())
    # and the loss at T is no higher than one percent either side
    loss = _weighted_loss(z, labels, weights, t)
    assert loss <= _weighted_loss(z, labels, weights, 1.01 * t) and loss <= _weighted_loss(z, labels, weights, t / 1.01)


def test_temperature_follows_the_logit_scale():
    z, labels = _logits(scale=1.0)
    base = fit_temperature(z, labels, np.ones(len(labels)))
    # softmax((3 z) / (3 T)) = softmax(z / T): tripling the logits triples the fitted temperature
    assert fit_temperature(3 * z, labels, np.ones(len(labels))) == pytest.approx(3 * base, rel=1e-4)


def test_an_item_weight_of_two_counts_as_the_item_twice():
    z, labels = _logits(60)
    weights = np.ones(60)
    weights[0] = 2.0
    duplicated = fit_temperature(np.vstack([z, z[:1]]), np.r_[labels, labels[:1]], np.ones(61))
    assert fit_temperature(z, labels, weights) == pytest.approx(duplicated, rel=1e-5)


def test_separable_data_stops_at_the_lower_bound():
    labels = np.arange(20) % 2
    z = np.where(np.arange(2)[None, :] == labels[:, None], 1.0, -1.0)
    # every item right: sharper is always better, so the search runs to the smallest T allowed (near it,
    # the loss log(1 + exp(-2 / T)) is below float64 resolution and the search may stop a little above)
    t = fit_temperature(z, labels, np.ones(20))
    assert np.exp(LOG_T_BOUNDS[0]) <= t < 0.06
    assert _weighted_loss(z, labels, np.ones(20), t) < 1e-15


def test_crossfit_with_identical_halves_equals_the_in_sample_fit():
    z, labels = _logits(100)
    doubled_z, doubled_labels = np.repeat(z, 2, axis=0), np.repeat(labels, 2)   # even half == odd half
    log_probs = doubled_z - np.log(np.exp(doubled_z).sum(axis=1, keepdims=True))
    fit = crossfit_temperature(ShiftedLogits.of(log_probs, doubled_labels), np.ones(200))
    t = fit_temperature(z, labels, np.ones(100))
    assert fit.temperature == pytest.approx(t, rel=1e-5)
    assert fit.scaled_loss == pytest.approx(_weighted_loss(z, labels, np.ones(100), t), rel=1e-9)


def test_crossfit_scores_each_half_with_the_other_halfs_temperature():
    z, labels = _logits(101, seed=4)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, 101)
    even, odd = np.arange(0, 101, 2), np.arange(1, 101, 2)
    t_even = fit_temperature(z[even], labels[even], weights[even])
    t_odd = fit_temperature(z[odd], labels[odd], weights[odd])
    expected = (weights[odd] @ scaled_nll(z[odd], labels[odd], 1 / t_even)
                + weights[even] @ scaled_nll(z[even], labels[even], 1 / t_odd)) / weights.sum()
    assert crossfit_temperature(ShiftedLogits.of(z, labels), weights).scaled_loss == pytest.approx(expected, rel=1e-12)


def test_single_item_and_zero_weight_do_not_fail():
    z, labels = np.array([[2.0, 0.0, -1.0]]), np.array([1])
    # one wrong item: the flattest softmax (largest T) is best; T = 20 gives ln(sum exp(z / 20)) - 0 / 20
    fit = crossfit_temperature(ShiftedLogits.of(z, labels), np.ones(1))
    assert fit.temperature == pytest.approx(20.0, rel=1e-4)
    assert fit.scaled_loss == pytest.approx(np.log(np.exp(z / 20).sum()), rel=1e-4)
    assert fit_temperature(z, labels, np.zeros(1)) == 1.0
