"""The training side of the diagnosis on constructed runs (records chosen by hand, numbers checkable on paper):
the label evidence that tells noisy training labels from a class that lost its training signal, the generalisation
gap, memorised labels (AUM), leakage, and train mode against eval mode."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _diagnosis_runs import analysis_of, make_records
from postmortem.analyze.bootstrap import resample_multiplicities
from postmortem.analyze.modes import analyze_modes, match_train_mode
from postmortem.analyze.training import (NEAR_DUPLICATE_TOLERANCE, TRAIN_SEED, analyze_training, area_under_margin,
                                         find_leakage, memorised_labels)
from postmortem.diagnose import Cause, FindingKind, diagnose
from postmortem.diagnose.causes import PairReading
from postmortem.evaluate.mode_check import ModePasses
from postmortem.evaluate.records import ItemTable
from postmortem.evaluate.runner import TrainingSubset

N_VAL, N_TRAIN = 600, 600


def _validation_pair():
    """Validation: a third of class 0's items (70 of 200) move to class 1 between the two epochs and carry the rise
    (the `learned_pair` run of test_diagnose_rules)."""
    labels = np.arange(N_VAL) % 3
    rng = np.random.default_rng(5)
    nll = rng.uniform(0.1, 0.3, N_VAL)
    after, nll_after = labels.copy(), nll.copy()
    moved = np.flatnonzero(labels == 0)[:70]
    after[moved], nll_after[moved] = 1, rng.uniform(1.0, 2.0, len(moved))
    return labels, [make_records(labels, labels, nll), make_records(labels, after, nll_after)]


def _subset(labels, preds, margins, ids=None) -> TrainingSubset:
    """A training subset of records with chosen predictions and margins per epoch (nll from the margin's sign)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(1)
    records = tuple(make_records(labels, pred, np.where(pred == labels, 0.1, 2.0), margin=margin,
                                 entropy=rng.uniform(0, 1, len(labels)), logit_norm=rng.uniform(1, 3, len(labels)))
                    for pred, margin in zip(preds, margins))
    ids = np.array([f"t{i}" for i in range(len(labels))]) if ids is None else ids
    return TrainingSubset(ItemTable(labels, ids, np.arange(len(labels))), records, "train.pt", "", np.ones(len(labels)))


def _with_training(labels, records, subset, val_hashes=None, train_hashes=None):
    analysis = analysis_of(labels, records)
    training = analyze_training(subset, labels, np.ones(len(labels)), analysis.groups, analysis.records,
                                analysis.class_weights, val_hashes, train_hashes)
    return replace(analysis, training=training)


def noisy_labels_subset() -> tuple[TrainingSubset, np.ndarray]:
    """60 of the 260 items labelled 1 are class-0 items: predicted 0 (margin -2) at epoch 1, memorised as 1 (margin
    +1) at epoch 2 (AUM -0.5, competitor 0); every other item is right with margin 3."""
    labels = np.arange(N_TRAIN) % 3
    noisy = np.flatnonzero(labels == 0)[:60]
    labels[noisy] = 1
    first, second = labels.copy(), labels.copy()
    first[noisy] = 0
    margin_first, margin_second = np.full(N_TRAIN, 3.0), np.full(N_TRAIN, 3.0)
    margin_first[noisy], margin_second[noisy] = -2.0, 1.0
    return _subset(labels, (first, second), (margin_first, margin_second)), noisy


def lost_signal_subset() -> TrainingSubset:
    """Clean labels; a third of class 0's training items drift to 1 at epoch 2 (margin 3 -> -1, AUM +1)."""
    labels = np.arange(N_TRAIN) % 3
    drifted = np.flatnonzero(labels == 0)[:67]
    second = labels.copy()
    second[drifted] = 1
    margin_second = np.full(N_TRAIN, 3.0)
    margin_second[drifted] = -1.0
    return _subset(labels, (labels, second), (np.full(N_TRAIN, 3.0), margin_second))


def test_noisy_training_labels_make_a_learned_confusion_and_name_the_training_items():
    labels, records = _validation_pair()
    subset, noisy = noisy_labels_subset()
    diagnosis = diagnose(_with_training(labels, records, subset))
    v = diagnosis.verdict
    assert v.primary_cause is Cause.LEARNED_CONFUSION and v.classes == ("c0", "c1")
    confusion = next(a for a in v.assessments if a.cause is Cause.LEARNED_CONFUSION)
    assert confusion.reading is PairReading.LABEL_NOISE
    evidence = diagnosis.comparison.training.evidence_for((0, 1))
    assert evidence.train_share == pytest.approx(60 / 260) and evidence.validation_share == 0.0
    assert evidence.excess.low > 0.05
    assert sorted(evidence.train_indices) == sorted(noisy)
    assert "noisy training labels" in v.sentences.model_or_else and "t" + str(noisy[0]) in v.sentences.what_to_try
    memorised = next(f for f in diagnosis.findings if f.id == FindingKind.MEMORISED_TRAINING_LABELS.value)
    assert set(memorised.item_ids) == {f"t{i}" for i in noisy}
    assert Cause.CLASS_UNDERREPRESENTED not in v.contributing_causes


def test_a_class_that_lost_its_training_signal_is_underrepresented_not_mislabelled():
    labels, records = _validation_pair()
    diagnosis = diagnose(_with_training(labels, records, lost_signal_subset()))
    v = diagnosis.verdict
    assert v.primary_cause is Cause.CLASS_UNDERREPRESENTED and v.classes == ("c0", "c1")
    assert Cause.LEARNED_CONFUSION not in (v.primary_cause, *v.contributing_causes)
    signal = diagnosis.comparison.training.signal_for(0, 1)
    assert signal.drift_before == 0.0 and signal.drift_after == pytest.approx(67 / 200)
    assert signal.recall_after == pytest.approx(133 / 200) and signal.drift_change.low > 0
    finding = next(f for f in diagnosis.findings if f.id == FindingKind.CLASS_UNDERREPRESENTED.value)
    assert finding.classes == ("c0", "c1") and "training signal" in finding.title
    assert v.sentences.what_to_try.startswith("Restore c0's share of the training data")
    assert "rather than relabelling" in v.sentences.what_to_try


def test_without_a_training_subset_the_verdict_names_both_explanations():
    labels, records = _validation_pair()
    v = diagnose(analysis_of(labels, records)).verdict
    assert v.primary_cause is Cause.LEARNED_CONFUSION
    assert "noisy training labels" in v.sentences.model_or_else
    assert "fewer c0 items in training" in v.sentences.model_or_else
    assert "--train-data" in v.sentences.what_to_try


def _clean_subset_with_errors(wrong_share: float) -> TrainingSubset:
    """Clean labels; the same `wrong_share` of every class predicted as the next class (margin -1) at both epochs,
    every other item right with margin 3: no drift, no noisy labels."""
    clean = np.arange(N_TRAIN) % 3
    wrong = np.random.default_rng(3).random(N_TRAIN) < wrong_share
    pred = np.where(wrong, (clean + 1) % 3, clean)
    margin = np.where(wrong, -1.0, 3.0)
    return _subset(clean, (pred, pred), (margin, margin))


def test_a_subset_that_shows_neither_keeps_a_learned_confusion_of_the_features():
    labels, records = _validation_pair()
    v = diagnose(_with_training(labels, records, _clean_subset_with_errors(0.1))).verdict
    confusion = next(a for a in v.assessments if a.cause is Cause.LEARNED_CONFUSION)
    assert v.primary_cause is Cause.LEARNED_CONFUSION and confusion.reading is PairReading.NEITHER
    assert "neither" in v.sentences.model_or_else
    assert v.sentences.what_to_try.startswith("Look at the features that separate c0 from c1")
    assert "TRAINING labels" not in v.sentences.what_to_try           # the subset showed them clean


def test_a_subset_the_model_fits_entirely_cannot_show_a_lost_signal_and_says_so():
    """Every subset item right at both epochs (recall 100%): no noisy labels, but a class under-sampled in training
    would look the same on these fitted items, so both readings are named, not the features alone."""
    labels, records = _validation_pair()
    v = diagnose(_with_training(labels, records, _clean_subset_with_errors(0.0))).verdict
    confusion = next(a for a in v.assessments if a.cause is Cause.LEARNED_CONFUSION)
    assert v.primary_cause is Cause.LEARNED_CONFUSION and confusion.reading is PairReading.UNSEEN_SIGNAL
    assert ("it cannot show whether c0 lost training signal, since the model fits all of c0's training-subset items "
            "(recall 100% → 100%): either the features that separate these classes, or fewer c0 items") in \
        v.sentences.model_or_else
    assert v.sentences.what_to_try.startswith("Check c0's share of what the training loop drew")
    assert "(recall at least 99% at both epochs)" in confusion.facts


def test_the_gap_interval_is_the_difference_of_independent_resamples():
    labels, records = _validation_pair()
    subset, _ = noisy_labels_subset()
    training = _with_training(labels, records, subset).training
    val_loss = [float(F.nll_loss(torch.tensor(-r.nll[:, None]), torch.zeros(N_VAL, dtype=torch.long))) for r in records]
    train_loss = [float(r.nll.mean()) for r in subset.records]
    for e in range(2):
        assert training.gap[e].estimate == pytest.approx(val_loss[e] - train_loss[e], rel=1e-12)
    # recompute the interval by hand: R resamples of each set, paired by index, percentiles 2.5 / 97.5
    val_draws = np.concatenate(list(resample_multiplicities(N_VAL)))
    train_draws = np.concatenate(list(resample_multiplicities(N_TRAIN, seed=TRAIN_SEED)))
    gaps = (val_draws @ records[1].nll) / val_draws.sum(1) - (train_draws @ subset.records[1].nll) / train_draws.sum(1)
    low, high = np.quantile(gaps, [0.025, 0.975])
    assert training.gap[1].low == pytest.approx(min(low, training.gap[1].estimate), rel=1e-12)
    assert training.gap[1].high == pytest.approx(max(high, training.gap[1].estimate), rel=1e-12)


def test_area_under_margin_fit_epoch_and_forgetting():
    labels = np.array([0, 0, 1, 1])
    preds = [np.array([1, 0, 0, 1]), np.array([0, 0, 0, 1]), np.array([1, 0, 1, 1]), np.array([0, 0, 1, 1])]
    margins = [np.array([-1.0, 2, -3, 1]), np.array([0.5, 2, -2, 1]), np.array([-1.0, 2, 0.5, 1]),
               np.array([0.5, 2, 1, 1])]
    records = [make_records(labels, p, np.ones(4), margin=m) for p, m in zip(preds, margins)]
    np.testing.assert_allclose(area_under_margin(records, 3), [-0.25, 2.0, -0.875, 1.0])
    memorised = memorised_labels(labels, records, 2)
    assert memorised.indices.tolist() == [2, 0]                      # most negative AUM first
    assert memorised.competitor.tolist() == [0, 1]
    assert memorised.fit_from.tolist() == [2, 3]                      # right from epoch index 2 / 3 on
    assert memorised.forgetting_events.tolist() == [0, 1]             # item 0: right at 1, wrong at 2
    assert memorised.n_memorised == 2


def test_leakage_by_input_hash_and_by_output_trajectory():
    rng = np.random.default_rng(3)
    n_val, n_train = 300, 400
    val_labels, train_labels = rng.integers(0, 3, n_val), rng.integers(0, 3, n_train)

    def trajectories(n):
        return rng.uniform(0, 1, (2, n)), rng.uniform(1, 3, (2, n))

    (val_entropy, val_norm), (train_entropy, train_norm) = trajectories(n_val), trajectories(n_train)
    copies = np.arange(10)                 # validation items 0..9 score as training items 100..109 at every epoch
    val_entropy[:, copies], val_norm[:, copies] = train_entropy[:, 100 + copies], train_norm[:, 100 + copies]
    val = [make_records(val_labels, val_labels, np.ones(n_val), entropy=val_entropy[e], logit_norm=val_norm[e])
           for e in range(2)]
    train = [make_records(train_labels, train_labels, np.ones(n_train), entropy=train_entropy[e],
                          logit_norm=train_norm[e]) for e in range(2)]
    val_hashes = rng.integers(0, 2 ** 63, n_val).astype(np.uint64)
    train_hashes = rng.integers(0, 2 ** 63, n_train).astype(np.uint64)
    val_hashes[[20, 21]] = train_hashes[[5, 6]]      # two byte-for-byte copies whose outputs do not match (augmented)
    leakage = find_leakage(val, train, val_hashes, train_hashes, NEAR_DUPLICATE_TOLERANCE)
    assert leakage.by_outputs.tolist() == copies.tolist()
    assert leakage.by_input_hash.tolist() == [20, 21]
    assert leakage.indices.tolist() == [*copies.tolist(), 20, 21]
    assert leakage.matched_training.tolist() == [*(100 + copies).tolist(), 5, 6]
    without = find_leakage(val, train, None, None, NEAR_DUPLICATE_TOLERANCE)
    assert not without.input_hashes_known and without.indices.tolist() == copies.tolist()


def test_leakage_is_a_finding_with_or_without_a_rise():
    labels, records = _validation_pair()
    subset, _ = noisy_labels_subset()
    val_hashes = np.arange(N_VAL, dtype=np.uint64)
    train_hashes = np.arange(10_000, 10_000 + N_TRAIN, dtype=np.uint64)
    train_hashes[:5] = val_hashes[[3, 6, 9, 12, 15]]
    falling = [records[1], records[0]]       # the loss falls: no rise, and still the leakage is reported
    for run in (records, falling):
        diagnosis = diagnose(_with_training(labels, run, subset, val_hashes, train_hashes))
        leak = next(f for f in diagnosis.findings if f.id == FindingKind.TRAIN_VALIDATION_LEAKAGE.value)
        assert leak.item_ids == ("3", "6", "9", "12", "15") and leak.evidence["n_leaked"] == 5


def _modes_run():
    """Eval-mode losses 0.2 -> 0.5; recomputed BatchNorm statistics 0.2 -> 0.3 (they remove two thirds of the
    rise); train-mode passes a little above each."""
    labels = np.arange(400) % 2
    rng = np.random.default_rng(7)
    base = rng.uniform(0.1, 0.3, 400)
    records = [make_records(labels, labels, base), make_records(labels, labels, base + 0.3)]
    train_mode = [tuple(make_records(labels, labels, base + shift + extra) for extra in (0.09, 0.10, 0.11))
                  for shift in (0.0, 0.3)]
    passes = (ModePasses(0, "1 Dropout (p 0.5), 1 BatchNorm1d", train_mode[0], make_records(labels, labels, base)),
              ModePasses(1, "1 Dropout (p 0.5), 1 BatchNorm1d", train_mode[1], make_records(labels, labels, base + 0.1)))
    return labels, records, passes


def test_recomputed_batch_norm_statistics_remove_part_of_the_rise():
    labels, records, passes = _modes_run()
    analysis = analysis_of(labels, records)
    modes = analyze_modes(labels, analysis.groups, analysis.class_weights, analysis.records, passes, 0, 1)
    assert modes.recalibration_removes.estimate == pytest.approx(0.2)
    assert modes.recalibration_share.estimate == pytest.approx(2 / 3)
    assert modes.at(1).train_mode_loss == pytest.approx(float((records[1].nll + 0.10).mean()))
    assert modes.at(1).train_mode_spread == pytest.approx(0.01)
    finding = next(f for f in diagnose(analysis, modes=modes).findings
                   if f.id == FindingKind.BATCHNORM_STATISTICS.value)
    assert finding.evidence["recalibration_share"] == pytest.approx(2 / 3)


def test_a_logged_loss_is_matched_to_train_mode_within_the_passes_spread():
    labels, records, passes = _modes_run()
    analysis = analysis_of(labels, records)
    modes = analyze_modes(labels, analysis.groups, analysis.class_weights, analysis.records, passes, 0, 1)
    train_mode = [modes.at(i).train_mode_loss for i in (0, 1)]
    matched = match_train_mode({1: train_mode[0] + 0.02, 2: train_mode[1] - 0.02}, (1, 2), modes, 3.0, 1e-3)
    assert [m.matches for m in matched] == [True, True]              # within 3 x 0.01
    off = match_train_mode({1: train_mode[0] + 0.05, 2: records[1].nll.mean()}, (1, 2), modes, 3.0, 1e-3)
    assert [m.matches for m in off] == [False, False]                # too far; and the eval-mode loss itself


def test_the_gap_sentence_says_when_its_change_is_within_noise():
    from postmortem.analyze.bootstrap import Interval
    from postmortem.analyze.training import TrainingComparison
    from postmortem.diagnose.wording import gap_text

    def comparison(change: Interval) -> TrainingComparison:
        return TrainingComparison(0, 1, Interval(0.03, 0.0, 0.06), Interval(0.04, 0.0, 0.08), change,
                                  Interval(0.1, 0.07, 0.14), (), ())

    noisy = gap_text(comparison(Interval(0.0084, -0.0355, 0.0524)))
    assert "(change +0.0084, CI [-0.0355, +0.0524], within noise)" in noisy
    grown = gap_text(comparison(Interval(0.2272, 0.1970, 0.2537)))
    assert "(change +0.2272, CI [+0.1970, +0.2537])" in grown and "within noise" not in grown
