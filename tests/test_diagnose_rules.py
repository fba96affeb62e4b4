"""Every finding on a constructed run where it must fire and one where it must not; ranking, JSON and verdict."""
import json

import numpy as np
import pytest

from _diagnosis_runs import analysis_of, degrading_run, make_records, overconfident_run
from postmortem.diagnose import DiagnosisConfig, Finding, FindingKind, Severity, diagnose, finding_to_json, verdict
from postmortem.diagnose import rules

FIGURES = {"fig-curves", "fig-decomposition", "fig-loss-shares", "fig-calibration", "fig-reliability", "fig-logits",
           "fig-flow", "fig-confident-errors", "fig-confidence", "fig-confusion"}
CONFIG = DiagnosisConfig()


# ----------------------------------------------------------------------------- constructed runs
@pytest.fixture(scope="module")
def overconfident():
    """Logits scaled up 1x..4x after two noisy epochs: decisions fixed, confidence and loss grow."""
    return analysis_of(*overconfident_run())


@pytest.fixture(scope="module")
def degrading():
    """Logits lose signal after epoch 2: accuracy, macro F1 and the post-scaling loss all get worse."""
    return analysis_of(*degrading_run())


def _base_nll(n, seed=0):
    return np.random.default_rng(seed).uniform(0.05, 0.15, n)


def constant_shift(labels=None, weights=None):
    """Every item stays correct and its loss rises by 0.2: a rise spread evenly over classes, in correct items."""
    labels = np.arange(400) % 4 if labels is None else labels
    nll = _base_nll(len(labels))
    return analysis_of(labels, [make_records(labels, labels, nll, class_weights=weights),
                                make_records(labels, labels, nll + 0.2, class_weights=weights)], weights)


def one_class_rises(labels, rising_class, weights=None):
    """Items stay correct; only `rising_class` items lose confidence (nll up by 0.5..1.5)."""
    nll = _base_nll(len(labels))
    rise = np.where(labels == rising_class, np.random.default_rng(1).uniform(0.5, 1.5, len(labels)), 0.0)
    return analysis_of(labels, [make_records(labels, labels, nll, class_weights=weights),
                                make_records(labels, labels, nll + rise, class_weights=weights)], weights)


RARE_LABELS = np.r_[np.arange(300) % 3, np.full(20, 3)]     # 100 items each of classes 0-2, 20 of class 3
RARE_WEIGHTS = np.array([1.0, 1.0, 1.0, 10.0])                # pi_3 = 200 / 500 = 0.4 vs n_3 / N = 0.0625


def persistent_errors(wrong_epochs: list[bool]):
    """100 items, 2 classes; items 0-4 predicted as the other class with confidence 0.97 where flagged."""
    labels = np.arange(100) % 2
    epochs = []
    for wrong in wrong_epochs:
        pred, nll = labels.copy(), np.full(100, 0.1)
        if wrong:
            pred[:5], nll[:5] = 1 - labels[:5], -np.log(0.03)
        epochs.append(make_records(labels, pred, nll))
    return analysis_of(labels, epochs)


def noisy_pair():
    """Two epochs whose differences are zero-mean noise: a few items flip each way, nll jitters by ~0.1."""
    rng = np.random.default_rng(5)
    labels = np.arange(400) % 2
    nll = rng.uniform(0.5, 1.0, 400)
    jitter = rng.normal(scale=0.1, size=400)
    before, after = labels.copy(), labels.copy()
    before[:10], after[5:15] = 1 - labels[:10], 1 - labels[5:15]
    return analysis_of(labels, [make_records(labels, before, nll),
                                make_records(labels, after, nll + jitter - jitter.mean() + 0.001)])


def _fires(rule, analysis, config=CONFIG) -> Finding | None:
    finding = rule(analysis, config)
    if finding is not None:
        assert finding.id == rule.__name__
    return finding


# ----------------------------------------------------------------------------- one test pair per finding
def test_nll_overfit_accuracy_holds(overconfident, degrading):
    finding = _fires(rules.nll_overfit_accuracy_holds, overconfident)
    assert finding.severity is Severity.HIGH and finding.figure == "fig-curves"
    assert finding.evidence["best_loss_epoch"] < finding.evidence["best_accuracy_epoch"]
    assert finding.evidence["loss_change_ci_low"] > 0 and finding.evidence["accuracy_change_ci_high"] >= 0
    assert _fires(rules.nll_overfit_accuracy_holds, degrading) is None           # accuracy fell beyond its CI
    labels = np.arange(400) % 4
    falling = analysis_of(labels, [make_records(labels, labels, nll) for nll in (_base_nll(400) + 0.2, _base_nll(400))])
    assert falling.best_loss_index == 1
    assert _fires(rules.nll_overfit_accuracy_holds, falling) is None             # loss still falling


def test_overconfidence(overconfident, degrading):
    finding = _fires(rules.overconfidence, overconfident)
    assert finding.evidence["calibration_share"] > 0.9                # the scaled loss did not move
    assert finding.evidence["temperature_last"] > 1.5 and finding.evidence["ece_rise"] > 0.05
    assert finding.figure == "fig-calibration"
    assert _fires(rules.overconfidence, degrading) is None                       # the scaled loss rose too
    assert _fires(rules.overconfidence, overconfident, DiagnosisConfig(min_last_temperature=10.0)) is None


def test_confident_errors_dominate(overconfident):
    finding = _fires(rules.confident_errors_dominate, overconfident)
    assert finding.evidence["wrong_share"] >= 0.5 and finding.figure == "fig-decomposition"
    assert finding.item_ids == tuple(e.id for e in overconfident.confident_errors)
    assert _fires(rules.confident_errors_dominate, constant_shift()) is None    # all of the rise in correct items


def test_class_concentration():
    labels = np.arange(400) % 4
    finding = _fires(rules.class_concentration, one_class_rises(labels, 3))
    # class 3 holds 25% of the items and all of the rise: ratio 4 >= 2
    assert finding.classes == ("c3",) and finding.evidence["class_share"] == pytest.approx(1.0)
    assert finding.evidence["concentration_ratio"] == pytest.approx(4.0)
    assert finding.evidence["recall_last_c3"] == 1.0
    assert _fires(rules.class_concentration, constant_shift()) is None           # 25% per class: ratio 1


def test_class_weight_amplification():
    finding = _fires(rules.class_weight_amplification, one_class_rises(RARE_LABELS, 3, RARE_WEIGHTS))
    assert finding.classes == ("c3",) and finding.figure == "fig-loss-shares"
    assert finding.evidence["weight_share"] == pytest.approx(0.4) and finding.evidence["frequency_share"] == 0.0625
    assert finding.evidence["min_amplification"] == pytest.approx(6.4)
    # constant shift: dL = 0.2 and class 3 carries its weight share, 10 * 20 * 0.2 / 500 = 0.08 -> 40% < 50%
    assert _fires(rules.class_weight_amplification, constant_shift(RARE_LABELS, RARE_WEIGHTS)) is None
    assert _fires(rules.class_weight_amplification, one_class_rises(RARE_LABELS, 3)) is None   # no weights


def test_class_weight_amplification_unweighted_change_by_hand():
    labels = RARE_LABELS
    nll = np.full(len(labels), 0.2)
    analysis = analysis_of(labels, [make_records(labels, labels, nll, class_weights=RARE_WEIGHTS),
                                    make_records(labels, labels, nll + (labels == 3), class_weights=RARE_WEIGHTS)],
                           RARE_WEIGHTS)
    finding = _fires(rules.class_weight_amplification, analysis)
    # weighted: 10 * 20 * 1 / 500 = 0.4; unweighted: 20 * 1 / 320 = 0.0625
    assert analysis.decomposition.loss_change == pytest.approx(0.4)
    assert finding.evidence["unweighted_loss_change"] == pytest.approx(0.0625)


def test_logit_growth(overconfident):
    finding = _fires(rules.logit_growth, overconfident)
    assert finding.evidence["norm_growth"] == pytest.approx(1.0, rel=1e-6)      # scale 2 -> 4
    assert finding.evidence["flip_rate_after"] < finding.evidence["flip_rate_before"]
    assert finding.figure == "fig-logits" and finding.severity is Severity.LOW
    assert _fires(rules.logit_growth, constant_shift()) is None                  # norms constant


def test_logit_growth_needs_flips_to_fall():
    labels = np.arange(100) % 2
    preds = [labels, labels, np.where(np.arange(100) < 20, 1 - labels, labels), labels]
    nll = [0.5, 0.3, 0.6, 0.7]
    analysis = analysis_of(labels, [make_records(labels, p, np.full(100, n), logit_norm=np.full(100, s),
                                                 margin=np.full(100, s))
                                    for p, n, s in zip(preds, nll, (1.0, 1.0, 2.0, 3.0))])
    # best epoch 2; flips 0% before it, 20% and 20% after: norms and margins triple but flips rose
    assert analysis.best_loss_index == 1
    assert _fires(rules.logit_growth, analysis) is None


def test_suspect_labels():
    finding = _fires(rules.suspect_labels, persistent_errors([True, True, True]))
    assert finding.item_ids == ("0", "1", "2", "3", "4") and finding.figure == "fig-confident-errors"
    # their loss share at the last epoch: 5 * ln(1/0.03) / (5 * ln(1/0.03) + 95 * 0.1) = 17.53 / 27.03
    assert finding.evidence["suspect_loss_share"] == pytest.approx(5 * np.log(1 / 0.03) / (5 * np.log(1 / 0.03) + 9.5))
    assert finding.evidence["last_loss_without_suspects"] == pytest.approx(0.1)
    assert finding.severity is Severity.MEDIUM
    assert _fires(rules.suspect_labels, persistent_errors([False, False, True])) is None   # right 2 of 3 epochs
    assert _fires(rules.suspect_labels, persistent_errors([True, True])) is None           # too few epochs


def test_genuine_degradation(degrading, overconfident):
    finding = _fires(rules.genuine_degradation, degrading)
    assert finding.evidence["scaled_loss_rise"] > 1 and finding.evidence["macro_f1_change_ci_high"] < 0
    assert finding.severity is Severity.HIGH
    assert _fires(rules.genuine_degradation, overconfident) is None              # scaled loss flat, F1 unchanged


def test_noise(overconfident):
    analysis = noisy_pair()
    finding = _fires(rules.noise, analysis)
    assert finding.evidence["loss_change_ci_low"] < 0 < finding.evidence["loss_change_ci_high"]
    assert finding.figure == "fig-curves"
    assert [f.id for f in diagnose(analysis)] == ["noise"]
    assert _fires(rules.noise, overconfident) is None                             # loss CI excludes 0


# ----------------------------------------------------------------------------- properties of all findings
def test_every_kind_fires_somewhere(overconfident, degrading):
    runs = [overconfident, degrading, noisy_pair(), one_class_rises(RARE_LABELS, 3, RARE_WEIGHTS),
            persistent_errors([True, True, True])]
    fired = {f.id for run in runs for f in diagnose(run)}
    # logged_loss_mismatch reads a training log, not the analysis: tests/test_report_train_log.py covers it
    assert fired == {kind.value for kind in FindingKind} - {FindingKind.LOGGED_LOSS_MISMATCH.value}
    assert {rule.__name__ for rule in rules.RULES} == fired


def test_findings_are_ranked_and_complete(overconfident, degrading):
    for analysis in (overconfident, degrading):
        findings = diagnose(analysis)
        order = [(rules.SEVERITY_ORDER[f.severity], -f.score) for f in findings]
        assert order == sorted(order)
        for f in findings:
            assert set(f.thresholds) <= set(f.evidence), f.id    # each threshold printed beside its number
            assert f.figure in FIGURES and f.next_steps and f.title and f.summary
            document = json.dumps(finding_to_json(f), allow_nan=False)
            assert json.loads(document)["item_ids"] == list(f.item_ids)


def test_finding_json_writes_non_finite_numbers_as_null():
    finding = Finding(id="x", severity=Severity.LOW, score=0.0, title="t", summary="s",
                      evidence={"a": float("nan"), "b": 1.5}, thresholds={"a": float("inf")})
    document = finding_to_json(finding)
    assert document["evidence"] == {"a": None, "b": 1.5} and document["thresholds"] == {"a": None}


def test_verdict_answers_the_three_questions_citing_findings(overconfident):
    findings = diagnose(overconfident)
    answers = verdict(overconfident, findings)
    assert [a.question for a in answers] == ["What happened?", "Is it the model or something else?", "What to try?"]
    by_id = {f.id: f for f in findings}
    for answer in answers[:2]:
        assert answer.cites and all(f"“{by_id[c].title}”" in answer.text for c in answer.cites)
    assert answers[2].cites and all(by_id[c].next_steps[0] in answers[2].text for c in answers[2].cites)
    assert "nll_overfit_accuracy_holds" in answers[0].cites
    assert answers[1].cites[0] == "overconfidence" and "No sign of genuine degradation" in answers[1].text
    assert "Temperature-scale" in answers[2].text


def test_verdict_without_findings_and_for_a_falling_loss():
    labels = np.arange(400) % 4
    falling = analysis_of(labels, [make_records(labels, labels, nll) for nll in (_base_nll(400) + 0.2, _base_nll(400))])
    answers = verdict(falling, [])
    assert "still falling" in answers[0].text and "No rule fired" in answers[1].text
    assert all(a.cites == () for a in answers)
