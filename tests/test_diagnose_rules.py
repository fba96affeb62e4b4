"""Diagnosis on constructed runs: the comparison, each cause's assessment, the verdict, and every finding where it
must fire and where it must not. (tests/test_scenarios_verdict.py holds the trained-model scenarios.)"""
import json

import numpy as np
import pytest

from _diagnosis_runs import analysis_of, degrading_run, make_records, overconfident_run, validation_label_noise_run
from postmortem.diagnose import (Cause, DiagnosisConfig, Finding, FindingKind, Severity, Status, diagnose,
                                 finding_to_json, verdict_to_json)
from postmortem.diagnose import rules
from postmortem.diagnose.findings import FigureAnchor

CONFIG = DiagnosisConfig()


# ----------------------------------------------------------------------------- constructed runs
@pytest.fixture(scope="module")
def overconfident():
    """Logits scaled up 1x..4x after two noisy epochs: decisions fixed, confidence and loss grow."""
    return diagnose(analysis_of(*overconfident_run()))


@pytest.fixture(scope="module")
def degrading():
    """Logits lose signal after epoch 2: accuracy, macro F1 and the post-scaling loss all get worse."""
    return diagnose(analysis_of(*degrading_run()))


@pytest.fixture(scope="module")
def label_noise():
    labels, records, flipped = validation_label_noise_run()
    return diagnose(analysis_of(labels, records)), flipped


def _base_nll(n, seed=0):
    return np.random.default_rng(seed).uniform(0.05, 0.15, n)


RARE_LABELS = np.r_[np.arange(300) % 3, np.full(20, 3)]     # 100 items each of classes 0-2, 20 of class 3
RARE_WEIGHTS = np.array([1.0, 1.0, 1.0, 10.0])                # pi_3 = 200 / 500 = 0.4 vs n_3 / N = 0.0625


def weighted_rise():
    """Items stay right; the rare heavy class's nll rises by ~1 and the others fall by ~0.1: the weighted loss rises,
    the unweighted one falls. No calibration gap (scaled nll = nll)."""
    labels, rng = RARE_LABELS, np.random.default_rng(2)
    nll = rng.uniform(0.2, 0.4, len(labels))
    change = np.where(labels == 3, rng.uniform(0.8, 1.2, len(labels)), -rng.uniform(0.08, 0.12, len(labels)))
    return diagnose(analysis_of(labels, [make_records(labels, labels, nll, class_weights=RARE_WEIGHTS),
                                         make_records(labels, labels, nll + change, class_weights=RARE_WEIGHTS)],
                                RARE_WEIGHTS))


def collapsing_class():
    """Class 3 (10% of items) goes from right to wrong, spread over the other three classes, while as many items of
    the others go from wrong to right (accuracy holds exactly); no calibration gap."""
    labels = np.r_[np.arange(360) % 3, np.full(40, 3)]
    rng = np.random.default_rng(4)
    nll = rng.uniform(0.1, 0.3, 400)
    before = labels.copy()
    before[:40] = (labels[:40] + 1) % 3                                    # 40 items of 0-2 wrong before ...
    after = labels.copy()
    after[labels == 3] = np.arange(40) % 3                                 # ... right after; class 3 collapses
    nll_after = np.where(labels == 3, rng.uniform(1.5, 2.5, 400), np.where(np.arange(400) < 40, 0.5, nll))
    nll_before = np.where(np.arange(400) < 40, 1.0, nll)
    return diagnose(analysis_of(labels, [make_records(labels, before, nll_before),
                                         make_records(labels, after, nll_after)]))


def learned_pair(scaled_fraction: float = 1.0, others_rise: float = 0.0):
    """A third of class 0's items move to class 1 (the others stay right): one confusion grows and carries the rise.
    `scaled_fraction` of their new loss survives temperature scaling (1: none of the rise is calibration); every
    other item's loss rises by `others_rise`, all of it removed by scaling."""
    labels = np.arange(600) % 3
    rng = np.random.default_rng(5)
    nll = rng.uniform(0.1, 0.3, 600)
    after, nll_after = labels.copy(), nll.copy()
    moved = np.flatnonzero(labels == 0)[:70]
    after[moved], nll_after[moved] = 1, rng.uniform(1.0, 2.0, len(moved))
    is_moved = np.isin(np.arange(600), moved)
    scaled_after = np.where(is_moved, nll + scaled_fraction * (nll_after - nll), nll_after)
    nll_after = np.where(is_moved, nll_after, nll_after + others_rise)
    return diagnose(analysis_of(labels, [make_records(labels, labels, nll),
                                         make_records(labels, after, nll_after, scaled_nll=scaled_after)]))


def small_noisy_rise():
    """140 items whose loss changes by zero-mean noise plus a little: a rise that the interval cannot resolve."""
    rng = np.random.default_rng(8)
    labels = np.arange(140) % 2
    nll = rng.uniform(0.3, 1.0, 140)
    jitter = rng.normal(scale=0.3, size=140)
    return diagnose(analysis_of(labels, [make_records(labels, labels, nll),
                                         make_records(labels, labels, np.clip(nll + jitter - jitter.mean() + 0.01,
                                                                              0.01, None))]))


def falling():
    labels = np.arange(400) % 4
    return diagnose(analysis_of(labels, [make_records(labels, labels, nll)
                                         for nll in (_base_nll(400) + 0.2, _base_nll(400))]))


def _ids(diagnosis):
    return [f.id for f in diagnosis.findings]


def _finding(diagnosis, kind: FindingKind) -> Finding | None:
    return next((f for f in diagnosis.findings if f.id == kind.value), None)


# ----------------------------------------------------------------------------- status and causes
def test_overconfidence_is_calibration_and_nothing_else(overconfident):
    v = overconfident.verdict
    assert v.status is Status.RISE and v.primary_cause is Cause.CALIBRATION and v.contributing_causes == ()
    assert v.cause_shares[Cause.CALIBRATION].low > 0.9                 # the scaled loss did not move
    assert v.classes == () and v.item_ids == ()
    # clean labels: confident errors are as many as calibrated probabilities expect, so no label claim
    assert FindingKind.VALIDATION_LABEL_ERRORS.value not in _ids(overconfident)
    assert "Genuine degradation: not detected (scaled-loss change" in v.sentences.model_or_else
    assert "no sign" not in v.sentences.model_or_else.lower()
    assert "Temperature-scale" in v.sentences.what_to_try


def test_degradation_leads_with_calibration_contributing(degrading):
    v = degrading.verdict
    assert v.primary_cause is Cause.GENUINE_DEGRADATION and Cause.CALIBRATION in v.contributing_causes
    # the decisions got worse: calibration's part is told without "not its decisions"
    assert "the model's confidence:" in v.sentences.model_or_else and "not its decisions" not in v.sentences.model_or_else
    assert v.cause_shares[Cause.GENUINE_DEGRADATION].low > 0
    finding = _finding(degrading, FindingKind.GENUINE_DEGRADATION)
    assert finding.evidence["scaled_loss_change_ci_low"] > 0 and finding.evidence["macro_f1_change_ci_high"] < 0


def test_wrong_validation_labels_lead_and_name_the_flipped_items(label_noise):
    diagnosis, flipped = label_noise
    v = diagnosis.verdict
    assert v.primary_cause is Cause.VALIDATION_LABELS and set(v.classes) == {"c0", "c1"}
    named = {int(i) for i in v.item_ids}
    precision, recall = len(named & set(flipped)) / len(named), len(named & set(flipped)) / len(flipped)
    assert precision > 0.9 and recall > 0.6
    finding = _finding(diagnosis, FindingKind.VALIDATION_LABEL_ERRORS)
    assert finding.item_ids == v.item_ids and finding.severity is Severity.HIGH
    assert v.cause_shares[Cause.VALIDATION_LABELS].estimate > 1.0     # they carry more than the whole rise


def test_class_weights_lead_when_the_unweighted_loss_fell():
    diagnosis = weighted_rise()
    v = diagnosis.verdict
    ledger = diagnosis.comparison.ledger
    assert ledger.unweighted_loss_change.estimate < 0 < ledger.loss_change.low
    assert v.primary_cause is Cause.CLASS_WEIGHTS and v.classes == ("c3",)
    # the scaled loss rose as much (no calibration gap here), so degradation counts too, but the weights lead;
    # with the model worse as well, the verdict does not say "not the model"
    assert Cause.GENUINE_DEGRADATION in v.contributing_causes
    assert "the loss's class weights:" in v.sentences.model_or_else and "not the model" not in v.sentences.model_or_else
    finding = _finding(diagnosis, FindingKind.CLASS_WEIGHT_AMPLIFICATION)
    assert finding.classes == ("c3",) and finding.evidence["unweighted_loss_change"] < 0
    # the title says "fell" only when the unweighted change's interval is below 0, and prints that interval
    unweighted = ledger.unweighted_loss_change
    assert ("without them it fell" in finding.title) == unweighted.below_zero
    assert ("without them it did not rise" in finding.title) == (not unweighted.below_zero)
    assert f"CI [{unweighted.low:+.4f}, {unweighted.high:+.4f}]" in finding.title
    assert finding.evidence["weight_share"] == pytest.approx(0.4) and finding.evidence["frequency_share"] == 0.0625


def test_a_collapsing_class_is_named_with_its_checkpoint():
    diagnosis = collapsing_class()
    v = diagnosis.verdict
    assert not diagnosis.comparison.ledger.accuracy_change.below_zero
    assert v.primary_cause is Cause.CLASS_COLLAPSE and v.classes == ("c3",)
    assert "c3's recall" in v.sentences.what_to_try and "macro F1" in v.sentences.what_to_try
    assert _finding(diagnosis, FindingKind.CLASS_COLLAPSE).evidence["recall_change"] == pytest.approx(-1.0)


def test_a_learned_confusion_names_both_classes_and_no_label_errors():
    diagnosis = learned_pair()
    v = diagnosis.verdict
    assert v.primary_cause is Cause.LEARNED_CONFUSION and v.classes == ("c0", "c1")
    assert "TRAINING labels" in v.sentences.what_to_try
    assert FindingKind.VALIDATION_LABEL_ERRORS.value not in _ids(diagnosis)
    assert FindingKind.PERSISTENT_ERRORS.value not in _ids(diagnosis)    # its items are not called label errors
    # class 0's recall fell, but the one confusion explains it: no separate collapse
    assert Cause.CLASS_COLLAPSE not in v.contributing_causes


def test_a_confusion_carrying_most_of_the_rise_leads_over_a_larger_calibration_share():
    """Where the rise comes from (one learned confusion, most of it) leads over how the loss moved (temperature
    scaling removes 80% of the confusion's rise and all of the rest's: a larger share)."""
    diagnosis = learned_pair(scaled_fraction=0.2, others_rise=0.05)
    v = diagnosis.verdict
    assert v.cause_shares[Cause.CALIBRATION].estimate > v.cause_shares[Cause.LEARNED_CONFUSION].estimate > 0.5
    assert v.primary_cause is Cause.LEARNED_CONFUSION and Cause.CALIBRATION in v.contributing_causes
    below = diagnose(analysis_of(*overconfident_run()), DiagnosisConfig(min_leading_share=2.0))
    assert below.verdict.primary_cause is Cause.CALIBRATION          # nothing specific leads: the largest share does


def test_unresolved_claims_no_mechanism_and_says_how_many_items_would_resolve_it():
    diagnosis = small_noisy_rise()
    v, c = diagnosis.verdict, diagnosis.comparison
    assert c.ledger.loss_change.estimate > 0 and c.ledger.loss_change.low <= 0
    assert v.status is Status.UNRESOLVED and v.primary_cause is None and v.contributing_causes == ()
    assert _ids(diagnosis) == ["noise"]
    assert "not resolved with n = 140 items" in v.sentences.what_happened
    change = c.ledger.loss_change
    needed = int(np.ceil(140 * ((change.estimate - change.low) / change.estimate) ** 2))
    assert needed > 140 and f"roughly {needed} items would resolve" in v.sentences.what_happened
    assert _finding(diagnosis, FindingKind.NOISE).evidence["items_to_resolve"] == needed
    assert "any of the candidate checkpoints" not in json.dumps(verdict_to_json(v)).lower()


def test_no_rise_when_the_loss_is_still_falling():
    diagnosis = falling()
    v = diagnosis.verdict
    assert v.status is Status.NO_RISE and v.primary_cause is None and diagnosis.findings == ()
    assert "still falling" in v.sentences.what_happened and "Nothing to fix" in v.sentences.what_to_try


def test_any_pair_of_epochs_on_request(overconfident):
    analysis = analysis_of(*overconfident_run())
    later = diagnose(analysis, from_index=3, to_index=5)           # scale 2 -> 4: all calibration
    assert later.comparison.from_epoch == 4 and later.comparison.to_epoch == 6
    assert later.verdict.primary_cause is Cause.CALIBRATION
    backwards = diagnose(analysis, from_index=5, to_index=3)       # the loss fell: no rise
    assert backwards.verdict.status is Status.NO_RISE


# ----------------------------------------------------------------------------- thresholds change decisions
def test_thresholds_are_read_from_the_config():
    assert diagnose(analysis_of(*overconfident_run()), DiagnosisConfig(min_last_temperature=10.0)).findings
    overconfident = diagnose(analysis_of(*overconfident_run()), DiagnosisConfig(min_last_temperature=10.0))
    assert FindingKind.OVERCONFIDENCE.value not in _ids(overconfident)   # T 4x is below 10
    labels, records, _ = validation_label_noise_run()
    strict = diagnose(analysis_of(labels, records), DiagnosisConfig(min_miss_ratio=50.0))
    assert strict.verdict.primary_cause is not Cause.VALIDATION_LABELS  # no class has 50x the expected misses
    assert _finding(strict, FindingKind.PERSISTENT_ERRORS) is not None  # its candidates are then only to audit


# ----------------------------------------------------------------------------- findings: content and shape
def test_symptom_finding_fires_whether_accuracy_held_or_rose(overconfident, degrading):
    finding = _finding(overconfident, FindingKind.NLL_OVERFIT_ACCURACY_HOLDS)
    assert finding.severity is Severity.HIGH and finding.figure is FigureAnchor.CURVES
    assert finding.evidence["loss_change_ci_low"] > 0 and finding.evidence["accuracy_change_ci_high"] >= 0
    assert _finding(degrading, FindingKind.NLL_OVERFIT_ACCURACY_HOLDS) is None    # accuracy fell beyond its CI
    rising = weighted_rise()          # every item stays right: accuracy held exactly
    assert _finding(rising, FindingKind.NLL_OVERFIT_ACCURACY_HOLDS).title.endswith("while accuracy held")


def test_mechanism_findings(overconfident):
    confident = _finding(overconfident, FindingKind.CONFIDENT_ERRORS_DOMINATE)
    assert confident.evidence["wrong_share"] >= 0.5 and confident.figure is FigureAnchor.DECOMPOSITION
    logits = _finding(overconfident, FindingKind.LOGIT_GROWTH)
    assert logits.evidence["norm_growth"] == pytest.approx(1.0, rel=1e-6)      # scale 2 -> 4
    assert logits.evidence["flip_rate_after"] < logits.evidence["flip_rate_before"]
    concentration = _finding(weighted_rise(), FindingKind.CLASS_CONCENTRATION)
    assert concentration.classes == ("c3",) and concentration.evidence["class_share"] > 1.0


def test_every_kind_fires_somewhere(overconfident, degrading, label_noise):
    runs = [overconfident, degrading, label_noise[0], weighted_rise(), collapsing_class(), learned_pair(),
            small_noisy_rise()]
    fired = {f.id for run in runs for f in run.findings}
    # logged_loss_mismatch reads a training log: tests/test_report_train_log.py covers it; the training-side
    # findings read a training subset or train-mode passes: tests/test_diagnose_training.py covers them; the
    # rise after an LR event reads the checkpoints' training setup: tests/test_diagnose_lr_events.py
    training_side = {FindingKind.CLASS_UNDERREPRESENTED, FindingKind.MEMORISED_TRAINING_LABELS,
                     FindingKind.TRAIN_VALIDATION_LEAKAGE, FindingKind.BATCHNORM_STATISTICS,
                     FindingKind.RISE_AFTER_LR_EVENT}
    assert fired == {kind.value for kind in FindingKind} - {FindingKind.LOGGED_LOSS_MISMATCH.value} \
        - {kind.value for kind in training_side}
    assert {rule.__name__ for rule in rules.RULES} == fired | {kind.value for kind in training_side}


def test_findings_are_ranked_and_print_each_threshold_beside_its_number(overconfident, degrading, label_noise):
    for diagnosis in (overconfident, degrading, label_noise[0], weighted_rise(), collapsing_class(), learned_pair()):
        order = [(rules.SEVERITY_ORDER[f.severity], -f.score) for f in diagnosis.findings]
        assert order == sorted(order)
        for f in diagnosis.findings:
            assert set(f.thresholds) <= set(f.evidence), f.id
            assert isinstance(f.figure, FigureAnchor) and f.next_steps and f.title and f.summary
            document = json.dumps(finding_to_json(f), allow_nan=False)
            assert json.loads(document)["item_ids"] == list(f.item_ids)


def test_verdict_json_has_the_contract_shape(overconfident, label_noise):
    for diagnosis in (overconfident, label_noise[0], small_noisy_rise(), falling()):
        document = json.loads(json.dumps(verdict_to_json(diagnosis.verdict), allow_nan=False))
        assert set(document) == {"status", "primary_cause", "contributing_causes", "classes", "item_ids",
                                 "cause_shares", "training_events", "sentences"}
        assert document["training_events"] == []          # these runs record no learning rate
        assert document["status"] in {"rise", "no_rise", "unresolved"}
        assert set(document["sentences"]) == {"what_happened", "model_or_else", "what_to_try"}
        for share in document["cause_shares"].values():
            assert share["low"] <= share["estimate"] <= share["high"]
        if document["primary_cause"] is not None:
            assert document["status"] == "rise"
            assert document["cause_shares"][document["primary_cause"]]["low"] > 0


def test_finding_json_writes_non_finite_numbers_as_null():
    finding = Finding(id="x", severity=Severity.LOW, score=0.0, title="t", summary="s",
                      evidence={"a": float("nan"), "b": 1.5}, thresholds={"a": float("inf")})
    document = finding_to_json(finding)
    assert document["evidence"] == {"a": None, "b": 1.5} and document["thresholds"] == {"a": None}
