"""Ground truth of the training-side scenarios (issue 16, item 5): every run's cause confirmed without postmortem.

The builders (tests/_training_scenarios.py) train real MLPs, save real checkpoints and confirm each cause from them
with torch and a seeded paired bootstrap. Here the point estimates are recomputed a second way, from the same
checkpoints, with scipy's log-softmax and scikit-learn (accuracy_score, confusion_matrix, recall_score), the learning
rates against torch's own schedulers, and then each scenario's defining facts (the numbers behind its expected
verdict) are asserted. postmortem is not imported.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

from _training_scenarios import BUILDERS, LR_EVENT_WINDOW, TrainingScenario, read_run

NAMES = ("class_undersampled", "class_undersampled_no_subset", "training_label_noise_subset", "step_lr_decay",
         "warm_restart", "leaked_set", "dropout_train_mode_log")
REL = 1e-9


@pytest.fixture(scope="module")
def suite(training_scenario_suite) -> dict[str, TrainingScenario]:
    return training_scenario_suite


def _loss(labels, logits) -> float:
    return float(np.mean(-log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels]))


def test_the_suite_has_every_scenario_of_the_issue(suite):
    assert set(suite) == set(NAMES)
    assert {s.kind for s in suite.values()} | {"class_undersampled_no_subset"} == set(BUILDERS) | {
        "class_undersampled_no_subset"}
    assert suite["class_undersampled"].with_subset and not suite["class_undersampled_no_subset"].with_subset
    for s in suite.values():
        assert s.expected_primary is None or s.expected_primary in s.acceptable_primary
        assert set(s.expected_classes) <= set(s.class_names)
        assert (s.run / "postmortem_spec.py").is_file() and (s.run / "val.pt").is_file()
        assert ("def train_data" in (s.run / "postmortem_spec.py").read_text()) == s.with_subset


@pytest.mark.parametrize("name", NAMES)
def test_scenario_shows_its_cause(suite, name):
    s = suite[name]
    failed = [fact for fact, holds in s.facts.items() if not holds]
    numbers = "\n".join(f"  {key}: {value}" for key, value in vars(s.confirmation).items())
    assert len(s.facts) >= 3 and not failed, f"{name}: {failed}\n{numbers}"


@pytest.mark.parametrize("name", NAMES)
def test_confirmation_agrees_with_scikit_learn(suite, name):
    s, c = suite[name], suite[name].confirmation
    out = read_run(s.run)
    y = out.val_labels
    losses = [_loss(y, z) for z in out.val_logits]
    np.testing.assert_allclose(c.losses, losses, rtol=REL)
    np.testing.assert_allclose(c.accuracies, [accuracy_score(y, z.argmax(1)) for z in out.val_logits], rtol=REL)
    best, last = int(np.argmin(losses)), len(losses) - 1
    assert (c.best_epoch, c.last_epoch) == (out.epochs[best], out.epochs[last])
    assert c.loss_change.estimate == pytest.approx(losses[last] - losses[best], rel=REL)
    assert c.loss_change.low <= c.loss_change.estimate <= c.loss_change.high
    p_best, p_last = out.val_logits[best].argmax(1), out.val_logits[last].argmax(1)
    if s.pair is not None:
        a, b = s.pair
        shares = [confusion_matrix(y, p, labels=range(5), normalize="true")[a, b] for p in (p_best, p_last)]
        assert c.confusion_growth.estimate == pytest.approx(shares[1] - shares[0], rel=REL)
    if out.train_logits is not None:
        np.testing.assert_allclose(c.train_losses, [_loss(out.train_labels, z) for z in out.train_logits], rtol=REL)
        if s.pair is not None:
            recalls = [recall_score(out.train_labels, z.argmax(1), labels=[s.pair[0]], average=None)[0]
                       for z in (out.train_logits[best], out.train_logits[last])]
            assert c.train_recall_change.estimate == pytest.approx(recalls[1] - recalls[0], abs=1e-12)


def test_the_checkpoints_lr_is_the_schedulers(suite):
    """The lr saved in each checkpoint's optimizer state is what torch's StepLR and CosineAnnealingWarmRestarts give
    after that many epochs (stepped once per epoch before saving)."""
    step = suite["step_lr_decay"].confirmation
    np.testing.assert_allclose(step.learning_rates, [0.1 * 0.2 ** (e // 10) for e in step.epochs], rtol=1e-12)
    restart = suite["warm_restart"].confirmation
    expected = [0.2 * (1 + np.cos(np.pi * (e % 10) / 10)) / 2 for e in restart.epochs]
    np.testing.assert_allclose(restart.learning_rates, expected, rtol=1e-9, atol=1e-15)
    for name, kind, epochs in (("step_lr_decay", "lr_drop", (9, 10)), ("warm_restart", "lr_restart", (9, 10))):
        event = suite[name].lr_event
        assert (event.kind, event.from_epoch, event.to_epoch) == (kind, *epochs)
        c = suite[name].confirmation
        onset = c.epochs.index(c.best_epoch) + 1
        assert onset - c.epochs.index(event.to_epoch) <= LR_EVENT_WINDOW
        checkpoint = torch.load(sorted((suite[name].run / "checkpoints").glob("*.pt"))[9], weights_only=True)
        assert checkpoint["lr_scheduler"]["_last_lr"][0] == pytest.approx(event.lr_after, rel=1e-12)


def test_the_undersampled_class_keeps_clean_labels(suite):
    """Its training labels are the clusters drawn from: the only change is how many of its items each epoch used."""
    c = suite["class_undersampled"].confirmation
    assert c.trained_share[0] == pytest.approx(0.2, abs=0.01) and c.trained_share[-1] < 0.03
    assert suite["class_undersampled_no_subset"].confirmation.losses == c.losses      # the same checkpoints


def test_the_leaked_copies_are_the_constructed_ones(suite):
    s = suite["leaked_set"]
    out = read_run(s.run)
    position = {item: i for i, item in enumerate(out.train_ids)}
    val_position = {item: i for i, item in enumerate(out.val_ids)}
    assert {v for v, _ in s.leaked_copies} == set(s.leaked_ids) and len(s.leaked_ids) == round(0.05 * len(out.val_ids))
    for v, t in s.leaked_copies:
        x_val, x_train = out.val_inputs[val_position[v]], out.train_inputs[position[t]]
        assert np.array_equal(x_val, x_train) == (v in s.exact_copies)
        assert np.abs(x_val - x_train).max() <= 1e-3
        assert out.val_labels[val_position[v]] == out.train_labels[position[t]]


def test_the_log_is_torchs_train_mode_loss(suite):
    c = suite["dropout_train_mode_log"].confirmation
    np.testing.assert_allclose(c.logged_losses, c.train_mode_losses, rtol=1e-12)
    assert min(abs(a - b) / b for a, b in zip(c.logged_losses, c.losses)) > 0.05     # never the eval-mode loss
