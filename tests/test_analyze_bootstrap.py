"""Bootstrap intervals: exact cases, sklearn/torch as reference for the estimates, group resampling."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from postmortem.analyze.bootstrap import Interval, bootstrap_deltas
from postmortem.analyze.metrics import macro_f1_from_counts, macro_f1_score


def _epoch(pred, nll):
    return SimpleNamespace(pred=np.asarray(pred), nll=np.asarray(nll, dtype=float))


def test_interval_excludes_zero():
    assert Interval(0.1, 0.05, 0.2).excludes_zero and Interval(-0.1, -0.2, -0.01).excludes_zero
    assert not Interval(0.1, -0.01, 0.2).excludes_zero and not Interval(0.0, 0.0, 0.0).excludes_zero


def test_a_constant_shift_has_a_zero_width_interval():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 100)
    nll = rng.uniform(0.1, 2.0, 100)
    # every item's nll rises by exactly 0.1: any resample's weighted mean rises by 0.1
    result = bootstrap_deltas(labels, np.arange(100), np.array([1.0, 2.0, 5.0]), _epoch(labels, nll),
                              _epoch(labels, nll + 0.1), 0, 1)
    assert result.loss_change.estimate == pytest.approx(0.1)
    assert result.loss_change.low == pytest.approx(0.1) and result.loss_change.high == pytest.approx(0.1)
    assert result.accuracy_change == Interval(0.0, 0.0, 0.0) and result.macro_f1_change == Interval(0.0, 0.0, 0.0)
    assert result.resampled_unit == "items" and result.n_units == 100 and result.n_resamples == 200


def test_estimates_match_torch_and_sklearn():
    rng = np.random.default_rng(1)
    n, c = 400, 4
    labels = rng.integers(0, c, n)
    weights = np.array([1.0, 0.5, 2.0, 3.0])
    log_probs = [torch.log_softmax(torch.tensor(rng.normal(scale=2, size=(n, c))), 1) for _ in range(2)]
    epochs = [_epoch(lp.argmax(1).numpy(), -lp[torch.arange(n), labels].numpy()) for lp in log_probs]
    result = bootstrap_deltas(labels, np.arange(n), weights, epochs[0], epochs[1], 0, 1)
    w, y = torch.tensor(weights), torch.tensor(labels)
    assert result.loss_change.estimate == pytest.approx(
        (F.nll_loss(log_probs[1], y, weight=w) - F.nll_loss(log_probs[0], y, weight=w)).item(), abs=1e-12)
    accuracy = [np.mean(e.pred == labels) for e in epochs]
    assert result.accuracy_change.estimate == pytest.approx(accuracy[1] - accuracy[0])
    f1 = [f1_score(labels, e.pred, labels=np.arange(c), average="macro", zero_division=0) for e in epochs]
    assert result.macro_f1_change.estimate == pytest.approx(f1[1] - f1[0], abs=1e-12)
    for interval in (result.loss_change, result.accuracy_change, result.macro_f1_change):
        assert interval.low <= interval.estimate <= interval.high


def test_macro_f1_from_counts_matches_sklearn_with_an_absent_class():
    labels = np.array([0, 0, 1, 1, 1, 3])          # class 2 has no items but is predicted once
    pred = np.array([0, 1, 1, 2, 1, 0])
    matrix = np.zeros((4, 4), int)
    np.add.at(matrix, (labels, pred), 1)
    # F1: class 0 2*1/(2+2) = 0.5, class 1 2*2/(3+3) = 2/3, class 3 2*0/(1+0) = 0 -> mean over {0, 1, 3}
    assert macro_f1_score(matrix) == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert macro_f1_score(matrix) == pytest.approx(f1_score(labels, pred, labels=[0, 1, 3], average="macro"))
    stacked = macro_f1_from_counts(np.array([[1, 2, 0, 0]] * 2), np.array([[2, 3, 0, 1]] * 2),
                                   np.array([[2, 3, 1, 0]] * 2), np.array([True, True, False, True]))
    np.testing.assert_allclose(stacked, [(0.5 + 2 / 3) / 3] * 2)


def test_deterministic_with_a_fixed_seed():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 80)
    before, after = _epoch(rng.integers(0, 2, 80), rng.random(80)), _epoch(rng.integers(0, 2, 80), rng.random(80))
    first = bootstrap_deltas(labels, np.arange(80), np.ones(2), before, after, 0, 1)
    assert first == bootstrap_deltas(labels, np.arange(80), np.ones(2), before, after, 0, 1)
    assert first.loss_change != bootstrap_deltas(labels, np.arange(80), np.ones(2), before, after, 0, 1,
                                                 seed=1).loss_change


def test_groups_are_resampled_whole():
    # 20 dialogues of 10 utterances: within a dialogue every utterance's loss moves by the same amount,
    # so there are 20 independent changes, not 200; the interval must be about sqrt(10) times wider.
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(20), 10)
    labels = np.zeros(200, int)
    shift = rng.normal(size=20)[groups]
    before, after = _epoch(labels, np.full(200, 1.0)), _epoch(labels, 1.0 + shift)
    by_group = bootstrap_deltas(labels, groups, np.ones(1), before, after, 0, 1)
    by_item = bootstrap_deltas(labels, np.arange(200), np.ones(1), before, after, 0, 1)
    assert by_group.resampled_unit == "groups" and by_group.n_units == 20
    assert by_group.loss_change.estimate == pytest.approx(by_item.loss_change.estimate)
    width = lambda i: i.high - i.low  # noqa: E731
    assert width(by_group.loss_change) > 2 * width(by_item.loss_change)


def test_same_epoch_gives_zero_intervals():
    labels = np.array([0, 1, 1])
    epoch = _epoch([0, 0, 1], [0.1, 2.0, 0.3])
    result = bootstrap_deltas(labels, np.arange(3), np.ones(2), epoch, epoch, 1, 1)
    assert not any(i.excludes_zero for i in (result.loss_change, result.accuracy_change, result.macro_f1_change))
    assert result.loss_change == Interval(0.0, 0.0, 0.0)
