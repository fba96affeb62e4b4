"""Ground truth of the scenario suite (issue 10): every small scenario's cause confirmed without postmortem.

The builders (tests/_scenarios.py) train real MLPs and confirm each cause from the saved predictions with
torch, scipy and a seeded paired bootstrap. Here the point estimates are recomputed a second way, from the
same files, with scipy's log-softmax and scikit-learn (accuracy_score, recall_score, f1_score, confusion_matrix),
the temperature fits are checked against their optimality condition, the validation labels against the
generative ones, and then each scenario's defining facts (the intervals behind its expected verdict) are
asserted. postmortem is not imported.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from _scenarios import (BUILDERS, CAUSES, SUITE, Scenario, build, cross_fitted_scaled_nll, defining_facts,
                        fit_inverse_temperature, read_predictions, resample_counts)

NAMES = [kind if seed == 0 else f"{kind}_seed{seed}" for kind, seed in SUITE]
REL = 1e-9


@pytest.fixture(scope="module")
def suite(scenario_suite) -> dict[str, Scenario]:
    return scenario_suite


def _loss(labels, logits, item_weights) -> float:
    """sum_i a_i nll_i / sum_i a_i with nll from scipy's float64 log-softmax (scikit-learn's log_loss clips
    probabilities at 1e-16, which the confidently wrong items of these runs go below)."""
    nll = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels]
    return float(item_weights @ nll / item_weights.sum())


def _part(selected, labels, best, last, item_weights) -> float:
    """sum over the selected items of a_i (nll_i(last) - nll_i(best)) / sum over all items of a_i."""
    share = item_weights[selected].sum() / item_weights.sum()
    return share * (_loss(labels[selected], last[selected], item_weights[selected])
                    - _loss(labels[selected], best[selected], item_weights[selected]))


def test_suite_covers_every_cause_and_status(suite):
    primaries = {s.expected_primary for s in suite.values()} - {None}
    assert primaries == set(CAUSES)
    assert {s.expected_status for s in suite.values()} == {"rise", "no_rise", "unresolved"}
    assert set(BUILDERS) == {s.kind for s in suite.values()}
    for s in suite.values():
        assert (s.expected_primary is None) == (s.expected_status != "rise")
        assert s.expected_primary is None or s.expected_primary in s.acceptable_primary
        assert set(s.expected_classes) <= set(s.class_names)


@pytest.mark.parametrize("name", NAMES)
def test_scenario_shows_its_cause(suite, name):
    s = suite[name]
    facts = defining_facts(s)
    failed = [fact for fact, holds in facts.items() if not holds]
    numbers = "\n".join(f"  {key}: {value}" for key, value in vars(s.confirmation).items())
    assert len(facts) >= 1 and not failed, f"{name}: {failed}\n{numbers}"


@pytest.mark.parametrize("name", NAMES)
def test_confirmation_agrees_with_scikit_learn(suite, name):
    s, c = suite[name], suite[name].confirmation
    run = read_predictions(s.predictions_dir)
    y, k = run.labels, len(s.class_names)
    weights = np.ones(k) if s.class_weights is None else np.asarray(s.class_weights)
    a = weights[y]
    losses = [_loss(y, z, a) for z in run.outputs]
    np.testing.assert_allclose(c.losses, losses, rtol=REL)
    np.testing.assert_allclose(c.accuracies, [accuracy_score(y, z.argmax(1)) for z in run.outputs], rtol=REL)
    best, last = int(np.argmin(losses)), len(losses) - 1
    assert (c.best_epoch, c.last_epoch) == (run.epochs[best], run.epochs[last])
    z_best, z_last = run.outputs[best], run.outputs[last]
    p_best, p_last = z_best.argmax(1), z_last.argmax(1)
    assert c.loss_change.estimate == pytest.approx(losses[last] - losses[best], rel=REL, abs=1e-12)
    f1 = [f1_score(y, p, labels=list(range(k)), average="macro", zero_division=0) for p in (p_best, p_last)]
    assert c.macro_f1_change.estimate == pytest.approx(f1[1] - f1[0], abs=1e-12)
    for interval in (c.loss_change, c.scaled_loss_change, c.calibration_change, c.accuracy_change):
        assert interval.low <= interval.estimate <= interval.high or interval.low == interval.high
    if s.class_weights is not None:
        unweighted = _loss(y, z_last, np.ones(len(y))) - _loss(y, z_best, np.ones(len(y)))
        assert c.unweighted_loss_change.estimate == pytest.approx(unweighted, rel=REL)
    if s.flipped_ids:
        flipped = np.isin(run.ids, s.flipped_ids)
        assert c.flipped_part.estimate == pytest.approx(_part(flipped, y, z_best, z_last, a), rel=REL)
        rest = _loss(y[~flipped], z_last[~flipped], a[~flipped]) - _loss(y[~flipped], z_best[~flipped], a[~flipped])
        assert c.rest_loss_change.estimate == pytest.approx(rest, rel=REL)
    if s.kind == "training_label_noise_pair":
        cls, other = (s.class_names.index(name) for name in s.expected_classes)
        shares = [confusion_matrix(y, p, labels=list(range(k)), normalize="true")[cls, other] for p in (p_best, p_last)]
        assert c.confusion_growth.estimate == pytest.approx(shares[1] - shares[0], rel=REL)
        carried = (y == cls) & (p_last == other)
        assert c.confusion_part.estimate == pytest.approx(_part(carried, y, z_best, z_last, a), rel=REL)
    if s.kind == "class_collapse":
        (cls,) = (s.class_names.index(name) for name in s.expected_classes)
        recalls = [recall_score(y, p, labels=[cls], average=None)[0] for p in (p_best, p_last)]
        assert c.recall_change.estimate == pytest.approx(recalls[1] - recalls[0], rel=REL)
        assert c.class_part.estimate == pytest.approx(_part(y == cls, y, z_best, z_last, a), rel=REL)
        into = confusion_matrix(y, p_last, labels=list(range(k)))[cls]
        assert c.largest_destination_share == pytest.approx(np.delete(into, cls).max() / into.sum(), rel=REL)


@pytest.mark.parametrize("name", ["overconfidence_only", "class_weight_amplification", "small_noise"])
def test_temperatures_are_optimal_and_cross_fitting_is_not_optimistic(suite, name):
    """At the fitted b = 1/T, sum_i a_i z_{i,y_i} = sum_i a_i sum_k q_ik z_ik (q = softmax(b z)). The cross-fitted
    scaled loss is never below the in-sample one: with b_k fitted on the folds other than k and b* on all,
    sum_k S_k(b_k) = sum_k [S(b_k) - sum_{j != k} S_j(b_k)] >= K S(b*) - (K - 1) S(b*) = S(b*)."""
    s = suite[name]
    run = read_predictions(s.predictions_dir)
    y = run.labels
    weights = np.ones(len(s.class_names)) if s.class_weights is None else np.asarray(s.class_weights)
    a = weights[y]
    for z, temperature in zip((run.outputs[s.confirmation.best_epoch - 1], run.outputs[-1]),
                              s.confirmation.temperatures):
        z = z.astype(np.float64)
        b = fit_inverse_temperature(z, y, a)
        assert 1 / b == pytest.approx(temperature, rel=1e-12)
        q = softmax(b * z, axis=1)
        gradient = a @ ((q * z).sum(1) - z[np.arange(len(y)), y]) / a.sum()
        assert abs(gradient) < 1e-6 * np.abs(z).mean()
        in_sample = _loss(y, b * z, a)
        assert a @ cross_fitted_scaled_nll(z, y, a, run.groups) / a.sum() >= in_sample - 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_validation_labels_are_clean_unless_corrupted_on_purpose(suite, name):
    s = suite[name]
    run = read_predictions(s.predictions_dir)
    with np.load(s.truth_file) as truth:
        assert (truth["ids"] == run.ids).all()
        true_labels = truth["true_labels"]
    wrong = run.ids[run.labels != true_labels]
    assert s.clean_validation_labels == (len(wrong) == 0)
    assert set(wrong) == set(s.flipped_ids)
    if s.flipped_ids:   # 15% of the items of two classes
        corrupted = np.unique(true_labels[run.labels != true_labels])
        assert len(corrupted) == 2
        for cls in corrupted:
            of_class = true_labels == cls
            assert (run.labels[of_class] != cls).sum() == round(0.15 * of_class.sum())


def test_grouped_bootstrap_resamples_whole_groups(suite):
    run = read_predictions(suite["small_noise"].predictions_dir)
    counts = resample_counts(len(run.labels), run.groups)
    for group in np.unique(run.groups):
        members = counts[:, run.groups == group]
        assert (members == members[:, :1]).all()
    n_groups = len(np.unique(run.groups))
    first_of_group = np.unique(run.groups, return_index=True)[1]
    assert (counts[:, first_of_group].sum(1) == n_groups).all()
    assert counts[:, first_of_group].std() > 0


def test_builds_are_deterministic(tmp_path):
    first, second = (build("genuine_degradation", tmp_path / name) for name in ("a", "b"))
    assert first.confirmation == second.confirmation
    for path in sorted(first.predictions_dir.iterdir()) + [first.truth_file]:
        twin = second.predictions_dir / path.name if path.parent == first.predictions_dir else second.truth_file
        with np.load(path) as a, np.load(twin) as b:
            assert a.files == b.files
            for key in a.files:
                assert np.array_equal(a[key], b[key]), f"{path.name}: {key}"
