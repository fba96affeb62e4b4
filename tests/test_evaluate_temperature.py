"""Temperature scaling: the optimality condition of DESIGN.md, torch as reference, bounds and cross-fitting."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax

from postmortem.evaluate import temperature
from postmortem.evaluate.temperature import (CROSSFIT_FOLDS, CROSSFIT_REPEATS, LOG_T_BOUNDS, REPEAT_BELOW_GROUPS,
                                            ShiftedLogits, crossfit_folds, crossfit_temperature, fit_temperature,
                                            scaled_nll)


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


def _scipy_temperature(z, labels, weights):
    """The T minimising the weighted NLL of softmax(z / T), found by scipy's bounded search on log T."""
    from scipy.optimize import minimize_scalar

    def loss(log_t):
        return float(weights @ F.cross_entropy(torch.tensor(z / np.exp(log_t)), torch.tensor(labels),
                                                reduction="none").numpy() / weights.sum())
    return float(np.exp(minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded",
                                        options={"xatol": 1e-10}).x))


def test_crossfit_scores_each_fold_with_the_temperature_of_the_other_folds():
    """Per item: the NLL and top-class probability under the T that scipy fits on the other folds (torch's
    cross_entropy as the loss), averaged over the repeated splits; L_TS is their weighted mean."""
    z, labels = _logits(157, seed=4)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, 157)
    groups = np.arange(157) // 3                      # groups of three items, e.g. short dialogues
    folds = crossfit_folds(groups)
    assert len(folds) == CROSSFIT_REPEATS
    expected_nll, expected_confidence = np.zeros(157), np.zeros(157)
    for fold_of_item in folds:
        assert set(fold_of_item) == set(range(CROSSFIT_FOLDS))
        for fold in range(CROSSFIT_FOLDS):
            held_out = fold_of_item == fold
            t = _scipy_temperature(z[~held_out], labels[~held_out], weights[~held_out])
            log_q = F.log_softmax(torch.tensor(z[held_out] / t), dim=1).numpy()
            expected_nll[held_out] += -log_q[np.arange(held_out.sum()), labels[held_out]]
            expected_confidence[held_out] += np.exp(log_q.max(axis=1))
    expected_nll, expected_confidence = expected_nll / len(folds), expected_confidence / len(folds)
    fit = crossfit_temperature(ShiftedLogits.of(z, labels), weights, groups)
    np.testing.assert_allclose(fit.scaled_nll, expected_nll, rtol=1e-7)
    np.testing.assert_allclose(fit.scaled_confidence, expected_confidence, rtol=1e-7)
    assert fit.scaled_loss == pytest.approx(weights @ expected_nll / weights.sum(), rel=1e-7)
    assert fit.temperature == pytest.approx(_scipy_temperature(z, labels, weights), rel=1e-7)


def test_one_split_above_the_repeat_threshold():
    assert len(crossfit_folds(np.arange(REPEAT_BELOW_GROUPS - 1))) == CROSSFIT_REPEATS
    assert len(crossfit_folds(np.arange(REPEAT_BELOW_GROUPS))) == 1
    # groups, not items, decide: 10,000 items in 100 dialogues are still a small set of units
    assert len(crossfit_folds(np.repeat(np.arange(100), 100))) == CROSSFIT_REPEATS


def test_crossfit_folds_keep_groups_together_and_repeat_exactly():
    groups = np.repeat(np.random.default_rng(0).permutation(40), 3)
    folds = crossfit_folds(groups)
    assert [f.tolist() for f in folds] == [f.tolist() for f in crossfit_folds(groups)]     # seeded
    for fold_of_item in folds:
        for g in np.unique(groups):
            assert len(set(fold_of_item[groups == g])) == 1
        assert np.bincount(fold_of_item).tolist() == [24] * CROSSFIT_FOLDS                 # 8 groups per fold
    assert any(not np.array_equal(folds[0], other) for other in folds[1:])                  # the repeats differ
    # fewer groups than folds: one group per fold
    assert sorted(set(crossfit_folds(np.array([7, 7, 9, 9]))[0])) == [0, 1]


def test_single_item_and_zero_weight_do_not_fail():
    z, labels = np.array([[2.0, 0.0, -1.0]]), np.array([1])
    # one wrong item: the flattest softmax (largest T) is best; T = 20 gives ln(sum exp(z / 20)) - 0 / 20
    # (one group: nothing to fit apart from it, so it is scored in-sample)
    fit = crossfit_temperature(ShiftedLogits.of(z, labels), np.ones(1), np.zeros(1))
    assert fit.temperature == pytest.approx(20.0, rel=1e-4)
    assert fit.scaled_loss == pytest.approx(np.log(np.exp(z / 20).sum()), rel=1e-4)
    assert fit_temperature(z, labels, np.zeros(1)) == 1.0


def test_large_set_folds_take_one_third_order_step_as_accurate_as_a_full_search():
    """On 20,000 items the folds' optima lie within a few 1e-3 of the full fit's, where one third-order step from it
    (no pass of its own) lands within ~1e-8 in log T of the fully converged search; so do the scaled NLLs and L_TS."""
    n = 20_000
    z, labels = _logits(n, c=20, scale=1.5, seed=7)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, n)
    logits = ShiftedLogits.of(z, labels)
    full = temperature._fit_all(logits, weights)
    (fold_of_item,) = crossfit_folds(np.arange(n))
    series_steps, expected_nll = 0, np.zeros(n)
    for fold in range(CROSSFIT_FOLDS):
        held_out = fold_of_item == fold
        converged = temperature._fit(logits, weights * ~held_out, tolerance=1e-13)
        answer = temperature._series_answer(logits, weights * ~held_out, full.at, full.moments)
        if answer is not None:
            series_steps += 1
            assert abs(answer - converged) < 2e-8
        expected_nll[held_out] = scaled_nll(z[held_out], labels[held_out], float(np.exp(converged)))
    assert series_steps == CROSSFIT_FOLDS
    fit = crossfit_temperature(logits, weights, np.arange(n))
    np.testing.assert_allclose(fit.scaled_nll, expected_nll, rtol=1e-7)
    assert fit.scaled_loss == pytest.approx(weights @ expected_nll / weights.sum(), rel=1e-9)


def test_central_moments_are_the_derivatives_of_the_log_normaliser():
    """E_q s, Var_q s, the third central moment and the fourth minus 3 Var^2 are d/d beta, d2, d3 and d4 of
    log sum_k exp(beta s_k) (torch's autograd as the reference)."""
    z, labels = _logits(30, c=6)
    logits = ShiftedLogits.of(z, labels)
    beta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    log_norm = torch.logsumexp(beta * torch.tensor(logits.shifted), dim=1)
    derivatives = [list(log_norm)]
    for _ in range(4):
        derivatives.append([torch.autograd.grad(value, beta, create_graph=True, retain_graph=True)[0]
                            for value in derivatives[-1]])
    first, second, third, fourth = ([float(v.detach()) for v in values] for values in derivatives[1:])
    mean, variance, third_moment, fourth_moment = logits.central_moments(0.7)
    np.testing.assert_allclose(mean, first, rtol=1e-12)
    np.testing.assert_allclose(variance, second, rtol=1e-10)
    np.testing.assert_allclose(third_moment, third, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fourth_moment - 3 * variance ** 2, fourth, rtol=1e-8, atol=1e-12)


def test_the_float32_search_ends_where_float64_passes_finish_the_fit_to_1e_12():
    """The full fit searches on float32 moments (4x cheaper exponentials) and finishes with one float64 pass: its
    answer equals a float64 search run to 1e-14, for 2 to 1,000 classes and temperatures from 0.2 to 12."""
    rng = np.random.default_rng(5)
    for n, c, scale in ((300, 2, 2.0), (2000, 20, 0.5), (500, 1000, 2.0), (20_000, 20, 8.0), (200, 100, 30.0)):
        labels = rng.integers(0, c, n)
        z = rng.normal(size=(n, c))
        z[np.arange(n), labels] += 1.5
        logits, weights = ShiftedLogits.of(scale * z, labels), rng.uniform(0.5, 2.0, n)
        search = logits.for_search()
        assert isinstance(search, temperature.SinglePrecisionLogits)
        rough, precise = search.moments(0.8), logits.moments(0.8)
        np.testing.assert_allclose(rough[0], precise[0], rtol=1e-5, atol=1e-5)
        converged = temperature._fit(logits, weights, tolerance=1e-14)
        assert abs(temperature._fit_all(logits, weights).answer - converged) < 1e-12, (n, c, scale)
