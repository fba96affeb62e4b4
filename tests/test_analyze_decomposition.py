"""Loss-change decomposition: hand-worked numbers, the exact-sum property, and torch's nll_loss as reference."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from postmortem.analyze.decomposition import (TRANSITIONS, class_shares, confident_errors, decompose_loss_change,
                                              top_share)

# Four items, two classes, class weights w = [1, 3]: a = [1, 1, 3, 3], A = 8.
LABELS = np.array([0, 0, 1, 1])
WEIGHTS = np.array([1.0, 3.0])
BEFORE = SimpleNamespace(pred=np.array([0, 1, 1, 0]), nll=np.array([0.2, 1.0, 0.3, 1.5]),
                         confidence=np.array([0.8, 0.6, 0.7, 0.7]))
AFTER = SimpleNamespace(pred=np.array([1, 1, 1, 1]), nll=np.array([0.9, 2.0, 0.1, 0.5]),
                        confidence=np.array([0.5, 0.8, 0.9, 0.6]))


def test_hand_worked_table():
    d = decompose_loss_change(LABELS, WEIGHTS, BEFORE, AFTER, 0, 1)
    # correct before/after: item0 T->F (CW), item1 F->F (WW), item2 T->T (CC), item3 F->T (WC)
    # d(nll) = [0.7, 1.0, -0.2, -1.0]; a d(nll) / A = [0.7/8, 1.0/8, -0.6/8, -3.0/8]
    #        = [0.0875, 0.125, -0.075, -0.375]
    expected = np.array([[0.0, 0.0875, 0.0, 0.125],
                         [-0.075, 0.0, -0.375, 0.0]])
    np.testing.assert_allclose(d.by_class_transition, expected, atol=1e-15)
    np.testing.assert_array_equal(d.item_counts, [[0, 1, 0, 1], [1, 0, 1, 0]])
    # L_before = (0.2 + 1.0 + 3 * 0.3 + 3 * 1.5) / 8 = 6.6 / 8 = 0.825; L_after = 4.7 / 8 = 0.5875
    assert d.loss_change == pytest.approx(0.5875 - 0.825, abs=1e-15)
    np.testing.assert_allclose(d.by_class, [0.2125, -0.45])
    np.testing.assert_allclose(d.by_transition, [-0.075, 0.0875, -0.375, 0.125])
    # dL < 0: the item pushing hardest downwards is item3 (-0.375); k = ceil(1% of 4) = 1 = ceil(5% of 4)
    assert d.top_1_percent_share == pytest.approx(0.375 / 0.2375)
    assert d.top_5_percent_share == pytest.approx(0.375 / 0.2375)
    assert d.share(d.by_transition)[TRANSITIONS.index("wrong->correct")] == pytest.approx(-0.375 / -0.2375)


def test_top_share_counts_the_top_one_and_five_percent():
    # 200 items: 2 with +10, 8 with +1, 190 with -0.05 -> total 20 + 8 - 9.5 = 18.5
    contributions = np.r_[[10.0] * 2, [1.0] * 8, [-0.05] * 190]
    assert top_share(contributions, 18.5, 0.01) == pytest.approx(20 / 18.5)      # k = 2
    assert top_share(contributions, 18.5, 0.05) == pytest.approx(28 / 18.5)      # k = 10
    assert np.isnan(top_share(contributions, 0.0, 0.01))


def test_same_epoch_gives_zero_change_and_undefined_shares():
    d = decompose_loss_change(LABELS, WEIGHTS, BEFORE, BEFORE, 2, 2)
    assert d.loss_change == 0.0 and not d.by_class_transition.any()
    assert np.isnan(d.top_1_percent_share) and np.isnan(d.share(d.by_class)).all()


def test_class_shares_by_hand():
    # counts [3, 1], weights [1, 3]: w n = [3, 3] -> pi = [0.5, 0.5]; frequency [0.75, 0.25]
    shares = class_shares(np.array([0, 0, 0, 1]), WEIGHTS)
    np.testing.assert_allclose(shares.weight_share, [0.5, 0.5])
    np.testing.assert_allclose(shares.frequency_share, [0.75, 0.25])
    np.testing.assert_allclose(shares.amplification, [2 / 3, 2.0])


def test_class_without_items_has_undefined_amplification():
    shares = class_shares(np.array([0, 0]), np.array([1.0, 5.0]))
    assert np.isnan(shares.amplification[1]) and shares.weight_share[1] == 0


def test_confident_errors_are_wrong_after_and_ranked_by_contribution():
    rows = confident_errors(LABELS, np.array(["a", "b", "c", "d"]), WEIGHTS, ("cat", "dog"), BEFORE, AFTER)
    # wrong after: items 0 (+0.0875) and 1 (+0.125); item 3 became correct, item 2 stayed correct
    assert [r.id for r in rows] == ["b", "a"]
    first = rows[0]
    assert (first.true_class, first.predicted_before, first.predicted_after) == ("cat", "dog", "dog")
    assert first.transition == "wrong->wrong" and rows[1].transition == "correct->wrong"
    assert first.loss_contribution == pytest.approx(0.125)
    assert first.confidence_after == 0.8
    assert first.true_confidence_before == pytest.approx(np.exp(-1.0))
    assert first.true_confidence_after == pytest.approx(np.exp(-2.0))
    assert len(confident_errors(LABELS, np.array(["a", "b", "c", "d"]), WEIGHTS, ("cat", "dog"), BEFORE, AFTER,
                                limit=1)) == 1


def test_loss_change_matches_torch_nll_loss():
    rng = np.random.default_rng(3)
    n, c = 300, 5
    labels = rng.integers(0, c, n)
    weights = rng.uniform(0.2, 4.0, c)
    log_probs = [torch.log_softmax(torch.tensor(rng.normal(scale=3, size=(n, c))), dim=1) for _ in range(2)]
    epochs = [SimpleNamespace(pred=lp.argmax(1).numpy(), nll=-lp[torch.arange(n), labels].numpy()) for lp in log_probs]
    d = decompose_loss_change(labels, weights, epochs[0], epochs[1], 0, 1)
    w, y = torch.tensor(weights), torch.tensor(labels)
    reference = (F.nll_loss(log_probs[1], y, weight=w) - F.nll_loss(log_probs[0], y, weight=w)).item()
    assert d.loss_change == pytest.approx(reference, abs=1e-12)
    assert abs(d.by_class_transition.sum() - reference) <= 1e-9


@st.composite
def two_epochs(draw):
    n = draw(st.integers(1, 60))
    c = draw(st.integers(1, 6))
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    weights = draw(hnp.arrays(np.float64, c, elements=st.floats(0.01, 100.0)))
    nll = st.floats(0.0, 80.0)
    epochs = [SimpleNamespace(pred=draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1))),
                              nll=draw(hnp.arrays(np.float64, n, elements=nll))) for _ in range(2)]
    return labels, weights, epochs


@settings(max_examples=200, deadline=None)
@given(two_epochs())
def test_table_sums_to_the_loss_change(case):
    labels, weights, (before, after) = case
    d = decompose_loss_change(labels, weights, before, after, 0, 1)
    a = weights[labels]
    direct = a @ after.nll / a.sum() - a @ before.nll / a.sum()
    assert abs(d.by_class_transition.sum() - d.loss_change) <= 1e-9
    assert abs(d.loss_change - direct) <= 1e-9
    assert d.item_counts.sum() == len(labels)
